"""The admin UI in a real browser: Playwright drives Debian's chromium against the app on
a loopback server (SQLite and PostgreSQL).

With CONNECTOR_SCREENSHOTS=1 the walk-through also saves a screenshot of each main page
to docs/screenshots/ (once, on the SQLite run), for the README. CI leaves it unset, so
the tree stays clean.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import Engine

from tests.support.app import LiveServer
from tests.support.clients import PASSWORD, ScimClient, make_tenant
from tests.web.conftest import make_web_admin, rename_tenant, seed_directory

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One chromium for the whole module (starting it is the slow part)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run tests/ensure_services.py (make test does).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, accept_downloads=True,
                                  viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(10_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    yield page
    context.close()
    assert problems == []  # no script errors, no Content-Security-Policy violations


def screenshot(page: Page, name: str, database_url: str, full_page: bool = True) -> None:
    if os.environ.get("CONNECTOR_SCREENSHOTS") == "1" and database_url.startswith("sqlite"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=full_page)


def test_an_admin_corrects_users_while_provisioning_is_paused(
        page: Page, app: Flask, engine: Engine, live_server: LiveServer,
        database_url: str) -> None:
    tenant_id = live_server.tenant_id
    rename_tenant(engine, tenant_id, "Northwind Traders")
    make_tenant(engine, "Contoso Health")
    seed_directory(ScimClient(app.test_client(), live_server.token, tenant_id))
    make_web_admin(engine, "maria.jansen@partner.example")

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/admin/sign-in"))
    expect(page.get_by_label("E-mail")).to_be_focused()
    screenshot(page, "sign-in", database_url)
    page.get_by_label("E-mail").fill("maria.jansen@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tenants", level=1)).to_be_visible()
    screenshot(page, "tenants", database_url)
    page.keyboard.press("Tab")  # the keyboard's first stop skips the navigation
    expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()

    page.get_by_role("link", name="Northwind Traders").click()
    expect(page.get_by_role("heading", name="Users", level=1)).to_be_visible()
    expect(page.get_by_text("25 users")).to_be_visible()
    screenshot(page, "users", database_url, full_page=False)

    # The rules refuse a change to a provisioned user while provisioning runs...
    page.get_by_role("link", name="amira.devries@northwind.example").click()
    page.get_by_role("button", name="Set inactive").click()
    refusal = page.get_by_role("alert")
    expect(refusal).to_contain_text("pause provisioning first")
    expect(refusal).to_be_focused()
    # ...and lead to the setting that allows it.
    refusal.get_by_role("link", name="Pause provisioning in the settings").click()
    expect(page).to_have_url(re.compile(r"/settings#provisioning_paused$"))
    page.get_by_role("button", name="Pause provisioning").click()
    banner = page.get_by_role("region", name="Provisioning is paused")
    expect(banner).to_be_visible()
    page.get_by_label("Manage active status from the connector").check()
    page.get_by_role("button", name="Save status source").click()
    expect(page.get_by_role("status").filter(has_text="managed from the connector")
           ).to_be_visible()
    expect(page.get_by_label("Manage active status from the connector")).to_be_checked()
    screenshot(page, "settings", database_url)

    nav = page.get_by_role("navigation", name="Tenant Northwind Traders")
    nav.get_by_role("link", name="Users", exact=True).click()
    page.get_by_role("searchbox", name="Search").fill("amira.d")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("1 user matches")).to_be_visible()
    page.get_by_role("link", name="amira.devries@northwind.example").click()
    page.get_by_role("button", name="Set inactive").click()
    expect(page.get_by_role("status").filter(has_text="is now inactive")).to_be_visible()
    expect(page.get_by_role("button", name="Set active")).to_be_visible()
    screenshot(page, "user-detail", database_url)

    # The deleted-users list: the user the IdP disabled comes back.
    nav.get_by_role("link", name="Deleted users").click()
    expect(page.get_by_text("2 deleted users")).to_be_visible()
    screenshot(page, "deleted-users", database_url)
    page.get_by_role("button", name="Restore vera.disabled@northwind.example").click()
    expect(page.get_by_role("status").filter(has_text="is restored and active")).to_be_visible()
    expect(page.get_by_text("1 deleted user", exact=True)).to_be_visible()

    # A module for a whole group.
    nav.get_by_role("link", name="Groups").click()
    screenshot(page, "groups", database_url)
    page.get_by_role("link", name="Sales").click()
    page.get_by_label("Engage").check()
    page.get_by_role("button", name="Save modules").click()
    expect(page.get_by_role("status").filter(has_text="Modules of Sales saved")).to_be_visible()
    expect(page.get_by_label("Engage")).to_be_checked()
    screenshot(page, "group-detail", database_url)

    nav.get_by_role("link", name="Audit log", exact=True).click()
    for action in ("user.status", "user.restored", "group.modules", "tenant.settings"):
        expect(page.get_by_role("rowheader", name=action).first).to_be_visible()
    screenshot(page, "audit-log", database_url)

    # The CSV export says what the admin just did.
    nav.get_by_role("link", name="Users", exact=True).click()
    with page.expect_download() as info:
        page.get_by_role("link", name="Export all users as CSV").click()
    download = info.value
    assert download.suggested_filename.startswith("users-northwind-traders-")
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text("utf-8"))))
    assert len(rows) == 25
    row = next(r for r in rows if r["username"] == "amira.devries@northwind.example")
    assert (row["first name"], row["last name"], row["status"]) == ("Amira", "de Vries",
                                                                      "inactive")
    assert row["modules"] == "Engage;Hybrid" and row["guest"] == "false"
