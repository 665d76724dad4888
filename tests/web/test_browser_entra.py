"""Entra ID sync in a real browser: an admin registers the app, runs a round, sees the
users, and approves a round held over the deletion threshold (chromium through
Playwright, against the fake Entra ID and Graph; SQLite and PostgreSQL).

With CONNECTOR_SCREENSHOTS=1 it saves docs/screenshots/entra-sync.png (the SQLite run).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from azure_sync import on_demand, secrets
from connector.config import Settings, load_settings
from connector.db import make_sessionmaker
from connector.models import SyncState
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
from tests.support.clients import PASSWORD
from tests.web.conftest import make_web_admin, rename_tenant
from tests.web.test_browser import browser, page, screenshot  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.usefixtures("entra_worker")]  # takes "Run now"

PEOPLE = [("Amira", "de Vries"), ("Bram", "Novak"), ("Chloé", "Jansen"), ("Dmitri", "Horvat"),
          ("Elif", "Bakker"), ("Femke", "Kovač"), ("Goran", "Visser"), ("Hana", "Dvořák"),
          ("Ivo", "Smit"), ("Jasna", "Marković"), ("Kees", "de Vries"), ("Lotte", "Novak")]


@pytest.fixture
def settings(database_url: str, fake_tls: Any, tmp_path: Path) -> Settings:  # noqa: F811
    """The live server's settings, with the poller trusting the fakes."""
    return load_settings(
        environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml")},
        overrides={"database": {"url": database_url}, "logging": {"access_log": False},
                   "azure_sync": {"encryption_key": secrets.new_key(),
                                  "ca_bundle": str(fake_tls.ca_path),
                                  "allow_private_hosts": True,  # the fakes' loopback
                                  "graph_scope": "https://graph.microsoft.com/.default"}})


def wait_for_round(view: Page, engine: Engine, tenant_id: str, status: str) -> None:
    """Refresh the run log, as an admin would, until the newest round has `status` and
    has let go of the tenant's lease, and no "Run now" waits for the worker (until it
    takes it, the newest round is the one before)."""
    deadline = time.monotonic() + 20
    newest = view.locator("table.runs tbody tr").first.locator(".badge")
    while time.monotonic() < deadline:
        view.reload()
        with make_sessionmaker(engine)() as s:
            state = s.get(SyncState, tenant_id)
            free = (state is not None and state.lease_owner is None
                    and on_demand.pending(s, tenant_id) is None)
        if free and newest.count() and newest.inner_text() == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"no round reached {status!r}")


def test_an_admin_sets_up_entra_sync_and_approves_a_held_round(
        page: Page, engine: Engine, live_server: LiveServer, database_url: str,  # noqa: F811
        fake_app: FakeApp, fake_graph: FakeGraph) -> None:  # noqa: F811
    tenant_id = live_server.tenant_id
    rename_tenant(engine, tenant_id, "Fabrikam")
    make_web_admin(engine, "maria.jansen@partner.example")
    directory = fake_graph.directory(fake_app.tenant_id)
    ids = [directory.add_user(f"{given.lower()}.{family.replace(' ', '').lower()}"
                              "@fabrikam.example", givenName=given, surname=family,
                              displayName=f"{given} {family}")
           for given, family in PEOPLE]

    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("maria.jansen@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Fabrikam").click()
    nav = page.get_by_role("navigation", name="Tenant Fabrikam")
    nav.get_by_role("link", name="Entra ID sync").click()
    page.get_by_role("link", name="Set up Entra ID sync").click()

    expect(page.get_by_label("Sign-in (authority) host")).to_have_value(
        "https://login.microsoftonline.com")
    page.get_by_label("Directory (tenant) ID").fill(fake_app.tenant_id)
    page.get_by_label("Application (client) ID").fill(fake_app.client_id)
    page.get_by_label("Client secret").fill(fake_app.client_secret)
    page.get_by_label("Sign-in (authority) host").fill(fake_app.authority_host)
    page.get_by_label("Microsoft Graph base URL").fill(fake_app.graph_base_url)
    page.get_by_label("Deletion threshold: users").fill("3")
    page.get_by_role("button", name="Register and start syncing").click()
    expect(page.get_by_role("status").filter(has_text="Entra ID sync is set up")).to_be_visible()

    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("heading", name="Run log", level=1)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="the worker starts it in the background")
           ).to_be_visible()
    wait_for_round(page, engine, tenant_id, "succeeded")
    expect(page.get_by_role("row").filter(has_text="12 created")).to_be_visible()
    nav.get_by_role("link", name="Users", exact=True).click()
    expect(page.get_by_text("12 users")).to_be_visible()
    expect(page.get_by_role("link", name="amira.devries@fabrikam.example")).to_be_visible()

    # Four leavers at once are more than the threshold of 3: the round is held.
    for user_id in ids[:4]:
        directory.disable_user(user_id)
    nav.get_by_role("link", name="Entra ID sync").click()
    page.get_by_role("button", name="Run now").click()
    # The click posts a form; reloading before its answer has loaded detaches the page.
    expect(page.get_by_role("heading", name="Run log", level=1)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="the worker starts it in the background")
           ).to_be_visible()
    wait_for_round(page, engine, tenant_id, "awaiting approval")
    banner = page.get_by_role("region", name="An Entra ID sync round awaits approval")
    expect(banner).to_contain_text("disable or delete 4 users")
    nav.get_by_role("link", name="Entra ID sync").click()
    screenshot(page, "entra-sync", database_url)
    banner.get_by_role("link", name=re.compile(r"Review round \d+")).click()
    staged = page.get_by_role("table").filter(has_text="4 staged changes")
    expect(staged.get_by_role("rowheader", name="amira.devries@fabrikam.example")
           ).to_be_visible()
    page.get_by_role("link", name="Approve…").click()
    page.get_by_role("button", name="Approve and apply").click()
    expect(page.get_by_role("status").filter(has_text="approved and applied: 4 disabled")
           ).to_be_visible()
    expect(banner).to_have_count(0)

    nav.get_by_role("link", name="Deleted users").click()
    expect(page.get_by_text("4 deleted users")).to_be_visible()


