"""The Billing pages over HTTP (form posts with CSRF, refusals as flash messages)."""

from __future__ import annotations

import datetime as dt
import re
from html import unescape

import pytest
from flask import Flask
from sqlalchemy import Engine

from billing import overview, pages
from billing.calendar import Month
from billing.close import close_month
from connector.config import BillingSettings
from connector.models import Tenant
from tests.billing.history import History
from tests.support.clients import ApiClient
from tests.web.conftest import WebSession, signed_in


@pytest.fixture
def partner_web(app: Flask, engine: Engine) -> WebSession:
    return signed_in(app, engine, "partner@example.com")


def test_a_large_tenant_computes_the_running_month_on_request(
        partner_web: WebSession, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    h = History(engine)
    h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
    url = f"/admin/tenants/{h.tenant_id}/billing"
    assert "Billable as of now" in partner_web.page(url)
    monkeypatch.setattr(pages, "PREVIEW_INLINE_USERS", 1)
    large = partner_web.page(url)
    assert "Billable as of now" not in large and "Compute this month so far" in large
    assert "Billable as of now" in partner_web.page(url + "?preview=1")


def test_prices_typed_wrong_are_refused_and_nothing_changes(
        partner_web: WebSession, engine: Engine) -> None:
    h = History(engine)
    url = f"/admin/tenants/{h.tenant_id}/billing"
    partner_web.page(url)
    refused = partner_web.post(url, {"company_name": "Acme", "policy": "active_with_module",
                                     "time_zone": "Mars/Olympus",
                                     "prices": "Hybrid standard 4.50\nEngage, standard, 2"})
    assert refused.status_code == 303
    shown = unescape(partner_web.page(url))
    # Every error next to its field, in the label's words; what was typed stays.
    assert "2 fields need a change" in shown
    assert re.search(r'id="prices-error"[^>]*>Price line 1 does not read unit, plan, price',
                     shown)
    assert re.search(r"id=\"time_zone-error\"[^>]*>The time zone must be an IANA time zone"
                     r"[^<]*'Mars/Olympus' is not one", shown)
    assert "time_zone must" not in shown
    assert 'value="Acme"' in shown and 'value="Mars/Olympus"' in shown
    assert "Hybrid standard 4.50\nEngage, standard, 2" in shown
    reload = partner_web.page(url)  # nothing was saved, and the refusal is said once
    assert 'value="Acme"' not in reload and "field-error" not in reload
    saved = partner_web.post(url, {"company_name": "Acme", "policy": "active_with_module",
                                   "time_zone": "Europe/Amsterdam",
                                   "prices": "Hybrid, standard, 4.50"})
    assert saved.status_code == 303
    shown = partner_web.page(url)
    assert 'value="Acme"' in shown and "Hybrid, standard, 4.50" in shown


def test_a_price_for_a_module_that_does_not_exist_is_refused_in_the_form(
        partner_web: WebSession, engine: Engine) -> None:
    h = History(engine)
    url = f"/admin/tenants/{h.tenant_id}/billing"
    partner_web.page(url)
    typed = "Hybrid, standard, 4.50\nHybird, frontline, 2"
    refused = partner_web.post(url, {"company_name": "Acme", "policy": "active_with_module",
                                     "time_zone": "UTC", "prices": typed})
    assert refused.status_code == 303
    shown = unescape(partner_web.page(url))
    assert re.search(r'id="prices-error"[^>]*>\'Hybird\' is neither "user" nor a module of '
                     r"this tenant's catalogue[^<]*Price one of: user, Engage, Hybrid, Unify\.",
                     shown), shown
    assert typed in shown and 'value="Acme"' in shown  # what was typed stays
    reload = partner_web.page(url)
    assert 'value="Acme"' not in reload and "4.50" not in reload  # nothing was saved


def test_a_month_that_ended_unclosed_is_said_to_be_not_closed_yet(
        partner_web: WebSession, engine: Engine) -> None:
    """A clerk looking at the page while last month waits for its close (the collection
    window, an Entra round, the close job down) saw this month "so far" and the older
    closed months, and nothing at all about last month."""
    now = dt.datetime.now(dt.UTC)
    this = Month.containing(now, "UTC")
    last, before, first = this.previous(), this.previous().previous(), \
        this.previous().previous().previous()
    h = History(engine, created=f"{first}-01T00:00:00")
    h.create(f"{first}-02T10:00:00", "a@x.io", modules=("Hybrid",))
    close_month(h.maker, h.tenant_id, before, BillingSettings(),
                before.end("UTC") + dt.timedelta(hours=2))
    shown = partner_web.page(f"/admin/tenants/{h.tenant_id}/billing")
    awaiting = re.search(r'<table id="awaiting">.*?</table>', shown, re.S)
    assert awaiting, "no table of the months not closed yet"
    rows = re.findall(r'<th scope="row">(\d{4}-\d\d)</th><td><span class="badge paused">'
                      r"not closed yet</span></td><td>([^<]+)</td>", awaiting.group(0))
    assert [month for month, _ in rows] == [str(last), str(first)]
    assert all("closes it on its next pass" in why for _, why in rows)
    history = re.search(r'<table id="history">.*?</table>', shown, re.S)
    assert history and re.findall(r"/billing/months/(\d{4}-\d\d)", history.group(0)) == [
        str(before)]


def test_within_the_collection_window_last_month_says_when_it_closes(engine: Engine) -> None:
    h = History(engine, created="2026-09-01T00:00:00", time_zone="Europe/Amsterdam")
    settings = BillingSettings()
    with h.maker() as s:
        tenant = s.get(Tenant, h.tenant_id)
        assert tenant is not None
        boundary = Month(2026, 11).end("Europe/Amsterdam")  # 2026-11-30T23:00Z
        waiting = overview.months_awaiting_close(
            s, tenant, settings, boundary + dt.timedelta(minutes=10), [])
        assert [m for m, _ in waiting] == ["2026-11", "2026-10", "2026-09"]
        assert "after its collection window, at 2026-12-01T00:00:00+00:00" in waiting[0][1]
        assert overview.months_awaiting_close(
            s, tenant, settings, boundary - dt.timedelta(minutes=1), []
        )[0][0] == "2026-10"  # November is still running
        tenant.closed_at = Month(2026, 9).start("Europe/Amsterdam") + dt.timedelta(days=3)
        assert [m for m, _ in overview.months_awaiting_close(
            s, tenant, settings, boundary + dt.timedelta(hours=2), [])] == ["2026-09"]


def test_the_invoice_page_shows_the_billing_info_and_the_month_on_the_tenants_clock(
        partner_web: WebSession, engine: Engine) -> None:
    """PRODUCT.md: the invoice shows company name, reference number, customer type and
    industry (the page left the last two out); and a month of a tenant in Amsterdam
    read "2026-10-31 23:00 UTC to 2026-11-30 23:00 UTC", as if it began in October."""
    h = History(engine, created="2026-10-01T00:00:00", time_zone="Europe/Amsterdam")
    h.billing(company_name="Fabrikam B.V.", reference_number="R-7",
              customer_type="enterprise", industry="logistics")
    h.create("2026-10-02T10:00:00", "a@x.io", modules=("Hybrid",))
    close_month(h.maker, h.tenant_id, Month(2026, 11), BillingSettings(),
                Month(2026, 11).end("Europe/Amsterdam") + dt.timedelta(hours=2))
    shown = partner_web.page(f"/admin/tenants/{h.tenant_id}/billing/months/2026-11")
    assert re.search(r'id="invoice-customer-type">enterprise<', shown)
    assert re.search(r'id="invoice-industry">logistics<', shown)
    month = re.search(r'<dd id="invoice-month">(.*?)</dd>', shown, re.S)
    assert month
    words = " ".join(re.sub(r"<[^>]+>", " ", month.group(1)).split())
    assert words.startswith("2026-11-01 00:00 to 2026-12-01 00:00 (Europe/Amsterdam time) "
                            "2026-10-31 23:00 UTC to 2026-11-30 23:00 UTC"), words


def test_a_reissued_months_earlier_version_stays_readable(
        app: Flask, partner: ApiClient, engine: Engine) -> None:
    """Reissuing said "version 1 stays readable below", but the page, the API and the
    downloads only ever showed the standing version: what was invoiced first could not
    be read back. `?version=N` now reads any version."""
    h = History(engine, created="2026-10-01T00:00:00")
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "4.00"}])
    h.create("2026-10-02T10:00:00", "a@x.io", modules=("Hybrid",))
    settings, closed_at = BillingSettings(), Month(2026, 10).end("UTC") + dt.timedelta(hours=2)
    close_month(h.maker, h.tenant_id, Month(2026, 10), settings, closed_at)
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"}])
    close_month(h.maker, h.tenant_id, Month(2026, 10), settings, closed_at,
                reissue_reason="price was wrong")
    url = f"/admin/tenants/{h.tenant_id}/billing/months/2026-10"
    partner_web = signed_in(app, engine, "clerk@partner.example")

    standing = partner_web.page(url)
    assert re.search(r'id="invoice-total">5.00<', standing)
    assert 'id="reissue"' in standing and 'id="superseded"' not in standing
    assert f'href="{url}?version=1"' in standing
    first = partner_web.page(f"{url}?version=1")
    assert re.search(r'id="invoice-total">4.00<', first)
    assert 'id="superseded"' in first and 'id="reissue"' not in first
    assert '<input type="hidden" name="version" value="1">' in first  # the lines' filter
    api = f"/tenants/{h.tenant_id}/billing/months/2026-10"
    assert f'href="/api/v1{api}/invoice.csv?version=1"' in first
    assert partner_web.get(f"{url}?version=3").status_code == 404
    # A filter the page does not understand is refused, not read as "everyone".
    refused = partner_web.get(f"{url}?billable=maybe")
    assert refused.status_code == 400
    assert "billable must be true, false or empty" in unescape(refused.get_data(as_text=True))
    assert partner_web.get(f"{url}?version=x").status_code == 404

    assert partner.get(f"{api}?version=1").json["invoice"]["total"] == "4.00"
    assert partner.get(api).json["invoice"]["total"] == "5.00"
    assert partner.get(f"{api}/lines?version=1").json["total"] == 1
    invoice = partner.get(f"{api}/invoice.csv?version=1")
    assert "\ntotal,4.00" in invoice.get_data(as_text=True)
    assert "2026-10.csv" in invoice.headers["Content-Disposition"]  # v1: no suffix
    missing = partner.get(f"{api}/invoice.csv?version=3")
    assert missing.status_code == 404 and "has no version '3'" in missing.json["detail"]
