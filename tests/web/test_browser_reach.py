"""Reach and trust in a real browser: a round that cannot reach Entra ID says why in plain
words in the run log, and the raw cause is one click away on the run's page (chromium
through Playwright, against a closed port on loopback; SQLite and PostgreSQL)."""

from __future__ import annotations

import re
import socket

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from tests.azure_sync.harness import entra_worker  # noqa: F401
from tests.fakes.fixtures import (  # noqa: F401  (pytest finds fixtures by name)
    FakeApp,
    fake_app,
    fake_entra,
    fake_graph,
    fake_tls,
)
from tests.support.app import LiveServer
from tests.support.clients import PASSWORD
from tests.web.conftest import make_web_admin, rename_tenant
from tests.web.test_browser import browser, page  # noqa: F401
from tests.web.test_browser_entra import settings, wait_for_round  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.usefixtures("entra_worker")]  # takes "Run now"


def test_an_unreachable_entra_is_said_plainly_with_the_detail_one_click_away(
        page: Page, engine: Engine, live_server: LiveServer,  # noqa: F811
        fake_app: FakeApp) -> None:  # noqa: F811
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{probe.getsockname()[1]}"
    tenant_id = live_server.tenant_id
    rename_tenant(engine, tenant_id, "Tailspin")
    make_web_admin(engine, "noor.bakker@partner.example")

    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("noor.bakker@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Tailspin").click()
    nav = page.get_by_role("navigation", name="Tenant Tailspin")
    nav.get_by_role("link", name="Entra ID sync").click()
    page.get_by_role("link", name="Set up Entra ID sync").click()
    page.get_by_label("Directory (tenant) ID").fill(fake_app.tenant_id)
    page.get_by_label("Application (client) ID").fill(fake_app.client_id)
    page.get_by_label("Client secret").fill(fake_app.client_secret)
    page.get_by_label("Sign-in (authority) host").fill(closed)
    page.get_by_label("Microsoft Graph base URL").fill(fake_app.graph_base_url)
    page.get_by_role("button", name="Register and start syncing").click()
    expect(page.get_by_role("status").filter(has_text="Entra ID sync is set up")).to_be_visible()

    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("heading", name="Run log", level=1)).to_be_visible()
    wait_for_round(page, engine, tenant_id, "failed")
    newest = page.locator("table.runs tbody tr").first
    expect(newest).to_contain_text(
        "Entra ID could not be reached: connection refused by 127.0.0.1.")
    expect(newest).not_to_contain_text("ConnectionRefusedError")  # the raw cause is not here

    newest.get_by_role("link", name=re.compile(r"Round \d+")).click()
    raw = page.locator("details.error-detail pre")
    expect(raw).to_be_hidden()
    page.get_by_text("Technical detail").click()
    expect(raw).to_be_visible()
    expect(raw).to_contain_text("ConnectionRefusedError")
