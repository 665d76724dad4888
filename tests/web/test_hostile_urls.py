"""Numbers in addresses and forms that are not what they seem: "²" (a digit to
`str.isdigit()`, not to `int()`) and ids past what a BIGINT holds. Each is the surface's
400 or 404, never a 500 (the admin UI and the admin API, on SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyotp
import pytest
from flask import Flask
from sqlalchemy import Engine

from connector import admins
from connector.config import AzureSyncSettings, Settings
from connector.models import AdminAccount
from tests.support.clients import ApiClient, ScimClient
from tests.support.webhooks import receiving_settings
from tests.web.conftest import WebSession, scim_user, signed_in

SUPERSCRIPT = "²"  # "²".isdigit() is True; int("²") raises ValueError
HUGE_ID = "99999999999999999999999"  # over 2**63 - 1


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return receiving_settings(database_url, tmp_path)  # a key, so webhooks can be added


def test_odd_numbers_in_the_admin_uis_addresses_are_refused_plainly(
        partner_web: WebSession, tenant_admin: ApiClient, scim: ScimClient) -> None:
    tenant = f"/admin/tenants/{scim.tenant_id}"
    made = tenant_admin.post(f"/tenants/{scim.tenant_id}/webhooks",
                             {"url": "https://example.com/hook"})
    assert made.status_code == 201, made.json
    webhook = made.json["id"]
    answers = {
        f"{tenant}/audit?page={SUPERSCRIPT}": 400,
        f"/admin/audit?page={SUPERSCRIPT}": 400,
        f"{tenant}/entra/runs?page={SUPERSCRIPT}": 400,
        f"{tenant}/webhooks/{webhook}?before={SUPERSCRIPT}": 303,  # said on the page
        f"{tenant}/provisioning-log/{SUPERSCRIPT}": 404,
        f"{tenant}/provisioning-log/{HUGE_ID}": 404,
        f"{tenant}/entra/runs/{HUGE_ID}": 404,
        f"{tenant}/webhooks/{webhook}/attempts/{HUGE_ID}": 404,
    }
    for path, status in answers.items():
        assert partner_web.get(path).status_code == status, path
    # A filter the list cannot use: said after a redirect, as every refused filter.
    refused = partner_web.get(f"{tenant}/provisioning-log?run={SUPERSCRIPT}")
    assert refused.status_code == 303
    assert "run must be a sync run" in partner_web.page(refused.location)
    assert partner_web.get(f"{tenant}/provisioning-log?run={HUGE_ID}").status_code == 303
    assert partner_web.post(f"{tenant}/entra/runs/{HUGE_ID}/approve").status_code == 404


def test_a_correction_with_an_odd_deskless_percentage_is_refused_with_its_field(
        partner_web: WebSession, scim: ScimClient) -> None:
    user = scim_user(scim, "Ada", "Lovelace")["id"]
    page = f"/admin/tenants/{scim.tenant_id}/users/{user}"
    partner_web.page(page)
    response = partner_web.post(f"{page}/corrections", {
        "kind": "frontline", "desklessPercent": SUPERSCRIPT, "frontlineRole": "backstage",
        "effective_at": "2026-01-01T00:00", "reason": "typo"})
    assert "desklessPercent must be a whole number" in partner_web.follow(response)


def test_odd_numbers_in_the_admin_apis_addresses_are_problems(
        partner: ApiClient, scim: ScimClient) -> None:
    tenant = f"/tenants/{scim.tenant_id}"
    answers = {
        f"{tenant}/provisioning-log/{SUPERSCRIPT}": 404,
        f"{tenant}/provisioning-log/{HUGE_ID}": 404,
        f"{tenant}/provisioning-log?run={SUPERSCRIPT}": 400,
        f"{tenant}/provisioning-log?run={HUGE_ID}": 400,
        f"{tenant}/entra/runs/{HUGE_ID}": 404,
        f"{tenant}/audit?page={SUPERSCRIPT}": 400,
    }
    for path, status in answers.items():
        response = partner.get(path)
        assert response.status_code == status, path
        assert response.mimetype == "application/problem+json", path
    assert partner.post(f"{tenant}/entra/runs/{HUGE_ID}/approve").status_code == 404


@pytest.mark.parametrize("code", [SUPERSCRIPT * 6, "١٢٣٤٥٦"])
def test_a_second_factor_of_other_digits_is_a_wrong_code(code: str) -> None:
    """Typed as the authenticator's code, "²²²²²²" reached hmac.compare_digest, which
    refuses text outside ASCII (a 500 at sign-in); Arabic-Indic digits too."""
    account = AdminAccount(totp_secret=pyotp.random_base32(), totp_last_step=None,
                           recovery_codes=[])
    with pytest.raises(admins.BadCredentials):
        admins.check_second_factor(account, code, dt.datetime.now(dt.UTC),
                                   AzureSyncSettings())


def test_setting_up_two_factor_with_other_digits_says_the_code_is_wrong(
        app: Flask, engine: Engine) -> None:
    """The account page's confirm form compared what was typed with hmac.compare_digest
    too: "²²²²²²" was a 500 there."""
    web = signed_in(app, engine, "two@example.com")
    web.page("/admin/account")
    web.follow(web.post("/admin/account/two-factor/start"))
    refused = web.post("/admin/account/two-factor/confirm", {"code": SUPERSCRIPT * 6})
    assert "That code is not right" in web.follow(refused)
