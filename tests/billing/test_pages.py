"""The Billing pages over HTTP (form posts with CSRF, refusals as flash messages)."""

from __future__ import annotations

import re
from html import unescape

import pytest
from flask import Flask
from sqlalchemy import Engine

from billing import pages
from tests.billing.history import History
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
