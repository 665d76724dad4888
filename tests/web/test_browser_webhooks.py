"""Webhooks in a real browser: an admin adds an endpoint pointing at a receiver on
loopback, copies the secret shown once (a reload shows it no more and adds nothing),
sends a test ping, sees a delivery in the log and redelivers it, disables and enables
the endpoint; the pages keep to a desktop's and a phone's width (chromium through
Playwright; SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import Engine, func, select

from connector.config import Settings
from connector.db import make_sessionmaker
from connector.models import WebhookEndpoint
from connector.webhooks.dispatcher import Dispatcher
from tests.fakes.receiver import Receiver, verify
from tests.scim.factories import user
from tests.support.app import LiveServer
from tests.support.clients import PASSWORD, ScimClient
from tests.support.webhooks import receiving_settings
from tests.web.conftest import make_web_admin, rename_tenant
from tests.web.test_browser import browser, page  # noqa: F401
from tests.web.test_browser_reading import document_width, overflowing

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# A long URL, partly without a place to break it: cut in lists, wrapped where it is whole.
LONG_PATH = "/hooks/" + "a-rather-long-path-segment/" * 4 + "in?key=" + "k" * 120


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """A receiver on loopback is only reachable with private targets allowed."""
    return receiving_settings(database_url, tmp_path)


def endpoint_count(engine: Engine) -> int:
    with make_sessionmaker(engine)() as s:
        return s.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0


def within(shown: Page, width: int) -> None:
    assert document_width(shown) <= width, (shown.url, document_width(shown),
                                            overflowing(shown))


def test_an_admin_adds_pings_redelivers_and_disables_an_endpoint(
        page: Page, app: Flask, engine: Engine, live_server: LiveServer,  # noqa: F811
        receiver: Receiver, settings: Settings) -> None:
    tenant_id = live_server.tenant_id
    rename_tenant(engine, tenant_id, "Northwind Traders")
    make_web_admin(engine, "maria.jansen@partner.example")
    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("maria.jansen@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Northwind Traders").click()
    page.get_by_role("navigation", name="Tenant Northwind Traders").get_by_role(
        "link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
    expect(page.get_by_text("No endpoints yet")).to_be_visible()

    # Add: the secret is shown once; a reload shows it no more and adds nothing.
    page.get_by_role("link", name="Add an endpoint…").click()
    url = receiver.url.replace("/hook", LONG_PATH)
    page.get_by_label("URL").fill(url)
    page.get_by_label("Description").fill("HR system")
    page.get_by_label("user.created").check()
    page.get_by_role("button", name="Add the endpoint").click()
    expect(page.get_by_role("heading", name="Webhook endpoint created")).to_be_visible()
    secret = page.get_by_label("Signing secret").input_value()
    assert secret.startswith("whsec_")
    within(page, 1280)
    page.reload()
    expect(page.get_by_text("was shown once and cannot be shown again")).to_be_visible()
    assert "whsec_" not in page.content()
    assert endpoint_count(engine) == 1

    page.get_by_role("link", name="Go to the endpoint").click()
    expect(page.get_by_role("heading", name=re.compile("HR system"))).to_be_visible()
    expect(page.locator("#state")).to_contain_text("Nothing delivered yet")

    # A test ping: the receiver's answer after the redirect, then in the log.
    page.get_by_role("button", name="Send a test ping").click()
    expect(page.get_by_role("status").filter(has_text="Test ping delivered")).to_contain_text(
        "the receiver answered 200")
    assert verify(receiver.accepted[-1], secret)["type"] == "webhook.ping"
    page.reload()  # repeats nothing
    assert len(receiver.received) == 1
    page.get_by_role("link", name="HR system").click()
    row = page.locator("table.attempts tbody tr").first
    expect(row).to_contain_text("test ping")
    expect(row).to_contain_text("200")

    # A user created over SCIM is delivered by the dispatcher, shown in the log, and
    # redelivered by hand as the same message.
    scim = ScimClient(app.test_client(), live_server.token, tenant_id)
    assert scim.post("/Users", user("ann@northwind.example")).status_code == 201
    Dispatcher(make_sessionmaker(engine), settings).run_pass()
    delivered = receiver.accepted[-1]
    assert [e["type"] for e in delivered.events] == ["user.created"]
    page.reload()
    expect(page.locator("#state")).to_contain_text("Delivered: the last message arrived")
    row = page.locator("table.attempts tbody tr").first
    expect(row).to_contain_text("user.created")
    within(page, 1280)
    row.get_by_role("link", name=re.compile("Details")).click()
    expect(page.get_by_role("heading", name="Delivery: delivered")).to_be_visible()
    expect(page.locator("#webhook-id")).to_have_text(delivered.headers["webhook-id"])
    page.get_by_role("button", name="Redeliver").click()
    expect(page.get_by_role("status").filter(has_text="Redelivery delivered")).to_be_visible()
    expect(page.get_by_role("heading", name="Redelivery: delivered")).to_be_visible()
    again = receiver.accepted[-1]
    assert again.headers["webhook-id"] == delivered.headers["webhook-id"]
    assert again.events == delivered.events

    # Disable asks first; enable brings it back.
    page.get_by_role("link", name="HR system").click()
    page.get_by_role("link", name="Disable…").click()
    expect(page.get_by_role("heading", name="Disable this endpoint?")).to_be_visible()
    page.get_by_role("button", name="Disable the endpoint").click()
    expect(page.get_by_role("status").filter(has_text="The endpoint is disabled")
           ).to_be_visible()
    expect(page.locator("#state")).to_contain_text("Disabled by an admin on")
    page.get_by_role("button", name="Enable").click()
    expect(page.get_by_role("status").filter(has_text="The endpoint is enabled")
           ).to_be_visible()
    expect(page.locator("h1 .badge")).to_have_text("Delivering")

    # The list, with the long URL cut and whole on hover; every page fits a phone.
    page.get_by_role("link", name="Webhooks", exact=True).first.click()
    link = page.locator("table.webhooks tbody tr").first.locator(".clip").first
    expect(link).to_have_attribute("title", url)
    endpoint_page = page.locator("table.webhooks tbody a").first.get_attribute("href")
    assert endpoint_page
    pages = [page.url, endpoint_page, f"{endpoint_page}/rotate", f"{endpoint_page}/delete",
             f"/admin/tenants/{tenant_id}/webhooks/new", "/admin/webhooks"]
    page.goto(endpoint_page)
    page.locator("table.attempts tbody a").first.click()
    pages.append(page.url)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 800})
        for path in pages:
            page.goto(path)
            within(page, width)
