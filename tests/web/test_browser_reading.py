"""Reading the admin UI (issue 17, items 5, 6 and 8) in a real browser: long values
neither widen the page nor wrap unreadably, at a desktop and a phone width."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import Engine

from billing.calendar import Month
from billing.close import close_month
from connector import admins
from connector.config import BillingSettings
from connector.db import make_sessionmaker
from tests.billing.history import History, at
from tests.support.app import LiveServer
from tests.support.clients import PASSWORD, ScimClient
from tests.web.conftest import make_web_admin, scim_user
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.web.test_browser_billing import set_created

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


def overflowing(page: Page) -> list[str]:
    """The first elements reaching past the window's right edge (for a failure message)."""
    return list(page.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
        .slice(0, 8).map(e => e.tagName + '.' + e.className + ' '
                         + Math.round(e.getBoundingClientRect().right))"""))


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
                 f"{tenant}/users/{long_id}", f"{tenant}/deleted-users", f"{tenant}/groups",
                 f"{tenant}/provisioning-log", f"{tenant}/billing", f"{tenant}/entra",
                 f"{tenant}/settings", "/admin/tenants", "/admin/notifications"):
        page.goto(path)
        assert document_width(page) <= width, (path, document_width(page), overflowing(page))
    page.goto(f"{tenant}/users")
    cell = page.locator("table.users tbody tr", has_text="Maximiliane").locator("td").first
    assert cell.locator("[title]").first.get_attribute("title") == LONG_NAME
    # the audit detail reads as JSON lines, not a column a few characters wide
    page.goto(f"{tenant}/audit")
    detail = page.locator("table.audit pre").first
    assert '"modules"' in detail.inner_text()
    assert detail.bounding_box()["width"] >= min(240, width * 0.5)  # type: ignore[index]
    page.context.close()


def test_billing_says_no_prices_are_set_and_the_chart_has_axes_and_months(
        browser: Browser, engine: Engine, live_server: LiveServer) -> None:
    h = History(engine, tenant_id=live_server.tenant_id)
    set_created(engine, live_server.tenant_id, "2026-09-01T00:00:00")
    ids = [h.create("2026-09-02T10:00:00", f"p{n}@fabrikam.example", modules=("Hybrid",))
           for n in range(5)]
    h.set_active("2026-10-20T10:00:00", ids[0], False)
    # deleted this month: still counted for it, no longer on the users list
    h.remove((dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S"),
             ids[1])
    page = signed_in_page(browser, live_server, engine, 1280)
    url = f"/admin/tenants/{live_server.tenant_id}/billing"
    page.goto(url)
    estimate = page.locator("#preview-estimate")
    expect(estimate).to_contain_text("No prices set")
    expect(estimate).not_to_contain_text("USD 0.00")
    page.get_by_text("How these numbers relate to the users list").click()
    explained = page.locator("#counts-explained")
    expect(explained).to_contain_text("Users counted (5) is every account")
    expect(explained).to_contain_text("shows the 4 that exist now")
    expect(explained).to_contain_text("Billable (3)")
    estimate.get_by_role("link", name="Set the prices in the billing info below").click()
    page.get_by_label("Prices in USD, excl. tax").fill("Hybrid, standard, 6.50")
    page.get_by_role("button", name="Save billing info").click()
    expect(page.get_by_role("status").filter(has_text="Billing info saved")).to_be_visible()
    page.reload()  # post/redirect/get: a reload repeats nothing
    expect(page.locator("#preview-estimate")).to_contain_text("USD 19.50")
    expect(page.locator("#preview-estimate")).not_to_contain_text("No prices set")

    for month, closed_at in ((Month(2026, 10), "2026-11-01T01:05:00"),
                             (Month(2026, 11), "2026-12-01T01:05:00")):
        close_month(h.maker, live_server.tenant_id, month, BillingSettings(), at(closed_at))
    page.reload()
    chart = page.locator("#history-chart")
    months = chart.locator("text.month").all_text_contents()
    assert months == ["Oct 2026", "Nov 2026"]
    assert chart.locator("text.value").all_text_contents() == ["4", "4"]
    users_axis = chart.locator(".grid text.axis:not(.amount)").all_text_contents()
    usd_axis = chart.locator(".grid text.amount").all_text_contents()
    assert (users_axis, usd_axis) == (["0", "1", "2", "3", "4"], ["0", "10", "20", "30", "40"])
    assert document_width(page) <= 1280
    page.context.close()


def test_the_users_page_finds_family_names_domains_and_accent_free_spellings(
        browser: Browser, app: Flask, engine: Engine, live_server: LiveServer) -> None:
    scim = ScimClient(app.test_client(), live_server.token, live_server.tenant_id)
    scim_user(scim, "Jiří", "Dvořák")
    scim_user(scim, "Søren", "Nørgaard")
    scim_user(scim, "Anna", "Berg")
    page = signed_in_page(browser, live_server, engine, 1280)
    page.goto(f"/admin/tenants/{live_server.tenant_id}/users")
    rows = page.locator("table.users tbody tr")
    for q, found in (("Dvořák", ["Jiří Dvořák"]), ("jiri", ["Jiří Dvořák"]),
                     ("soren norgaard", ["Søren Nørgaard"]),
                     ("northwind.example", ["Anna Berg", "Jiří Dvořák", "Søren Nørgaard"])):
        page.get_by_role("searchbox", name="Search").fill(q)
        page.get_by_role("button", name="Search").click()
        expect(rows).to_have_count(len(found))
        assert sorted(rows.locator("td:nth-child(2)").all_inner_texts()) == found, q
    page.get_by_role("searchbox", name="Search").fill("nobody-here")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_text(["No users match the search."])
    page.context.close()
