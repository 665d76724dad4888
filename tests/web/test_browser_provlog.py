"""The provisioning log in a real browser: an admin opens the tab, filters to the
failures, opens one entry's detail, and follows the user page's link to that user's
entries (chromium through Playwright; SQLite and PostgreSQL)."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from tests.scim.factories import patch, user
from tests.support.app import LiveServer
from tests.support.clients import PASSWORD, ScimClient
from tests.web.conftest import make_web_admin, rename_tenant
from tests.web.test_browser import browser, page  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_an_admin_finds_why_a_scim_write_failed(page: Page, app: Flask,  # noqa: F811
                                                engine: Engine, live_server: LiveServer
                                                ) -> None:
    tenant_id = live_server.tenant_id
    rename_tenant(engine, tenant_id, "Northwind Traders")
    scim = ScimClient(app.test_client(), live_server.token, tenant_id,
                      {"User-Agent": "Okta SCIM 2.0"})
    ann = scim.post("/Users", user("ann@northwind.example")).json["id"]
    scim.post("/Users", user("bob@northwind.example"))
    scim.patch(f"/Users/{ann}", patch({"op": "replace", "path": "displayName",
                                       "value": "Ann Lee"}))
    assert scim.post("/Users", user("ANN@northwind.example")).status_code == 409
    make_web_admin(engine, "maria.jansen@partner.example")

    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("maria.jansen@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Northwind Traders").click()
    page.get_by_role("link", name="Provisioning log").click()
    expect(page.get_by_role("heading", name="Provisioning log", level=1)).to_be_visible()
    expect(page.get_by_text("4 entries")).to_be_visible()

    page.get_by_label("Result").select_option("failure")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"result=failure"))
    expect(page.get_by_text("1 entry")).to_be_visible()
    row = page.locator("table.provlog tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("ANN@northwind.example")
    expect(row).to_contain_text("uniqueness")
    row.get_by_role("link", name=re.compile("Details")).click()
    expect(page.get_by_role("heading", name="Create: failure", level=1)).to_be_visible()
    expect(page.get_by_text("POST /scim/v2/Users")).to_be_visible()
    expect(page.get_by_text("scim-token:Okta SCIM 2.0")).to_be_visible()

    page.goto(f"/admin/tenants/{tenant_id}/users/{ann}")
    page.get_by_role("link", name="This user’s entries in the provisioning log").click()
    expect(page.get_by_text("2 entries")).to_be_visible()
    page.locator("table.provlog tbody tr").first.get_by_role(
        "link", name=re.compile("Details")).click()
    expect(page.get_by_role("heading", name="Update: success", level=1)).to_be_visible()
    changed = page.locator("table.changes tbody tr", has_text="displayName")
    expect(changed).to_contain_text("Ann Lee")

    page.goto(f"/admin/tenants/{tenant_id}/provisioning-log?result=maybe")
    expect(page.get_by_role("alert")).to_contain_text("result must be one of")
    expect(page.get_by_text("4 entries")).to_be_visible()


def test_the_time_filter_is_in_utc_as_the_entries_are(
        page: Page, app: Flask, engine: Engine, live_server: LiveServer  # noqa: F811
) -> None:
    """The entries' times are UTC; the From and Until fields (datetime-local, no zone of
    their own) were read as UTC too but said nothing, so an admin in Amsterdam typed
    local time and filtered an hour off. The fields say so, and the export follows."""
    tenant_id = live_server.tenant_id
    rename_tenant(engine, tenant_id, "Northwind Traders")
    scim = ScimClient(app.test_client(), live_server.token, tenant_id)
    scim.post("/Users", user("ann@northwind.example"))
    make_web_admin(engine, "maria.jansen@partner.example")
    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("maria.jansen@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"/admin/tenants/{tenant_id}/provisioning-log")
    when = page.locator("table.provlog tbody tr").first.locator("td").first
    expect(when).to_contain_text("UTC")
    stamp = re.search(r"(\d{4}-\d\d-\d\d) (\d\d:\d\d) UTC", when.inner_text())
    assert stamp
    page.get_by_label("From (UTC)").fill(f"{stamp.group(1)}T{stamp.group(2)}")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("1 entry")).to_be_visible()
    export = page.get_by_role("link", name="Export as CSV")
    expect(export).to_have_attribute("href", re.compile(r"since="))
    minute_later = f"{stamp.group(1)}T{stamp.group(2)[:3]}{int(stamp.group(2)[3:]) + 1:02d}"
    if stamp.group(2)[3:] != "59":
        page.get_by_label("From (UTC)").fill(minute_later)
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_text("Nothing logged that matches these filters.")).to_be_visible()
    expect(page.get_by_label("Until (UTC)")).to_be_visible()
