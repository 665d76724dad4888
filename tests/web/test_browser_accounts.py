"""Admin accounts in a real browser (issue 17): a partner admin invites an admin (the
one-time password shown once; reloading neither re-creates nor re-shows it), the new
admin signs in with it once, chooses a password, sets up two-factor sign-in from the QR
code's key, signs out (a copy of the cookie then opens nothing) and signs in with a code;
the partner resets the second factor. The page is reloaded after every POST (SQLite and
PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import re

import pyotp
import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import Engine

from connector import clock
from tests.support.app import LiveServer
from tests.support.clients import PASSWORD
from tests.web.conftest import make_web_admin, rename_tenant
from tests.web.test_browser import browser, page, screenshot  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser]
NEW = "plum orbit canvas 42 lantern"


def sign_in(tab: Page, email: str, password: str) -> None:
    tab.goto("/admin/sign-in")
    tab.get_by_label("E-mail").fill(email)
    tab.get_by_label("Password").fill(password)
    tab.get_by_role("button", name="Sign in").click()


def test_invite_first_sign_in_two_factor_and_reset(
        page: Page, browser: Browser, app: Flask, engine: Engine,  # noqa: F811
        live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    rename_tenant(engine, live_server.tenant_id, "Northwind Traders")
    make_web_admin(engine, "maria.jansen@partner.example")
    sign_in(page, "maria.jansen@partner.example", PASSWORD)
    page.get_by_role("link", name="Admin accounts").click()
    expect(page.get_by_role("heading", name="Admin accounts", level=1)).to_be_visible()
    page.get_by_label("E-mail").fill("kees.visser@northwind.example")
    page.get_by_label("Role").select_option("tenant")
    page.get_by_label("Tenant (for a tenant admin)").select_option(label="Northwind Traders")
    page.get_by_role("button", name="Invite").click()
    expect(page.get_by_role("heading", name=re.compile("Invitation for kees"))).to_be_visible()
    one_time = page.get_by_label("One-time password").input_value()
    assert len(one_time) >= 12
    page.reload()  # shows it no more, and invites nobody again
    expect(page.get_by_text("shown once and is not kept")).to_be_visible()
    page.goto("/admin/admins")
    rows = page.locator("#admin-accounts tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="kees.visser")).to_contain_text("invited")
    screenshot(page, "admin-accounts", database_url)

    other = browser.new_context(base_url=live_server.url)
    kees = other.new_page()
    sign_in(kees, "kees.visser@northwind.example", one_time)
    expect(kees.get_by_role("heading", name="Change your password")).to_be_visible()
    expect(kees.get_by_label("Current password")).to_have_count(0)
    kees.get_by_label("New password", exact=True).fill("password1234")
    kees.get_by_label("New password again").fill("password1234")
    kees.get_by_role("button", name="Change password").click()
    # Said next to the field (and announced), above it what to do.
    expect(kees.locator("#new_password-error")).to_contain_text("too easy to guess")
    kees.reload()
    kees.get_by_label("New password", exact=True).fill(NEW)
    kees.get_by_label("New password again").fill(NEW)
    kees.get_by_role("button", name="Change password").click()
    expect(kees.get_by_role("status").filter(has_text="password is changed")).to_be_visible()
    kees.reload()
    expect(kees.get_by_role("heading", name="Users", level=1)).to_be_visible()

    kees.get_by_role("link", name=re.compile("^Account")).click()
    kees.get_by_role("link", name="Set up two-factor sign-in").click()
    kees.get_by_role("button", name="Set up two-factor sign-in").click()
    expect(kees.get_by_role("img", name=re.compile("QR code"))).to_be_visible()
    kees.reload()
    screenshot(kees, "two-factor", database_url)
    secret = kees.get_by_label("Key").input_value()
    totp = pyotp.TOTP(secret)
    kees.get_by_label("Code the app shows now").fill(totp.now())
    kees.get_by_role("button", name="Turn two-factor sign-in on").click()
    expect(kees.get_by_role("heading", name="Two-factor sign-in is on")).to_be_visible()
    codes = kees.locator("#codes li")
    expect(codes).to_have_count(10)
    kees.reload()
    expect(kees.locator("#codes li")).to_have_count(0)

    cookie = next(c for c in other.cookies() if c["name"] == "connector_session")
    kees.get_by_role("button", name="Sign out").click()
    expect(kees.get_by_role("heading", name="Sign in")).to_be_visible()
    kees.reload()
    thief = browser.new_context(base_url=live_server.url)
    thief.add_cookies([cookie])
    stolen = thief.new_page()
    stolen.goto("/admin/account")
    expect(stolen).to_have_url(re.compile(r"/admin/sign-in"))
    thief.close()

    # The next step's code: the one used to turn it on does not sign in again.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    monkeypatch.setattr(clock, "now", lambda: later)
    sign_in(kees, "kees.visser@northwind.example", NEW)
    expect(kees.get_by_role("heading", name="Sign in: code")).to_be_visible()
    kees.get_by_label("Code").fill("000000" if totp.at(later) != "000000" else "111111")
    kees.get_by_role("button", name="Sign in").click()
    expect(kees.get_by_role("alert")).to_contain_text("code is not right")
    kees.reload()
    kees.get_by_label("Code").fill(totp.at(later))
    kees.get_by_role("button", name="Sign in").click()
    expect(kees.get_by_role("heading", name="Users", level=1)).to_be_visible()

    page.reload()
    row = page.locator("#admin-accounts tbody tr").filter(has_text="kees.visser")
    expect(row).to_contain_text("on")
    row.get_by_role("button", name=re.compile("Reset two-factor")).click()
    expect(page.get_by_role("status").filter(has_text="is off")).to_be_visible()
    page.reload()
    kees.reload()
    expect(kees).to_have_url(re.compile(r"/admin/sign-in"))
    other.close()
