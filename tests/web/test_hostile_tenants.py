"""A tenant admin of one tenant trying everything of another (issue: security audit),
on the admin UI (a signed-in browser, with a valid CSRF token) and the admin API (its
personal API token), on SQLite and PostgreSQL.

Every address of the app that names a tenant is tried, with every method it takes:
- with the other tenant's id and the ids of that tenant's objects (users, groups,
  provisioning log entries, sync runs, webhook endpoints and their delivery attempts,
  closed billing months): the same 404 as for a tenant that does not exist;
- with its own tenant's id and the other tenant's object ids: 404 too.
The other tenant's rows are compared before and after: nothing changed. Partner-only
addresses (no tenant in them) answer a tenant admin 403 or 404 and show nothing of the
other tenant.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select
from werkzeug.routing import Rule

from connector.config import Settings
from connector.db import make_sessionmaker
from connector.models import AuditEntry, Base, SyncRun, WebhookAttempt, WebhookEndpoint
from tests.billing.test_api import closed_history
from tests.fakes.receiver import Receiver
from tests.support.clients import ApiClient, ScimClient, make_admin
from tests.support.routes import path_of, rules
from tests.support.webhooks import receiving_settings
from tests.web.conftest import WebSession, scim_group, scim_user, signed_in

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
OBJECT_IDS = ("user_id", "group_id", "entry_id", "run_id", "endpoint_id", "attempt_id")
# Addresses without a tenant that every admin may open: its own account and tokens,
# its own notifications, its own tenant's list, the API's contract, signing in and out.
OWN = re.compile(r"^/(admin/(account|notifications|sign-|static|tenants$|$)|api/v1/(me|"
                 r"notifications|openapi\.json|tenants$))|^/$")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return receiving_settings(database_url, tmp_path)  # a key, so webhooks can be added


def _theirs(engine: Engine, partner: ApiClient, receiver: Receiver) -> dict[str, Any]:
    """Another tenant with one of everything: its id, its objects' ids, and its name."""
    h = closed_history(engine)
    tenant = h.tenant_id
    assert partner.patch(f"/tenants/{tenant}", {"name": "Zyxwvu Corp"}).status_code == 200
    assert partner.post(f"/tenants/{tenant}/billing/months/2026-10/close").status_code == 201
    token = partner.post(f"/tenants/{tenant}/scim-token").json["scimToken"]
    scim = ScimClient(partner.client, token, tenant)
    user = scim_user(scim, "Qqsecret", "Person")["id"]
    group = scim_group(scim, "Qqsecret Group", [user])["id"]
    entry = partner.get(f"/tenants/{tenant}/provisioning-log").json["items"][0]["id"]
    endpoint = partner.post(f"/tenants/{tenant}/webhooks", {"url": receiver.url}).json["id"]
    assert partner.post(f"/tenants/{tenant}/webhooks/{endpoint}/ping").status_code < 300
    with make_sessionmaker(engine)() as s:
        attempt = s.scalar(select(WebhookAttempt.id)
                           .where(WebhookAttempt.endpoint_id == endpoint))
        run = SyncRun(tenant_id=tenant, kind="full", status="awaiting_approval",
                      trigger="manual", started_at=dt.datetime.now(dt.UTC), counts={})
        s.add(run)
        s.commit()
        run_id = run.id
    assert attempt is not None
    return {"tenant_id": tenant, "user_id": user, "group_id": group, "entry_id": entry,
            "run_id": run_id, "endpoint_id": endpoint, "attempt_id": attempt,
            "month": "2026-10", "module": "Hybrid", "decision": "approve",
            "token_id": "x", "admin_id": "x", "key_id": "x", "filename": "admin.css"}


def _rows_of(engine: Engine, tenant_id: str) -> list[Any]:
    """Every row of the tenant, and every audit line about it: what a change would touch."""
    rows: list[Any] = []
    with make_sessionmaker(engine)() as s:
        for table in Base.metadata.sorted_tables:
            if "tenant_id" in table.c and table.name != "audit_log":
                rows.extend((table.name, *r) for r in s.execute(
                    select(table).where(table.c.tenant_id == tenant_id)))
        endpoints = select(WebhookEndpoint.id).where(WebhookEndpoint.tenant_id == tenant_id)
        rows.extend(s.execute(select(WebhookAttempt.__table__).where(
            WebhookAttempt.endpoint_id.in_(endpoints))))
        rows.extend(s.scalars(select(AuditEntry.action).where(AuditEntry.tenant_id == tenant_id)))
    return sorted(map(repr, rows))