def test_an_admin_sees_what_was_kept_and_restarts_provisioning(
        page: Page, engine: Engine, live_server: LiveServer,  # noqa: F811
        fake_app: FakeApp, fake_graph: FakeGraph) -> None:  # noqa: F811
    """A user Entra sends that cannot be applied shows with its reason; restarting
    provisioning asks first, then runs a full round."""
    tenant_id = live_server.tenant_id
    rename_tenant(engine, tenant_id, "Contoso")
    make_web_admin(engine, "ola.nordmann@partner.example")
    directory = fake_graph.directory(fake_app.tenant_id)
    for given, family in PEOPLE[:5]:
        directory.add_user(f"{given.lower()}@contoso.example", givenName=given,
                           surname=family)

    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("ola.nordmann@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Contoso").click()
    nav = page.get_by_role("navigation", name="Tenant Contoso")
    nav.get_by_role("link", name="Entra ID sync").click()
    page.get_by_role("link", name="Set up Entra ID sync").click()
    page.get_by_label("Directory (tenant) ID").fill(fake_app.tenant_id)
    page.get_by_label("Application (client) ID").fill(fake_app.client_id)
    page.get_by_label("Client secret").fill(fake_app.client_secret)
    page.get_by_label("Sign-in (authority) host").fill(fake_app.authority_host)
    page.get_by_label("Microsoft Graph base URL").fill(fake_app.graph_base_url)
    expect(page.get_by_label("Turns inactive and goes on the deleted-users list",
                             exact=False)).to_be_checked()
    page.get_by_label("Match existing accounts by").select_option("mail")
    page.get_by_role("button", name="Register and start syncing").click()
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("heading", name="Run log", level=1)).to_be_visible()
    wait_for_round(page, engine, tenant_id, "succeeded")

    # A second account under a name a synced user holds (a directory mid-change).
    with directory.lock:
        twin = directory.add_user("tmp@contoso.example")
        directory.update_user(twin, userPrincipalName="Amira@contoso.example")
    nav.get_by_role("link", name="Entra ID sync").click()
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("heading", name="Run log", level=1)).to_be_visible()
    wait_for_round(page, engine, tenant_id, "succeeded")
    nav.get_by_role("link", name="Entra ID sync").click()
    kept = page.get_by_role("region", name="Kept for later (1)")
    expect(kept).to_contain_text("Amira@contoso.example")
    expect(kept).to_contain_text("is held by 'amira@contoso.example'")

    page.get_by_role("link", name="Restart provisioning…").click()
    expect(page.get_by_role("heading", name="Restart provisioning?")).to_be_visible()
    page.get_by_role("button", name="Restart provisioning").click()
    expect(page.get_by_role("heading", name="Run log", level=1)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Provisioning restarted")).to_be_visible()
    wait_for_round(page, engine, tenant_id, "succeeded")
    expect(page.locator("table.runs tbody tr").first).to_contain_text("full")
