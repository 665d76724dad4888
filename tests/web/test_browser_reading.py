"""Reading the admin UI (issue 17, items 5, 6 and 8) in a real browser: long values
neither widen the page nor wrap unreadably, at a desktop and a phone width."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import Engine

from connector import admins
from connector.db import make_sessionmaker
from tests.support.app import LiveServer
from tests.support.clients import PASSWORD, ScimClient
from tests.web.conftest import make_web_admin, scim_user
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LONG_NAME = ("Maximiliane-Josephine " * 12)[:250]
LONG_LOGIN = "a.very.long.user.name.that.goes.on.and.on." * 4 + "x@northwind.example"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def signed_in_page(browser: Browser, live_server: LiveServer, engine: Engine,
                   width: int) -> Page:
    context = browser.new_context(base_url=live_server.url,
                                  viewport={"width": width, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    email = f"reader{width}@partner.example"
    make_web_admin(engine, email)
    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    return page


def document_width(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


@pytest.mark.parametrize("width", [1280, 390])
def test_long_values_keep_the_pages_within_the_window(
        browser: Browser, app: Flask, engine: Engine, live_server: LiveServer,
        width: int) -> None:
    scim = ScimClient(app.test_client(), live_server.token, live_server.tenant_id)
    for n in range(3):
        scim_user(scim, f"Anna{n}", "Berg")
    body = scim.post("/Users", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": LONG_LOGIN,
        "displayName": LONG_NAME, "name": {"givenName": LONG_NAME[:100],
                                           "familyName": LONG_NAME[100:200]},
        "emails": [{"value": LONG_LOGIN, "primary": True}]}).json
    long_id = body["id"]
    with make_sessionmaker(engine)() as s:
        admins.audit(s, at=dt.datetime.now(dt.UTC), actor="admin:reader@partner.example",
                     action="user.status", correlation_id="test",
                     tenant_id=live_server.tenant_id, target=long_id,
                     detail={"displayName": LONG_NAME, "modules": ["Hybrid", "Engage"],
                             "reason": "a reason " * 20})
        s.commit()
    page = signed_in_page(browser, live_server, engine, width)
    tenant = f"/admin/tenants/{live_server.tenant_id}"
    for path in (f"{tenant}/users", f"{tenant}/audit", "/admin/audit",
                 f"{tenant}/users/{long_id}"):
        page.goto(path)
        assert document_width(page) <= width, (path, document_width(page))
    page.goto(f"{tenant}/users")
    cell = page.locator("table.users tbody tr", has_text="Maximiliane").locator("td").first
    assert cell.locator("[title]").first.get_attribute("title") == LONG_NAME
    # the audit detail reads as JSON lines, not a column a few characters wide
    page.goto(f"{tenant}/audit")
    detail = page.locator("table.audit pre").first
    assert '"modules"' in detail.inner_text()
    assert detail.bounding_box()["width"] >= min(240, width * 0.5)  # type: ignore[index]
    page.context.close()
