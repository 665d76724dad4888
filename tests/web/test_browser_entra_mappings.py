"""The attribute mappings of Entra ID sync in a real browser: an admin opens them from
the Entra ID sync tab, is told next to the field what is wrong with a table, saves a
good one, and sees the mapped attributes on a synced user's page (chromium through
Playwright, against the fake Entra ID and Graph; SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from azure_sync import mapping, secrets
from azure_sync.service import register
from connector.config import Settings, load_settings
from connector.db import make_sessionmaker
from connector.events import WriteContext
from connector.status import Source
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
from tests.web.test_browser import browser, page  # noqa: F401
from tests.web.test_browser_entra import wait_for_round

pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.usefixtures("entra_worker")]  # takes "Run now"
ORGANIZATION = f"{mapping.ENTERPRISE}:organization"


@pytest.fixture
def settings(database_url: str, fake_tls: Any, tmp_path: Path) -> Settings:  # noqa: F811
    return load_settings(
        environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml")},
        overrides={"database": {"url": database_url}, "logging": {"access_log": False},
                   "azure_sync": {"encryption_key": secrets.new_key(),
                                  "ca_bundle": str(fake_tls.ca_path),
                                  "allow_private_hosts": True,  # the fakes' loopback
                                  "graph_scope": "https://graph.microsoft.com/.default"}})


def test_an_admin_changes_the_attribute_mappings(
        page: Page, engine: Engine, live_server: LiveServer, settings: Settings,  # noqa: F811
        fake_app: FakeApp, fake_graph: FakeGraph) -> None:  # noqa: F811
    tenant_id = live_server.tenant_id
    rename_tenant(engine, tenant_id, "Fabrikam")
    make_web_admin(engine, "maria.jansen@partner.example")
    with make_sessionmaker(engine)() as s:
        register(s, settings.azure_sync, WriteContext(tenant_id, Source.ADMIN, "test", "test",
                                                      dt.datetime.now(dt.UTC)),
                 directory_id=fake_app.tenant_id, client_id=fake_app.client_id,
                 secret=fake_app.client_secret, authority_host=fake_app.authority_host,
                 graph_base_url=fake_app.graph_base_url)
        s.commit()
    directory = fake_graph.directory(fake_app.tenant_id)
    boss = directory.add_user("bram.novak@fabrikam.example", displayName="Bram Novak")
    directory.add_user("amira.devries@fabrikam.example", displayName="Amira de Vries",
                       jobTitle="Nurse", department="Cardiology", companyName="Fabrikam Care",
                       manager=boss)

    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("maria.jansen@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Fabrikam").click()
    nav = page.get_by_role("navigation", name="Tenant Fabrikam")
    nav.get_by_role("link", name="Entra ID sync").click()
    section = page.get_by_role("region", name="Attribute mappings")
    expect(section).to_contain_text("Entra’s default mapping for SCIM apps")
    section.get_by_role("link", name="See or change the attribute mappings").click()
    expect(page.get_by_role("heading", name="Attribute mappings", level=1)).to_be_visible()
    expect(page.get_by_label("jobTitle")).to_have_value("title")
    expect(page.get_by_label("companyName")).to_have_value("")

    # Two properties for one attribute: refused, said next to the field.
    page.get_by_label("companyName").select_option(ORGANIZATION)
    page.get_by_label("mobilePhone").select_option("title")
    page.get_by_role("button", name="Save the mappings").click()
    expect(page.get_by_role("alert").filter(has_text="both map to")).to_be_visible()
    expect(page.locator('[id="map-mobilePhone-error"]')).to_contain_text("both map to 'title'")
    expect(page.get_by_label("companyName")).to_have_value(ORGANIZATION)  # kept to fix

    page.get_by_label("mobilePhone").select_option('phoneNumbers[type eq "mobile"].value')
    page.get_by_role("button", name="Save the mappings").click()
    expect(page.get_by_role("status").filter(has_text="Attribute mappings saved")
           ).to_be_visible()
    expect(page.get_by_label("companyName")).to_have_value(ORGANIZATION)

    nav.get_by_role("link", name="Entra ID sync").click()
    expect(page.get_by_role("region", name="Attribute mappings")).to_contain_text(
        "Changed from Entra’s default")
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_role("heading", name="Run log", level=1)).to_be_visible()
    wait_for_round(page, engine, tenant_id, "succeeded")
    nav.get_by_role("link", name="Users", exact=True).click()
    page.get_by_role("link", name="amira.devries@fabrikam.example").click()
    expect(page.locator("#profile-title")).to_have_text("Nurse")
    expect(page.locator("#profile-department")).to_have_text("Cardiology")
    expect(page.get_by_text("Fabrikam Care")).to_be_visible()
    page.locator("#profile-manager").get_by_role("link", name="Bram Novak").click()
    expect(page.get_by_role("heading", name="Bram Novak", level=1)).to_be_visible()