# Bodies that pass each action's own checks, so that what answers is the check of whose
# object it is (a body refused first would prove nothing).
API_BODIES: dict[str, Any] = {
    "api.set_status": {"status": "inactive"}, "api.patch_user": {"guest": True},
    "api.set_group_modules": {"modules": ["Hybrid"]},
    "api.patch_settings": {"provisioningPaused": True}, "api.rename_tenant": {"name": "Mine"},
    "api.billing.put_billing": {"companyName": "Mallory"},
    "api.create_user": {"userName": "mallory@x.io"}, "api.add_module": {"name": "Evil"},
    "api.rename_module": {"name": "Evil"},
    "api.tenant_webhooks_create": {"url": "https://example.com/hook"},
    "api.tenant_webhooks_update": {"description": "mine now"},
    "api.partner_webhooks_create": {"url": "https://example.com/hook"},
    "api.partner_webhooks_update": {"description": "mine now"},
    "api.create_tenant": {"name": "Mine"}, "api.reporting_keys.create_key": {"name": "Mine"},
}
FORM = {"status": "inactive", "modules": "Hybrid", "name": "Mine", "guest": "on",
        "provisioning_paused": "true", "url": "https://example.com/hook", "confirm": "yes",
        "reason": "mine", "company_name": "Mallory", "description": "mine now"}
MARKS = re.compile("Zyxwvu|Qqsecret")
NOWHERE = "00000000-0000-4000-8000-000000000000"


class Caller:
    """A tenant admin on both surfaces: its browser session for /admin, its token for
    /api/v1."""

    def __init__(self, web: WebSession, api: ApiClient):
        self.web, self.api = web, api

    def call(self, rule: Rule, method: str, path: str) -> Any:
        if path.startswith("/api/v1/"):
            body = None if method in ("GET", "DELETE") else API_BODIES.get(rule.endpoint, {})
            return self.api.request(method, path.removeprefix("/api/v1"), body)
        if method == "GET":
            return self.web.client.get(path)
        return self.web.client.open(path, method=method,
                                    data={**FORM, "csrf_token": self.web.csrf})


@pytest.fixture
def attacker(app: Flask, engine: Engine, scim: ScimClient) -> Caller:
    web = signed_in(app, engine, "mallory@example.com", "tenant", scim.tenant_id)
    web.page(f"/admin/tenants/{scim.tenant_id}/users")  # its CSRF token
    admin_id, token = make_admin(engine, "mallory-api@example.com", "tenant", scim.tenant_id)
    return Caller(web, ApiClient(app.test_client(), token, admin_id, "mallory-api@example.com"))


def test_a_tenant_admin_reaches_nothing_of_another_tenant(
        app: Flask, engine: Engine, scim: ScimClient, partner: ApiClient, attacker: Caller,
        receiver: Receiver) -> None:
    theirs = _theirs(engine, partner, receiver)
    mine = {**theirs, "tenant_id": scim.tenant_id}
    before = _rows_of(engine, theirs["tenant_id"])
    wrong: list[str] = []
    tried = 0
    for rule in rules(app):
        if "tenant_id" not in rule.arguments:
            continue
        objects = rule.arguments & set(OBJECT_IDS)
        # Another tenant, against a tenant that does not exist; and its own tenant with the
        # other's objects, against objects that do not exist.
        cases = [(theirs, {**theirs, "tenant_id": NOWHERE})]
        if objects:
            cases.append((mine, {**mine, **{k: NOWHERE if k.endswith("_id") and k != "run_id"
                                            and k != "attempt_id" else 999999999
                                            for k in objects}}))
        for values, nowhere in cases:
            path = path_of(rule, values)
            for method in METHODS:
                if method not in (rule.methods or ()):
                    continue
                tried += 1
                answer = attacker.call(rule, method, path)
                baseline = attacker.call(rule, method, path_of(rule, nowhere))
                body = answer.get_data(as_text=True)
                if (answer.status_code != baseline.status_code or answer.status_code < 300
                        or MARKS.search(body)):
                    wrong.append(f"{method} {path} -> {answer.status_code} (nowhere: "
                                 f"{baseline.status_code}) {body[:300]!r}")
    assert tried > 150
    assert wrong == [], "\n".join(wrong)
    assert _rows_of(engine, theirs["tenant_id"]) == before


