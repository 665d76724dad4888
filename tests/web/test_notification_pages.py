"""The notification pages without a browser: who sees which notice, the opt-out form's
post/redirect/get and its refusal, and a held round said once (by the Entra banner)."""

from __future__ import annotations

import datetime as dt

from flask import Flask
from sqlalchemy import Engine

from connector import notify
from connector.db import make_sessionmaker
from tests.support.clients import make_tenant
from tests.web.conftest import WebSession, signed_in


def raise_(engine: Engine, tenant_id: str, kind: str, key: str = "") -> None:
    with make_sessionmaker(engine)() as s:
        notify.raise_condition(s, tenant_id, kind, f"{kind} detail", dt.datetime.now(dt.UTC),
                               key)
        s.commit()


def test_a_tenant_admin_sees_only_its_own_tenants_notices(app: Flask, engine: Engine) -> None:
    mine, _ = make_tenant(engine, "Mine")
    theirs, _ = make_tenant(engine, "Theirs")
    raise_(engine, mine, "scim_errors")
    raise_(engine, theirs, "month_close_failed", "2026-11")
    web = signed_in(app, engine, "ta@mine.example", "tenant", mine)
    html = web.page("/admin/notifications")
    assert "scim_errors detail" in html and "month_close_failed detail" not in html
    users = web.page(f"/admin/tenants/{mine}/users")
    assert 'id="notice-count">1 raised' in users and 'id="notice-banner"' in users
    partner = signed_in(app, engine, "p@partner.example")
    assert 'id="notice-count">2 raised' in partner.page("/admin/tenants")


def test_a_held_round_is_not_said_twice_on_the_tenant_pages(partner_web: WebSession,
                                                            engine: Engine) -> None:
    tenant_id, _ = make_tenant(engine, "Held")
    raise_(engine, tenant_id, "round_held", "7")
    html = partner_web.page(f"/admin/tenants/{tenant_id}/users")
    assert 'id="notice-banner"' not in html  # Entra sync's own banner says it
    assert 'id="notice-count">1 raised' in html


def test_the_opt_out_form_saves_and_refuses_an_unknown_kind(partner_web: WebSession) -> None:
    partner_web.page("/admin/account")
    answer = partner_web.post("/admin/account/notifications",
                              {"opt_out": ["scim_errors", "round_held"]})
    html = partner_web.follow(answer)
    assert "no e-mail about 2 kind(s)" in html
    assert 'value="scim_errors" checked' in html and 'value="quarantined" checked' not in html
    refused = partner_web.post("/admin/account/notifications", {"opt_out": ["everything"]})
    html = partner_web.follow(refused)
    assert "Unknown notification kind" in html
    assert 'value="scim_errors" checked' in html  # unchanged
    cleared = partner_web.follow(partner_web.post("/admin/account/notifications", {}))
    assert "every notification" in cleared and "checked" not in cleared.split(
        'id="notification-preferences"')[1]


def test_failing_rounds_are_noted_until_the_quarantine_banner_says_it(
        partner_web: WebSession, engine: Engine) -> None:
    tenant_id, _ = make_tenant(engine, "Failing")
    raise_(engine, tenant_id, "rounds_failing")
    assert "rounds_failing detail" in partner_web.page(f"/admin/tenants/{tenant_id}/users")
    raise_(engine, tenant_id, "quarantined")
    assert "rounds_failing detail" not in partner_web.page(f"/admin/tenants/{tenant_id}/users")
