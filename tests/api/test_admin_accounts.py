"""Admin accounts in the admin API (issue 17): partner admins list, invite, disable,
enable and reset accounts; password changes are throttled like sign-ins; two-factor
sign-in, when required, holds back API tokens of accounts that have not set it up. Every
answer is checked against the OpenAPI contract (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from connector import admins
from connector.db import make_sessionmaker
from tests.api.contract import check_response
from tests.support.clients import API, PASSWORD, ApiClient, ScimClient, make_admin
from tests.web.conftest import audit_actions


def call(client: ApiClient, method: str, path: str, body: Any = None) -> Any:
    response = client.request(method, path, body)
    check_response(method, API + path, response)
    return response


def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.json["type"] == f"urn:connector:problem:{slug}"
    return response.json  # type: ignore[no-any-return]


def test_partner_admins_manage_accounts(partner: ApiClient, tenant_admin: ApiClient,
                                        scim: ScimClient, client: FlaskClient,
                                        engine: Engine) -> None:
    created = call(partner, "POST", "/admins", {"email": "ops@example.com",
                                                "role": "tenant", "tenantId": scim.tenant_id})
    assert created.status_code == 201
    body = created.json
    assert body["oneTimePassword"] and body["twoFactor"] is False
    expires = dt.datetime.fromisoformat(body["oneTimePasswordExpires"])
    assert dt.timedelta(hours=23) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=24)
    admin_id = body["id"]
    assert call(partner, "GET", f"/admins/{admin_id}").json["email"] == "ops@example.com"
    listed = call(partner, "GET", "/admins").json["items"]
    assert {a["email"] for a in listed} >= {"ops@example.com", partner.email}

    ta_id = tenant_admin.admin_id
    disabled = call(partner, "POST", f"/admins/{ta_id}/disable")
    assert disabled.status_code == 200 and disabled.json["disabled"]
    problem(tenant_admin.get("/me"), 401, "unauthorized")
    enabled = call(partner, "POST", f"/admins/{ta_id}/enable")
    assert enabled.json["disabled"] is None
    assert tenant_admin.get("/me").status_code == 200

    reset = call(partner, "POST", f"/admins/{ta_id}/reset-password")
    assert reset.status_code == 200 and reset.json["oneTimePassword"]
    assert reset.json["mustChangePassword"] is True
    problem(tenant_admin.get("/me"), 401, "unauthorized")  # its tokens are revoked

    problem(call(partner, "POST", f"/admins/{ta_id}/reset-two-factor"), 409,
            "state-conflict")
    problem(call(partner, "POST", f"/admins/{partner.admin_id}/disable"), 409,
            "state-conflict")
    problem(call(partner, "POST", f"/admins/{partner.admin_id}/reset-password"), 409,
            "state-conflict")
    problem(call(partner, "POST", "/admins/00000000-0000-0000-0000-000000000000/disable"),
            404, "not-found")
    actions = audit_actions(engine)
    for action in ("admin.created", "admin.disabled", "admin.enabled",
                   "admin.password_reset"):
        assert action in actions


def test_accounts_are_paged_and_searched(partner: ApiClient, tenant_admin: ApiClient,
                                         scim: ScimClient) -> None:
    """In e-mail order, a page at a time; q is part of the address in any case; role and
    tenantId filter; wrong arguments are 400s naming the argument."""
    for email in ("Ops.North@Example.com", "ops.south@example.com", "billing@example.com"):
        assert call(partner, "POST", "/admins", {
            "email": email, "role": "tenant", "tenantId": scim.tenant_id}).status_code == 201
    listed = call(partner, "GET", "/admins").json
    emails = [a["email"] for a in listed["items"]]
    assert emails == sorted(emails, key=str.lower) and listed["total"] == len(emails) == 5
    second = call(partner, "GET", "/admins?per_page=2&page=2").json
    assert [a["email"] for a in second["items"]] == emails[2:4] and second["pages"] == 3
    found = call(partner, "GET", "/admins?q=OPS.").json["items"]
    assert sorted(a["email"] for a in found) == ["Ops.North@Example.com",
                                                 "ops.south@example.com"]
    assert call(partner, "GET", "/admins?q=_").json["items"] == []  # no LIKE wildcard
    partners = call(partner, "GET", "/admins?role=partner").json["items"]
    assert [a["email"] for a in partners] == [partner.email]
    mine = call(partner, "GET", f"/admins?tenantId={scim.tenant_id}").json
    assert mine["total"] == 4 and partner.email not in {a["email"] for a in mine["items"]}
    for query, word in (("role=owner", "role"), ("page=0", "page"), ("per_page=500", "per_page"),
                        (f"q={'x' * 321}", "q")):
        assert word in problem(call(partner, "GET", f"/admins?{query}"), 400,
                               "invalid-request")["detail"]
    problem(tenant_admin.get("/admins?q=ops"), 403, "forbidden")


def test_tenant_admins_may_not_manage_accounts(partner: ApiClient,
                                               tenant_admin: ApiClient) -> None:
    for path in (f"/admins/{partner.admin_id}/disable", f"/admins/{partner.admin_id}/enable",
                 f"/admins/{partner.admin_id}/reset-password",
                 f"/admins/{partner.admin_id}/reset-two-factor"):
        problem(call(tenant_admin, "POST", path), 403, "forbidden")
    problem(call(tenant_admin, "GET", f"/admins/{partner.admin_id}"), 403, "forbidden")
    assert partner.get("/me").status_code == 200


def test_common_passwords_are_refused_with_the_reason(partner: ApiClient) -> None:
    for weak, why in (("password1234", "too easy to guess"),
                      ("qwertyuiop123", "too easy to guess"),
                      ("aaaaaaaaaaaaaaaa", "too easy to guess"),
                      ("partner@example.com-2026", "e-mail address")):
        refused = call(partner, "POST", "/me/password", {"currentPassword": PASSWORD,
                                                         "newPassword": weak})
        assert why in problem(refused, 400, "invalid-request")["detail"], weak
    long = "plum orbit canvas 42 lantern " * 30  # longer than zxcvbn takes: checked in part
    assert call(partner, "POST", "/me/password", {
        "currentPassword": PASSWORD, "newPassword": long}).status_code == 204


def _browser(app: Flask, engine: Engine, email: str) -> FlaskClient:
    """A client signed in with a session cookie, as a browser is."""
    with make_sessionmaker(engine)() as s:
        account = admins.find_admin(s, email)
        assert account is not None
        sid = admins.start_session(s, account, dt.datetime.now(dt.UTC),
                                   dt.timedelta(hours=1))
        s.commit()
        admin_id, epoch = account.id, account.session_epoch
    browser = app.test_client()
    with browser.session_transaction() as sess:
        sess.update(admin_id=admin_id, epoch=epoch, sid=sid, csrf="csrf",
                    issued=int(time.time()))
    return browser


def test_password_guesses_through_a_session_are_throttled_and_end_it(
        app: Flask, engine: Engine, partner: ApiClient) -> None:
    stolen = _browser(app, engine, partner.email)
    other = _browser(app, engine, partner.email)
    headers = {"X-CSRF-Token": "csrf"}
    guess = {"currentPassword": "a guess at it", "newPassword": "plum orbit canvas 42 lantern"}
    for _ in range(4):
        response = stolen.post(API + "/me/password", json=guess, headers=headers)
        check_response("POST", API + "/me/password", response)
        assert "current password" in problem(response, 400, "invalid-request")["detail"]
    response = stolen.post(API + "/me/password", json=guess, headers=headers)
    check_response("POST", API + "/me/password", response)
    assert "signed out" in problem(response, 429, "too-many-failed-logins")["detail"]
    assert int(response.headers["Retry-After"]) > 0
    problem(stolen.get(API + "/me"), 401, "unauthorized")
    problem(other.get(API + "/me"), 401, "unauthorized")
    # Even the right password is not tried now, from a token either, until the window ends.
    right = {"currentPassword": PASSWORD, "newPassword": "plum orbit canvas 42 lantern"}
    problem(partner.post("/me/password", right), 429, "too-many-failed-logins")
    assert audit_actions(engine).count("password.failed") == 5


def test_required_two_factor_holds_back_tokens_until_set_up(app: Flask, engine: Engine,
                                                            client: FlaskClient) -> None:
    settings = app.config["SETTINGS"]
    app.config["SETTINGS"] = dataclasses.replace(settings, admin=dataclasses.replace(
        settings.admin, require_two_factor_for_partner_admins=True))
    _, token = make_admin(engine, "p2@example.com")
    api = ApiClient(client, token, "", "p2@example.com")
    assert "set it up" in problem(api.get("/me"), 401, "unauthorized")["detail"]
    browser = _browser(app, engine, "p2@example.com")
    assert browser.get(API + "/me").status_code == 200
    problem(browser.get(API + "/tenants"), 403, "two-factor-required")
    with make_sessionmaker(engine)() as s:
        account = admins.find_admin(s, "p2@example.com")
        assert account is not None
        keys = app.config["SETTINGS"].azure_sync
        secret = admins.start_two_factor(account, keys)
        import pyotp
        admins.confirm_two_factor(account, pyotp.TOTP(secret).now(), dt.datetime.now(dt.UTC),
                                  keys)
        s.commit()
    assert api.get("/me").json["twoFactor"] is True
    assert api.get("/tenants").status_code == 200
