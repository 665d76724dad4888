"""Billing in a real browser: a partner admin fills in a tenant's billing info, sees the
overview and the running month, opens a closed month's invoice and its users with
reasons, and reissues the month (chromium through Playwright; SQLite and PostgreSQL).

With CONNECTOR_SCREENSHOTS=1 it saves docs/screenshots/billing.png and
billing-month.png (the SQLite run).
"""

from __future__ import annotations

import datetime as dt

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from billing.calendar import Month
from billing.close import close_month
from connector.config import BillingSettings
from connector.db import make_sessionmaker
from connector.models import Tenant
from tests.billing.history import History, at
from tests.support.app import LiveServer
from tests.support.clients import PASSWORD
from tests.web.conftest import make_web_admin, rename_tenant
from tests.web.test_browser import browser, page, screenshot  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def set_created(engine: Engine, tenant_id: str, when: str) -> None:
    with make_sessionmaker(engine)() as s:
        tenant = s.get(Tenant, tenant_id)
        assert tenant is not None
        tenant.created_at = at(when)
        s.commit()


def test_a_partner_reads_an_invoice_and_reissues_the_month(
        page: Page, engine: Engine, live_server: LiveServer,  # noqa: F811
        database_url: str) -> None:
    rename_tenant(engine, live_server.tenant_id, "Fabrikam")
    make_web_admin(engine, "maria.jansen@partner.example")
    h = History(engine, tenant_id=live_server.tenant_id)
    # The history below starts in September: the live server's tenant, made today, is
    # dated back so that its months exist (a month before the tenant is never closed).
    set_created(engine, live_server.tenant_id, "2026-09-01T00:00:00")
    people = ["amira", "bram", "chloe", "dmitri", "elif", "femke"]
    ids = [h.create("2026-09-02T10:00:00", f"{p}@fabrikam.example", modules=("Hybrid",))
           for p in people]
    h.create("2026-09-02T10:00:00", "guest@partner.example", guest=True, modules=("Engage",))
    h.set_active("2026-10-20T10:00:00", ids[0], False)

    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("maria.jansen@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Fabrikam").click()
    nav = page.get_by_role("navigation", name="Tenant Fabrikam")
    nav.get_by_role("link", name="Billing").click()
    expect(page.get_by_role("heading", name="Billing", level=1)).to_be_visible()
    overview = page.locator("#overview")
    expect(overview.get_by_role("row").filter(has_text="Hybrid")).to_contain_text("5")

    page.get_by_label("Company name").fill("Fabrikam B.V.")
    page.get_by_label("Purchase order (PO) number").fill("PO-2026-118")
    page.get_by_label("Prices in USD, excl. tax").fill(
        "Hybrid, standard, 6.50\nEngage, standard, 3.00")
    page.get_by_role("button", name="Save billing info").click()
    expect(page.get_by_role("status").filter(has_text="Billing info saved")).to_be_visible()
    expect(page.get_by_label("Company name")).to_have_value("Fabrikam B.V.")

    # The close job would do this after October's collection window.
    close_month(h.maker, live_server.tenant_id, Month(2026, 10), BillingSettings(),
                at("2026-11-01T01:00:00") + dt.timedelta(minutes=5))
    page.reload()
    expect(page.locator("#history-chart")).to_be_visible()
    history = page.locator("#history")
    expect(history.get_by_role("row").filter(has_text="2026-10")).to_contain_text("35.50")
    screenshot(page, "billing", database_url)

    history.get_by_role("link", name="2026-10").click()
    expect(page.get_by_role("heading", name="2026-10")).to_be_visible()
    expect(page.locator("#invoice-total")).to_have_text("35.50")
    expect(page.get_by_role("row").filter(has_text="Hybrid, regular, standard plan")
           ).to_contain_text("32.50")
    page.get_by_label("Show").select_option("false")
    page.get_by_role("button", name="Filter").click()
    lines = page.locator("#lines")
    expect(lines.get_by_role("row").filter(has_text="amira@fabrikam.example")
           ).to_contain_text("Inactive at the month's end")
    expect(lines.get_by_role("row")).to_have_count(2)  # the header and amira
    screenshot(page, "billing-month", database_url)

    page.get_by_label("Reason for reissuing").fill("PO number was added after the close")
    page.get_by_role("button", name="Reissue 2026-10").click()
    expect(page.get_by_role("status").filter(has_text="reissued as version 2")).to_be_visible()
    expect(page.locator("#versions").get_by_role("row").filter(has_text="superseded")
           ).to_be_visible()


