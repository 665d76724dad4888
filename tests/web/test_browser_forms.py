"""Issue 17 in a real browser (chromium through Playwright; SQLite and PostgreSQL): every
form that changes something is reloaded after it was sent, and the reload repeats
nothing; secrets are shown once; rotation asks first; refused forms keep what was typed
with each error next to its field; tenants are renamed, closed and reopened, modules
renamed and removed, each after a confirmation; the deleted-users list offers to pause
provisioning up front."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import Engine, func, select

from connector.db import make_sessionmaker
from connector.models import AdminToken, ScimToken, Tenant
from tests.support.app import LiveServer
from tests.support.clients import PASSWORD, ScimClient
from tests.web.conftest import audit_actions, make_web_admin, seed_directory
from tests.web.test_browser import browser, page  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def sign_in(page: Page, engine: Engine) -> None:  # noqa: F811
    make_web_admin(engine, "maria.jansen@partner.example")
    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("maria.jansen@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tenants", level=1)).to_be_visible()


def count(engine: Engine, model: type, **where: object) -> int:
    with make_sessionmaker(engine)() as s:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return s.scalar(query) or 0


def test_secrets_are_shown_once_and_a_reload_issues_nothing(
        page: Page, engine: Engine, live_server: LiveServer) -> None:  # noqa: F811
    sign_in(page, engine)
    # A new tenant: its first token once; the reload creates no second tenant.
    page.get_by_label("Name").fill("Contoso Health")
    page.get_by_role("button", name="Create tenant").click()
    expect(page.get_by_role("heading", name="Tenant “Contoso Health” created")).to_be_visible()
    expect(page.get_by_label("SCIM bearer token")).to_have_value(re.compile(r"^scim_"))
    page.reload()
    expect(page.get_by_text("was shown once and cannot be shown again")).to_be_visible()
    expect(page.get_by_label("SCIM bearer token")).to_have_count(0)
    assert count(engine, Tenant, name="Contoso Health") == 1

    # Rotation asks first, then shows the token once; the reload rotates nothing.
    page.goto(f"/admin/tenants/{live_server.tenant_id}/settings")
    page.get_by_role("link", name="Rotate the SCIM token…").click()
    expect(page.get_by_role("heading", name="Rotate the SCIM token of Live?")).to_be_visible()
    assert audit_actions(engine).count("tenant.scim_token_rotated") == 0
    page.get_by_role("button", name="Rotate the SCIM token").click()
    token = page.get_by_label("SCIM bearer token").input_value()
    assert token.startswith("scim_")
    page.reload()
    expect(page.get_by_text("This token was shown once and cannot be shown again")
           ).to_be_visible()
    assert audit_actions(engine).count("tenant.scim_token_rotated") == 1
    assert count(engine, ScimToken, tenant_id=live_server.tenant_id, revoked_at=None) == 1
    page.go_back()  # back to the token page: still nothing shown, nothing rotated
    expect(page.get_by_label("SCIM bearer token")).to_have_count(0)
    assert audit_actions(engine).count("tenant.scim_token_rotated") == 1

    # An API token: once; the reload makes no second one.
    page.goto("/admin/account")
    page.get_by_label("New token’s name (what it is for)").fill("nightly report")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_label("Personal API token")).to_have_value(re.compile(r"^cadm_"))
    page.reload()
    expect(page.get_by_text("was shown once")).to_be_visible()
    assert count(engine, AdminToken, name="nightly report") == 1


def test_a_refused_billing_form_keeps_what_was_typed(
        page: Page, engine: Engine, live_server: LiveServer) -> None:  # noqa: F811
    sign_in(page, engine)
    page.goto(f"/admin/tenants/{live_server.tenant_id}/billing")
    page.get_by_label("Company name").fill("Fabrikam B.V.")
    page.get_by_label("Time zone (IANA)").fill("Europe/Amsterdm")
    page.get_by_label("Prices in USD, excl. tax").fill("Hybrid standard 4.50\nEngage; 2")
    page.get_by_role("button", name="Save billing info").click()
    expect(page.get_by_role("alert").filter(has_text="2 fields need a change")).to_be_visible()
    expect(page.locator("#time_zone-error")).to_contain_text(
        "The time zone must be an IANA time zone")
    expect(page.locator("#prices-error")).to_contain_text(
        "Price lines 1 and 2 do not read unit, plan, price")
    expect(page.get_by_label("Company name")).to_have_value("Fabrikam B.V.")
    expect(page.get_by_label("Time zone (IANA)")).to_have_value("Europe/Amsterdm")
    expect(page.get_by_label("Time zone (IANA)")).to_have_attribute("aria-invalid", "true")
    page.reload()  # nothing was saved; the reload shows the saved form
    expect(page.get_by_label("Company name")).to_have_value("")
    expect(page.locator(".field-error")).to_have_count(0)
    page.get_by_label("Company name").fill("Fabrikam B.V.")
    page.get_by_role("button", name="Save billing info").click()
    expect(page.get_by_role("status").filter(has_text="Billing info saved")).to_be_visible()
    page.reload()
    expect(page.get_by_label("Company name")).to_have_value("Fabrikam B.V.")
    assert audit_actions(engine).count("billing.updated") == 1


def test_a_partner_renames_closes_and_reopens_a_tenant_and_edits_modules(
        page: Page, app: Flask, engine: Engine, live_server: LiveServer) -> None:  # noqa: F811
    seed_directory(ScimClient(app.test_client(), live_server.token, live_server.tenant_id),
                   users=4)
    sign_in(page, engine)
    page.goto(f"/admin/tenants/{live_server.tenant_id}/settings")
    page.get_by_role("link", name="Rename the tenant…").click()
    page.get_by_label("New name").fill("Northwind Traders")
    page.get_by_role("button", name="Rename").click()
    expect(page.get_by_role("status").filter(has_text="is now called “Northwind Traders”")
           ).to_be_visible()
    page.reload()
    assert audit_actions(engine).count("tenant.renamed") == 1

    page.goto(f"/admin/tenants/{live_server.tenant_id}/settings")
    page.get_by_role("link", name="Close the tenant…").click()
    expect(page.get_by_role("heading", name="Close Northwind Traders?")).to_be_visible()
    page.get_by_role("button", name="Close Northwind Traders").click()
    expect(page.get_by_role("status").filter(has_text="Northwind Traders is closed")
           ).to_be_visible()
    page.reload()
    assert audit_actions(engine).count("tenant.closed") == 1
    page.get_by_role("link", name="Northwind Traders", exact=True).click()
    expect(page.get_by_role("region", name="This tenant is closed")).to_be_visible()
    page.goto("/admin/tenants")
    page.get_by_role("button", name="Reopen Northwind Traders").click()
    expect(page.get_by_role("status").filter(has_text="is open again")).to_be_visible()
    page.reload()
    assert audit_actions(engine).count("tenant.reopened") == 1

    page.goto(f"/admin/tenants/{live_server.tenant_id}/modules")
    page.get_by_label("Name").fill("<Boost>")
    page.get_by_role("button", name="Add module").click()
    expect(page.locator("#name-error")).to_contain_text("may not contain < or >")
    expect(page.get_by_label("Name")).to_have_value("<Boost>")
    page.get_by_role("link", name="Rename… Hybrid").click()
    page.get_by_label("New name").fill("Hybrid Work")
    page.get_by_role("button", name="Rename").click()
    expect(page.get_by_role("status").filter(has_text="is now called “Hybrid Work”")
           ).to_be_visible()
    page.reload()
    page.get_by_role("link", name="Remove… Hybrid Work").click()
    expect(page.get_by_text("1 user and 0 groups hold Hybrid Work.")).to_be_visible()
    page.get_by_role("button", name="Remove Hybrid Work").click()
    expect(page.get_by_role("status").filter(has_text="Module “Hybrid Work” removed")
           ).to_be_visible()
    page.reload()
    expect(page.get_by_role("rowheader", name="Hybrid Work")).to_have_count(0)
    assert audit_actions(engine)[-2:] == ["module.renamed", "module.removed"]


def test_deleted_users_offer_to_pause_provisioning_up_front(
        page: Page, app: Flask, engine: Engine, live_server: LiveServer) -> None:  # noqa: F811
    seed_directory(ScimClient(app.test_client(), live_server.token, live_server.tenant_id),
                   users=2)
    sign_in(page, engine)
    page.goto(f"/admin/tenants/{live_server.tenant_id}/deleted-users")
    expect(page.get_by_role("heading", name="Pause provisioning to edit")).to_be_visible()
    expect(page.get_by_role("button", name="Restore vera.disabled@northwind.example")
           ).to_have_count(0)
    page.get_by_role("button", name="Pause provisioning and edit").click()
    expect(page).to_have_url(re.compile(r"/deleted-users$"))
    expect(page.get_by_role("region", name="Provisioning is paused")).to_be_visible()
    page.reload()
    page.get_by_role("button", name="Restore vera.disabled@northwind.example").click()
    expect(page.get_by_role("status").filter(has_text="is restored and active")).to_be_visible()
    page.reload()
    expect(page.get_by_text("1 deleted user", exact=True)).to_be_visible()
    assert audit_actions(engine).count("user.restored") == 1