def test_the_other_tenants_ids_in_query_strings_find_nothing(
        engine: Engine, scim: ScimClient, partner: ApiClient, attacker: Caller,
        receiver: Receiver) -> None:
    theirs = _theirs(engine, partner, receiver)
    user, run = theirs["user_id"], theirs["run_id"]
    mine = f"/tenants/{scim.tenant_id}"
    for path in (f"{mine}/users?q={user}", f"{mine}/provisioning-log?user={user}",
                 f"{mine}/provisioning-log?run={run}", f"{mine}/events?userId={user}",
                 f"{mine}/exports/provisioning-log.csv?user={user}",
                 f"{mine}/exports/users.csv", f"{mine}/entra/runs", f"{mine}/audit"):
        answer = attacker.api.get(path)
        body = answer.get_data(as_text=True)
        assert answer.status_code in (200, 400), (path, answer.status_code)
        assert user not in body and not MARKS.search(body), path
    for path in ("users", "provisioning-log", "audit", "groups"):
        page = attacker.web.client.get(f"/admin{mine}/{path}?q={user}&user={user}")
        assert not MARKS.search(page.get_data(as_text=True)), path


def test_partner_only_addresses_refuse_a_tenant_admin(
        app: Flask, engine: Engine, scim: ScimClient, partner: ApiClient, attacker: Caller,
        receiver: Receiver) -> None:
    theirs = _theirs(engine, partner, receiver)
    partner_hook = partner.post("/webhooks", {"url": receiver.url}).json["id"]
    key = partner.post("/reporting-keys", {"name": "BI"}).json["id"]
    [token] = partner.get("/me/tokens").json["items"]
    values = {**theirs, "endpoint_id": partner_hook, "admin_id": partner.admin_id,
              "key_id": key, "token_id": token["id"]}  # the partner's own
    before = _rows_of(engine, theirs["tenant_id"])
    wrong: list[str] = []
    for rule in rules(app):
        if "tenant_id" in rule.arguments or rule.rule.startswith(("/scim/", "/reporting/")):
            continue
        if rule.endpoint in ("health.healthz", "health.readyz", "metrics.scrape", "static",
                             "web.static", "web.sign_out", "web.sign_in"):
            continue
        path = path_of(rule, values)
        for method in METHODS:
            if method not in (rule.methods or ()):
                continue
            answer = attacker.call(rule, method, path)
            body = answer.get_data(as_text=True)
            if OWN.search(rule.rule):
                if theirs["tenant_id"] in body or MARKS.search(body):
                    wrong.append(f"{method} {path} shows the other tenant")
            elif answer.status_code not in (403, 404):
                wrong.append(f"{method} {path} -> {answer.status_code}")
    assert wrong == [], "\n".join(wrong)
    assert _rows_of(engine, theirs["tenant_id"]) == before
    # The partner's own token, key and endpoint, named in the addresses, are as they were.
    assert partner.get("/me").status_code == 200
    assert [k["revokedAt"] for k in partner.get("/reporting-keys").json["items"]] == [None]
    assert partner.get(f"/webhooks/{partner_hook}").json["enabled"] is True


def test_each_credential_opens_only_its_own_surface(
        app: Flask, engine: Engine, scim: ScimClient, partner: ApiClient,
        tenant_admin: ApiClient) -> None:
    """A tenant's SCIM token is no admin API token, an admin API token (a partner's
    included) no SCIM token and no provisioning key for the fleet-wide reporting API."""
    client = app.test_client()
    tried = {
        "/api/v1/me": scim.token,
        f"/api/v1/tenants/{scim.tenant_id}/users": scim.token,
        "/scim/v2/Users": tenant_admin.token,
        "/scim/v2/Groups": partner.token,
        "/reporting/v1/months": partner.token,
        "/reporting/v1/months/2026-10/tenants.csv": tenant_admin.token,
    }
    for path, token in tried.items():
        answer = client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, path