def test_a_clerk_records_a_back_dated_correction_on_the_users_page(
        page: Page, engine: Engine, live_server: LiveServer,  # noqa: F811
        database_url: str) -> None:
    """Issue 17, item 12: the form on the user's page; refusals stay next to their field
    with what was typed; post/redirect/get, so reloading repeats nothing."""
    from sqlalchemy import func, select

    from connector.commands import UserFields
    from connector.models import Event
    from connector.status import Source

    rename_tenant(engine, live_server.tenant_id, "Fabrikam")
    make_web_admin(engine, "clerk@partner.example")
    set_created(engine, live_server.tenant_id, "2026-09-01T00:00:00")
    h = History(engine, tenant_id=live_server.tenant_id)
    with h.directory("2026-09-02T10:00:00", Source.ADMIN) as d:
        user_id = d.create_user(UserFields(user_name="bram@fabrikam.example",
                                           modules=("Hybrid",))).id

    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("clerk@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"/admin/tenants/{live_server.tenant_id}/users/{user_id}")
    form = page.locator("#correction")
    form.get_by_label("What").select_option("status")
    form.get_by_label("Status", exact=True).select_option("inactive")
    form.get_by_label("Effective from (UTC)").fill("2999-10-28T00:00:00")
    form.get_by_label("Reason").fill("left on the 28th; the IdP sync was down")
    form.get_by_role("button", name="Record the correction").click()
    expect(page.locator("#correction-effectiveAt-error")).to_contain_text("not in the past")
    expect(form.get_by_label("Reason")).to_have_value("left on the 28th; the IdP sync was down")
    page.reload()  # a GET: the refusal was shown once, nothing was recorded
    expect(page.locator("#correction-effectiveAt-error")).to_have_count(0)

    form.get_by_label("Effective from (UTC)").fill("2026-10-28T00:00:00")
    form.get_by_role("button", name="Record the correction").click()
    expect(page.locator("#correction-reason-error")).to_contain_text("needs its reason")
    expect(form.get_by_label("Effective from (UTC)")).to_have_value("2026-10-28T00:00")

    form.get_by_label("Reason").fill("left on the 28th; the IdP sync was down")
    form.get_by_role("button", name="Record the correction").click()
    expect(page.get_by_role("status").filter(has_text="Correction recorded")).to_be_visible()
    expect(page.locator("h1 .badge")).to_have_text("inactive")
    row = page.locator("table.history tbody tr").filter(has_text="the IdP sync was down")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("2026-10-28 00:00 UTC")
    page.reload()
    expect(page.locator("table.history tbody tr").filter(
        has_text="the IdP sync was down")).to_have_count(1)
    with make_sessionmaker(engine)() as s:
        assert s.scalar(select(func.count()).select_from(Event).where(
            Event.reason.is_not(None))) == 1
    screenshot(page, "user-correction", database_url)


def test_a_partner_gives_a_trial_by_its_start_and_marks_an_external_guest(
        page: Page, engine: Engine, live_server: LiveServer,  # noqa: F811
        database_url: str) -> None:
    """Issue 17, item 13, in the browser; each POST answers with a redirect, so
    reloading repeats nothing."""
    from sqlalchemy import func, select

    from connector.models import Event

    rename_tenant(engine, live_server.tenant_id, "Fabrikam")
    make_web_admin(engine, "maria.jansen@partner.example")
    h = History(engine, tenant_id=live_server.tenant_id)
    user_id = h.create("2026-09-02T10:00:00", "guest@contoso.example", guest=True)

    page.goto("/admin/sign-in")
    page.get_by_label("E-mail").fill("maria.jansen@partner.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"/admin/tenants/{live_server.tenant_id}/billing")
    page.get_by_label("Or: trial starts on").fill("2026-10-03")
    page.get_by_role("button", name="Save billing info").click()
    expect(page.get_by_role("status").filter(has_text="Billing info saved")).to_be_visible()
    expect(page.get_by_label("Trial ends on (last free day)")).to_have_value("2026-11-01")
    expect(page.get_by_label("Or: trial starts on")).to_have_value("")
    page.reload()
    expect(page.get_by_label("Trial ends on (last free day)")).to_have_value("2026-11-01")

    page.goto(f"/admin/tenants/{live_server.tenant_id}/users/{user_id}")
    page.get_by_label("Guest from another company (multi-company group)").check()
    page.get_by_role("button", name="Save flags").click()
    expect(page.get_by_role("status").filter(has_text="flags saved")).to_be_visible()
    expect(page.get_by_label("Guest from another company (multi-company group)")).to_be_checked()
    page.reload()
    with make_sessionmaker(engine)() as s:
        assert s.scalar(select(func.count()).select_from(Event).where(
            Event.kind == "user.external_guest")) == 1
