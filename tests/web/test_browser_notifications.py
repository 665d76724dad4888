"""Notifications in a real browser: a standing condition shows as a notice in the header
and on the tenant's pages, lists on the notifications page, and an admin turns its
e-mails off on the Account page (post/redirect/get, kept after a reload)."""

from __future__ import annotations

import datetime as dt

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from connector import notify
from connector.db import make_sessionmaker
from tests.support.app import LiveServer
from tests.support.clients import PASSWORD
from tests.web.conftest import make_web_admin, rename_tenant
from tests.web.test_browser import browser, page  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_a_notice_shows_and_an_admin_opts_out_of_its_emails(
        page: Page, engine: Engine, live_server: LiveServer) -> None:  # noqa: F811
    tenant_id = live_server.tenant_id
    rename_tenant(engine, tenant_id, "Northwind <Traders>")
    now = dt.datetime.now(dt.UTC)
    with make_sessionmaker(engine)() as s:
        notify.raise_condition(s, tenant_id, "month_close_failed",
                               "Closing 2026-11 failed: <b>no price</b> for Hybrid", now,
                               "2026-11")
        notify.raise_condition(s, tenant_id, "scim_errors", "9 of 30 SCIM requests failed",
                               now)
        notify.clear_condition(s, tenant_id, "scim_errors", now)
        s.commit()
    make_web_admin(engine, "ta@northwind.example", "tenant", tenant_id)

    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("ta@northwind.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Users", level=1)).to_be_visible()

    # The tenant's pages carry the notice; the header counts it.
    banner = page.locator("#notice-banner")
    expect(banner).to_contain_text("Billing month close failed (2026-11)")
    expect(banner).to_contain_text("<b>no price</b>")  # shown as text, not markup
    expect(page.locator("#notice-count")).to_have_text("1 raised")

    page.get_by_role("link", name="Notifications").click()
    expect(page.get_by_role("heading", name="Notifications", level=1)).to_be_visible()
    rows = page.locator("#notifications tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("raised")
    expect(rows.nth(0)).to_contain_text("Northwind <Traders>")
    expect(rows.nth(1)).to_contain_text("cleared")
    expect(rows.nth(1)).to_contain_text("SCIM requests failing")

    page.get_by_role("link", name="choose what you are e-mailed about").click()
    page.get_by_label("Billing month close failed").check()
    page.get_by_role("button", name="Save e-mail preferences").click()
    expect(page.get_by_role("status")).to_contain_text("no e-mail about 1 kind")
    page.reload()
    expect(page.get_by_label("Billing month close failed")).to_be_checked()
    expect(page.get_by_label("Any notification")).not_to_be_checked()
    with make_sessionmaker(engine)() as s:
        [admin] = [a for a in notify.recipients(s, tenant_id, "month_close_failed")
                   if a.email == "ta@northwind.example"] or [None]
        assert admin is None  # opted out: no longer a recipient of that kind
        assert any(a.email == "ta@northwind.example"
                   for a in notify.recipients(s, tenant_id, "round_held"))
