"""The Entra ID sync pages read plainly (issue 17, item 8), in a real browser: the run
log follows a round by itself, old raw Python errors show in plain words, and a
SCIM-fed tenant's registration form is disabled with the reason (chromium through
Playwright, against the fake Entra ID and Graph; SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from connector.db import make_sessionmaker
from connector.models import SyncRun
from tests.azure_sync.harness import entra_worker  # noqa: F401
from tests.fakes.fixtures import (  # noqa: F401  (pytest finds fixtures by name)
    FakeApp,
    fake_app,
    fake_entra,
    fake_graph,
    fake_tls,
)
from tests.fakes.graph import FakeGraph
from tests.support.app import LiveServer
from tests.support.clients import PASSWORD, ScimClient
from tests.web.conftest import make_web_admin, scim_user
from tests.web.test_browser import browser, page  # noqa: F401
from tests.web.test_browser_entra import settings  # noqa: F401  (trusts the fakes)

pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.usefixtures("entra_worker")]  # takes "Run now"

RAW = ("HTTPSConnectionPool(host='login.microsoftonline.com', port=443): Max retries "
       "exceeded with url: /contoso/oauth2/v2.0/token (Caused by NewConnectionError("
       "'<urllib3.connection.HTTPSConnection object at 0x7f3a2c1d05d0>: Failed to establish "
       "a new connection: [Errno 111] Connection refused'))")


def sign_in(page: Page, engine: Engine, email: str, role: str = "partner",  # noqa: F811
            tenant_id: str | None = None) -> None:
    make_web_admin(engine, email, role, tenant_id)
    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def test_the_run_log_follows_a_round_and_says_old_errors_plainly(
        page: Page, engine: Engine, live_server: LiveServer,  # noqa: F811
        fake_app: FakeApp, fake_graph: FakeGraph) -> None:  # noqa: F811
    tenant_id = live_server.tenant_id
    directory = fake_graph.directory(fake_app.tenant_id)
    for n in range(5):
        directory.add_user(f"person{n}@fabrikam.example", givenName=f"Person{n}",
                           surname="Dvořák")
    with make_sessionmaker(engine)() as s:  # a round from before the plain words
        s.add(SyncRun(tenant_id=tenant_id, kind="incremental", status="failed",
                      trigger="schedule", started_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
                      finished_at=dt.datetime(2026, 11, 1, 0, 1, tzinfo=dt.UTC), pages=0,
                      counts={}, error=RAW))
        s.commit()
    sign_in(page, engine, "maria.jansen@partner.example")
    base = f"/admin/tenants/{tenant_id}/entra"
    page.goto(f"{base}/runs")
    row = page.locator("table.runs tbody tr").first
    expect(row).to_contain_text(
        "Entra ID could not be reached: connection refused by login.microsoftonline.com.")
    expect(page.locator("main")).not_to_contain_text("HTTPSConnectionPool")
    expect(page.locator("main")).not_to_contain_text("NewConnectionError")

    page.goto(f"{base}/registration")
    page.get_by_label("Directory (tenant) ID").fill(fake_app.tenant_id)
    page.get_by_label("Application (client) ID").fill(fake_app.client_id)
    page.get_by_label("Client secret").fill(fake_app.client_secret)
    page.get_by_label("Sign-in (authority) host").fill(fake_app.authority_host)
    page.get_by_label("Microsoft Graph base URL").fill(fake_app.graph_base_url)
    page.get_by_role("button", name="Register and start syncing").click()
    expect(page.get_by_role("status").filter(has_text="Entra ID sync is set up")).to_be_visible()
    page.reload()  # post/redirect/get: reloading registers nothing twice
    expect(page.get_by_role("heading", name="Entra ID sync", level=1)).to_be_visible()

    fake_graph.knobs.latency = 1.0  # a round of a few seconds: long enough to watch
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("heading", name="Run log", level=1)).to_be_visible()
    expect(page.locator("#sync-progress")).to_contain_text("updates by itself")
    # No reload from here on: the page follows the round by itself.
    newest = page.locator("table.runs tbody tr").first
    expect(newest.locator(".badge")).not_to_have_text("succeeded")
    expect(newest.locator(".badge")).to_have_text("succeeded", timeout=30_000)
    expect(newest).to_contain_text("5 created")
    expect(page.locator("#sync-progress")).to_have_count(0, timeout=10_000)
    assert "started" not in page.url  # a later reload shows what is, starts nothing
    page.reload()
    expect(page.locator("table.runs tbody tr")).to_have_count(2)


def test_a_scim_fed_tenant_cannot_fill_in_the_registration(
        page: Page, app: Flask, engine: Engine, live_server: LiveServer) -> None:  # noqa: F811
    scim_user(ScimClient(app.test_client(), live_server.token, live_server.tenant_id),
              "Jiří", "Dvořák")
    sign_in(page, engine, "ola.nordmann@partner.example")
    base = f"/admin/tenants/{live_server.tenant_id}/entra"
    page.goto(base)
    expect(page.locator("#scim-fed")).to_contain_text("cannot be set up here")
    expect(page.get_by_role("link", name="Set up Entra ID sync")).to_have_count(0)
    page.get_by_role("link", name="See the registration form").click()
    expect(page.locator("#scim-fed")).to_contain_text("the form below is disabled")
    expect(page.locator("#scim-fed")).to_contain_text("create a new tenant")
    expect(page.get_by_label("Directory (tenant) ID")).to_be_disabled()
    expect(page.get_by_label("Client secret")).to_be_disabled()
    expect(page.get_by_role("button", name="Register and start syncing")).to_be_disabled()
