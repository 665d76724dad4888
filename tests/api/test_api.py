"""The admin API (/api/v1): every endpoint, every refusal, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select

from connector.db import make_sessionmaker
from connector.models import AuditEntry, Event
from tests.support.clients import PASSWORD, ApiClient, ScimClient, make_admin

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def scim_user(scim: ScimClient, user_name: str, **extra: Any) -> dict[str, Any]:
    body = {"schemas": [USER], "userName": user_name,
            "name": {"givenName": user_name.split("@")[0].title(), "familyName": "Doe"},
            "emails": [{"value": user_name, "type": "work", "primary": True}], **extra}
    response = scim.post("/Users", body)
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def audit_actions(engine: Engine) -> list[str]:
    with make_sessionmaker(engine)() as s:
        return list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["type"] == f"urn:connector:problem:{slug}"
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body  # type: ignore[no-any-return]


# -- authentication ---------------------------------------------------------------------------


def test_no_credentials_is_401_with_a_hint(client: Any) -> None:
    body = problem(client.get("/api/v1/tenants"), 401, "unauthorized")
    assert "API token" in body["detail"]


def test_a_wrong_or_revoked_token_is_401(partner: ApiClient) -> None:
    wrong = ApiClient(partner.client, "cadm_" + "x" * 43, partner.admin_id, partner.email)
    problem(wrong.get("/me"), 401, "unauthorized")
    created = partner.post("/me/tokens", {"name": "ci"}).json
    other = ApiClient(partner.client, created["token"], partner.admin_id, partner.email)
    assert other.get("/me").status_code == 200
    assert partner.delete(f"/me/tokens/{created['id']}").status_code == 204
    problem(other.get("/me"), 401, "unauthorized")


def test_tokens_are_shown_once_and_listed_by_hint(partner: ApiClient, engine: Engine) -> None:
    created = partner.post("/me/tokens", {"name": "nightly export"})
    assert created.status_code == 201
    # A secret shown once is never kept by a cache; no answer is sniffed as HTML.
    assert created.headers["Cache-Control"] == "no-store"
    assert created.headers["X-Content-Type-Options"] == "nosniff"
    missing = partner.get("/no/such/endpoint")
    assert missing.status_code == 404 and missing.headers["X-Content-Type-Options"] == "nosniff"
    clear = created.json["token"]
    assert clear.startswith("cadm_") and len(clear) > 40
    listed = partner.get("/me/tokens").json["items"]
    assert {t["name"] for t in listed} == {"tests", "nightly export"}
    assert all("token" not in t and clear not in str(t) for t in listed)
    assert "token.created" in audit_actions(engine)


def test_a_read_only_call_records_the_tokens_last_use(partner: ApiClient) -> None:
    """A script that only reads (a nightly export) still shows when it last ran, though
    its requests write nothing else."""
    created = partner.post("/me/tokens", {"name": "nightly export"}).json
    reader = ApiClient(partner.client, created["token"], partner.admin_id, partner.email)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    assert reader.get("/tenants").status_code == 200
    [listed] = [t for t in partner.get("/me/tokens").json["items"]
                if t["id"] == created["id"]]
    assert listed["lastUsed"] is not None
    assert dt.datetime.fromisoformat(listed["lastUsed"]) >= before


def test_a_refused_write_records_the_tokens_last_use_too(partner: ApiClient) -> None:
    """A script whose writes are all refused still ran: its token shows it, so the admin
    looking for what calls the API finds it (its request wrote nothing else)."""
    created = partner.post("/me/tokens", {"name": "broken script"}).json
    writer = ApiClient(partner.client, created["token"], partner.admin_id, partner.email)
    assert writer.post("/tenants", {"name": ""}).status_code == 400
    [listed] = [t for t in partner.get("/me/tokens").json["items"]
                if t["id"] == created["id"]]
    assert listed["lastUsed"] is not None


def test_one_time_password_accounts_must_change_it_first(client: Any, engine: Engine,
                                                         partner: ApiClient) -> None:
    created = partner.post("/admins", {"email": "new@example.com", "role": "partner"})
    assert created.status_code == 201 and created.json["oneTimePassword"]
    from connector import admins
    with make_sessionmaker(engine)() as s:
        account = admins.find_admin(s, "new@example.com")
        assert account is not None and account.must_change_password
        _, token = admins.create_token(s, account.id, "t", account.created_at)
        s.commit()
    fresh = ApiClient(client, token, account.id, account.email)
    problem(fresh.get("/tenants"), 403, "password-change-required")
    assert fresh.get("/me").json["mustChangePassword"] is True
    weak = fresh.post("/me/password", {"currentPassword": created.json["oneTimePassword"],
                                       "newPassword": "short"})
    problem(weak, 400, "invalid-request")
    wrong = fresh.post("/me/password", {"currentPassword": "nope", "newPassword": PASSWORD})
    assert "current password" in problem(wrong, 400, "invalid-request")["detail"]
    ok = fresh.post("/me/password", {"currentPassword": created.json["oneTimePassword"],
                                     "newPassword": PASSWORD})
    assert ok.status_code == 204
    assert fresh.get("/tenants").status_code == 200


def _session_cookie(app: Flask, engine: Engine, email: str) -> Any:
    """A test client signed in through a session cookie (as a browser would be)."""
    from connector import admins
    with make_sessionmaker(engine)() as s:
        account = admins.find_admin(s, email)
        assert account is not None
        admin_id, epoch = account.id, account.session_epoch
        sid = admins.start_session(s, account, dt.datetime.now(dt.UTC), dt.timedelta(hours=1))
        s.commit()
    client = app.test_client()
    with client.session_transaction() as sess:
        sess.update(admin_id=admin_id, epoch=epoch, sid=sid, csrf="the-csrf-token",
                    issued=int(time.time()))
    return client


def test_cookie_sessions_need_the_csrf_token_to_change_anything(
        app: Flask, engine: Engine, partner: ApiClient, scim: ScimClient) -> None:
    browser = _session_cookie(app, engine, partner.email)
    assert browser.get("/api/v1/tenants").status_code == 200
    url = f"/api/v1/tenants/{scim.tenant_id}/settings"
    refused = browser.patch(url, json={"provisioningPaused": True})
    problem(refused, 403, "csrf")
    # Said to a script in the API's terms (it said "The form is out of date…").
    assert "X-CSRF-Token header (GET /api/v1/me returns it as csrfToken)" in refused.json[
        "detail"]
    problem(browser.patch(url, json={"provisioningPaused": True},
                          headers={"X-CSRF-Token": "forged"}), 403, "csrf")
    assert partner.get(url.removeprefix("/api/v1")).json["provisioningPaused"] is False
    ok = browser.patch(url, json={"provisioningPaused": True},
                       headers={"X-CSRF-Token": "the-csrf-token"})
    assert ok.status_code == 200 and ok.json["provisioningPaused"] is True


def test_a_password_change_signs_out_other_sessions(app: Flask, engine: Engine,
                                                    partner: ApiClient) -> None:
    browser = _session_cookie(app, engine, partner.email)
    assert browser.get("/api/v1/me").status_code == 200
    changed = partner.post("/me/password", {"currentPassword": PASSWORD,
                                            "newPassword": PASSWORD + "!"})
    assert changed.status_code == 204
    problem(browser.get("/api/v1/me"), 401, "unauthorized")


# -- tenants and isolation ----------------------------------------------------------------------


def test_partner_creates_a_tenant_and_gets_its_scim_token_once(partner: ApiClient,
                                                               client: Any) -> None:
    created = partner.post("/tenants", {"name": "Globex"})
    assert created.status_code == 201
    body = created.json
    assert body["scimBaseUrl"].endswith("/scim/v2") and body["scimToken"].startswith("scim_")
    users = client.get("/scim/v2/Users", headers={"Authorization": f"Bearer {body['scimToken']}"})
    assert users.status_code == 200
    again = partner.get(f"/tenants/{body['id']}").json
    assert "scimToken" not in again and again["settings"]["statusSource"] == "identity_provider"
    problem(partner.post("/tenants", {"name": "  "}), 400, "invalid-request")


def test_a_tenant_admin_sees_only_its_tenant(tenant_admin: ApiClient, scim: ScimClient,
                                             other_scim: ScimClient) -> None:
    assert [t["id"] for t in tenant_admin.get("/tenants").json["items"]] == [scim.tenant_id]
    assert tenant_admin.get("/tenants").json["total"] == 1
    assert tenant_admin.get(f"/tenants?q={other_scim.tenant_id}").json["items"] == []
    theirs = scim_user(other_scim, "secret@other.io")
    for path in (f"/tenants/{other_scim.tenant_id}", f"/tenants/{other_scim.tenant_id}/users",
                 f"/tenants/{other_scim.tenant_id}/users/{theirs['id']}",
                 f"/tenants/{other_scim.tenant_id}/exports/users.csv",
                 f"/tenants/{other_scim.tenant_id}/audit"):
        body = problem(tenant_admin.get(path), 404, "not-found")
        assert "secret" not in str(body)
    # The same answer as for a tenant that does not exist, and for its users by id:
    problem(tenant_admin.get("/tenants/00000000-0000-0000-0000-000000000000"), 404, "not-found")
    problem(tenant_admin.get(f"/tenants/{scim.tenant_id}/users/{theirs['id']}"), 404,
            "not-found")
    problem(tenant_admin.patch(f"/tenants/{other_scim.tenant_id}/settings",
                               {"provisioningPaused": True}), 404, "not-found")
    for call in (lambda: tenant_admin.post("/tenants", {"name": "X"}),
                 lambda: tenant_admin.get("/admins"), lambda: tenant_admin.get("/audit"),
                 lambda: tenant_admin.post("/admins", {"email": "a@b.c", "role": "partner"})):
        problem(call(), 403, "forbidden")


def test_tenants_are_paged_and_searched_as_a_fleet_needs(partner: ApiClient,
                                                         scim: ScimClient) -> None:
    """Oldest first, a page at a time; q matches part of the name ignoring case and
    accents, or an exact id; state picks open or closed tenants; wrong arguments are
    400s that name the argument."""
    made = [partner.post("/tenants", {"name": name}).json["id"]
            for name in ("Ärzte Nord", "Globex", "Initech", "Nordwind Ärztehaus")]
    everyone = [scim.tenant_id, *made]
    first = partner.get("/tenants").json
    assert [t["id"] for t in first["items"]] == everyone
    assert (first["total"], first["page"], first["perPage"], first["pages"]) == (5, 1, 50, 1)
    second = partner.get("/tenants?per_page=2&page=2").json
    assert [t["id"] for t in second["items"]] == everyone[2:4]
    assert (second["total"], second["pages"]) == (5, 3)
    assert partner.get("/tenants?per_page=2&page=4").json["items"] == []

    def found(query: str) -> list[str]:
        return [t["name"] for t in partner.get(f"/tenants?{query}").json["items"]]

    assert found("q=arzte") == ["Ärzte Nord", "Nordwind Ärztehaus"]
    assert found("q=NORD") == ["Ärzte Nord", "Nordwind Ärztehaus"]
    assert found(f"q={made[1]}") == ["Globex"]
    assert found("q=%25") == []  # no wildcard: a % is a % in a name
    assert partner.post(f"/tenants/{made[2]}/close").status_code == 200
    assert found("state=closed") == ["Initech"]
    assert "Initech" not in found("state=open") and len(found("state=open")) == 4
    assert found("state=closed&q=nord") == []
    for query, word in (("state=gone", "state"), ("page=0", "page"), ("per_page=201", "per_page"),
                        ("per_page=x", "per_page"), (f"q={'x' * 201}", "q")):
        body = problem(partner.get(f"/tenants?{query}"), 400, "invalid-request")
        assert word in body["detail"], body


def test_scim_token_rotation_revokes_the_old_one(partner: ApiClient, scim: ScimClient,
                                                 engine: Engine) -> None:
    rotated = partner.post(f"/tenants/{scim.tenant_id}/scim-token")
    assert rotated.status_code == 201
    scim.token_cache = None
    assert scim.post("/Users", {"schemas": [USER], "userName": "x@y.io"}).status_code == 401
    fresh = ScimClient(scim.client, rotated.json["scimToken"], scim.tenant_id)
    assert fresh.get("/Users").status_code == 200
    assert "tenant.scim_token_rotated" in audit_actions(engine)


# -- settings --------------------------------------------------------------------------------


def test_settings_are_validated_and_audited(partner: ApiClient, scim: ScimClient,
                                            engine: Engine) -> None:
    url = f"/tenants/{scim.tenant_id}/settings"
    for bad in ({"statusSource": "azure"}, {"provisioningPaused": "yes"}, {"nope": 1},
                {"scimDefaultStatus": 1}):
        problem(partner.patch(url, bad), 400, "invalid-request")
    problem(partner.patch(url, data="[1]", headers={"Content-Type": "application/json"}),
            400, "invalid-request")
    problem(partner.patch(url, data="x", headers={"Content-Type": "text/plain"}),
            415, "unsupported-media-type")
    ok = partner.patch(url, {"statusSource": "connector", "scimDefaultStatus": "inactive"})
    assert ok.json == {"statusSource": "connector", "scimDefaultStatus": "inactive",
                       "provisioningPaused": False}
    assert audit_actions(engine).count("tenant.settings") == 1
    with make_sessionmaker(engine)() as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.kind == "tenant.settings")))
    assert len(kinds) == 2  # one event per setting
    assert partner.patch(url, {"statusSource": "connector"}).status_code == 200
    assert audit_actions(engine).count("tenant.settings") == 1  # no change, no audit line


def test_pausing_makes_scim_writes_503_and_reads_still_work(partner: ApiClient,
                                                            scim: ScimClient) -> None:
    partner.patch(f"/tenants/{scim.tenant_id}/settings", {"provisioningPaused": True})
    refused = scim.post("/Users", {"schemas": [USER], "userName": "late@x.io"})
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    assert scim.get("/Users").status_code == 200


# -- users --------------------------------------------------------------------------------------


def test_status_change_refusals_name_the_setting(partner: ApiClient, scim: ScimClient,
                                                 engine: Engine) -> None:
    user = scim_user(scim, "ann@x.io")
    url = f"/tenants/{scim.tenant_id}/users/{user['id']}/status"
    body = problem(partner.put(url, {"status": "inactive"}), 409, "status-change-refused")
    assert body["setting"] == "provisioning_paused" and "pause" in body["detail"]
    partner.patch(f"/tenants/{scim.tenant_id}/settings", {"provisioningPaused": True})
    ok = partner.put(url, {"status": "inactive"})
    assert ok.status_code == 200 and ok.json["status"] == "inactive"
    assert scim.get(f"/Users/{user['id']}").json["active"] is False
    problem(partner.put(url, {"status": "gone"}), 400, "invalid-request")
    problem(partner.put(url, {}), 400, "invalid-request")
    assert audit_actions(engine).count("user.status") == 1


def test_admin_created_users_are_always_editable(partner: ApiClient, scim: ScimClient) -> None:
    created = partner.post(f"/tenants/{scim.tenant_id}/users", {
        "userName": "own@x.io", "givenName": "Own", "familyName": "User",
        "email": "own@x.io", "modules": ["engage"], "guest": True})
    assert created.status_code == 201
    user = created.json
    assert (user["source"], user["guest"], user["ownModules"]) == ("admin", True, ["Engage"])
    off = partner.put(f"/tenants/{scim.tenant_id}/users/{user['id']}/status",
                      {"status": "inactive"})
    assert off.status_code == 200 and off.json["status"] == "inactive"
    rendered = scim.get(f"/Users/{user['id']}").json  # the SCIM view sees the same user
    assert rendered["emails"][0]["value"] == "own@x.io" and rendered["active"] is False
    dup = partner.post(f"/tenants/{scim.tenant_id}/users", {"userName": "OWN@x.io"})
    assert problem(dup, 409, "conflict")["field"] == "userName"
    for bad in ({"userName": ""}, {"userName": "a", "modules": ["Nope"]},
                {"userName": "a", "email": "not-an-address"}, {"userName": "a", "active": "no"},
                {"userName": "a", "surprise": 1}, {"displayName": "no userName"}):
        problem(partner.post(f"/tenants/{scim.tenant_id}/users", bad), 400, "invalid-request")


def test_flags_and_modules_are_events_and_effective_modules_include_groups(
        partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    user = scim_user(scim, "mod@x.io")
    group = scim.post("/Groups", {"schemas": [GROUP], "displayName": "Sales",
                                  "members": [{"value": user["id"]}]}).json
    url = f"/tenants/{scim.tenant_id}"
    assert partner.put(f"{url}/groups/{group['id']}/modules",
                       {"modules": ["Unify"]}).json["modules"] == ["Unify"]
    patched = partner.patch(f"{url}/users/{user['id']}",
                            {"guest": True, "admin": True, "modules": ["hybrid"]})
    assert patched.status_code == 200
    assert (patched.json["guest"], patched.json["admin"]) == (True, True)
    assert patched.json["ownModules"] == ["Hybrid"]
    assert patched.json["modules"] == ["Hybrid", "Unify"]
    assert patched.json["groups"] == [{"id": group["id"], "displayName": "Sales"}]
    kinds = [e["kind"] for e in partner.get(f"{url}/users/{user['id']}/history").json["items"]]
    assert {"user.guest", "user.admin", "user.modules", "user.created"} <= set(kinds)
    listed = partner.get(f"{url}/users?module=Unify").json
    assert [u["id"] for u in listed["items"]] == [user["id"]]
    problem(partner.patch(f"{url}/users/{user['id']}", {"modules": ["Boost"]}), 400,
            "invalid-request")
    problem(partner.put(f"{url}/groups/{group['id']}/modules", {"modules": "Unify"}), 400,
            "invalid-request")
    problem(partner.put(f"{url}/groups/nope/modules", {"modules": []}), 404, "not-found")
    modules = {m["name"]: m for m in partner.get(f"{url}/modules").json["items"]}
    assert modules["Hybrid"]["users"] == 1 and modules["Unify"]["groups"] == 1
    assert partner.post(f"{url}/modules", {"name": "Boost"}).status_code == 201
    problem(partner.post(f"{url}/modules", {"name": "boost"}), 409, "conflict")
    assert partner.patch(f"{url}/users/{user['id']}", {"modules": ["Boost"]}).status_code == 200


def test_users_list_searches_filters_sorts_and_pages(partner: ApiClient,
                                                     scim: ScimClient) -> None:
    for i in range(7):
        scim_user(scim, f"user{i}@example.com", displayName=f"Person {6 - i}",
                  active=i % 2 == 0)
    scim_user(scim, "zed@other.org")
    url = f"/tenants/{scim.tenant_id}/users"
    page = partner.get(f"{url}?per_page=3&page=2").json
    assert (page["total"], page["pages"], len(page["items"])) == (8, 3, 3)
    assert [u["userName"] for u in page["items"]] == [f"user{i}@example.com" for i in (3, 4, 5)]
    assert partner.get(f"{url}?q=ZED").json["total"] == 1  # prefix of userName, any case
    assert partner.get(f"{url}?q=person%203").json["total"] == 1  # prefix of displayName
    assert partner.get(f"{url}?q=example.com").json["total"] == 7  # the e-mail's domain
    assert partner.get(f"{url}?q=other").json["total"] == 1  # a part of the domain
    assert partner.get(f"{url}?q=3%20PERSON").json["total"] == 1  # any order, any case
    assert partner.get(f"{url}?status=inactive").json["total"] == 3
    assert partner.get(f"{url}?source=admin").json["total"] == 0
    by_display = partner.get(f"{url}?sort=-displayName&per_page=2").json["items"]
    assert [u["displayName"] for u in by_display] == ["Person 6", "Person 5"]
    for bad in ("status=gone", "sort=password", "page=0", "per_page=1000", "guest=maybe",
                "source=ldap", "q=a%20b%20c%20d%20e%20f%20g%20h%20i"):
        problem(partner.get(f"{url}?{bad}"), 400, "invalid-request")


# -- deleted users ------------------------------------------------------------------------------


def test_deleted_users_restore_and_permanent_removal(partner: ApiClient, scim: ScimClient,
                                                     engine: Engine) -> None:
    disabled = scim_user(scim, "off@x.io")
    deleted = scim_user(scim, "gone@x.io")
    kept = scim_user(scim, "kept@x.io")
    scim.patch(f"/Users/{disabled['id']}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}]})
    assert scim.delete(f"/Users/{deleted['id']}").status_code == 204
    url = f"/tenants/{scim.tenant_id}/deleted-users"
    listed = partner.get(url).json
    assert {u["userName"] for u in listed["items"]} == {"off@x.io", "gone@x.io"}
    body = problem(partner.post(f"{url}/{disabled['id']}/restore"), 409,
                   "status-change-refused")
    assert body["setting"] == "provisioning_paused"
    problem(partner.post(f"{url}/{kept['id']}/restore"), 409, "state-conflict")
    problem(partner.delete(f"{url}/{kept['id']}"), 409, "state-conflict")
    partner.patch(f"/tenants/{scim.tenant_id}/settings", {"provisioningPaused": True})
    restored = partner.post(f"{url}/{deleted['id']}/restore")
    assert restored.status_code == 200 and restored.json["status"] == "active"
    assert scim.get(f"/Users/{deleted['id']}").status_code == 200  # back in SCIM, same id
    assert partner.delete(f"{url}/{disabled['id']}").status_code == 204
    assert partner.get(url).json["total"] == 0
    problem(partner.post(f"{url}/{disabled['id']}/restore"), 404, "not-found")
    problem(partner.delete(f"{url}/{disabled['id']}"), 404, "not-found")
    history = partner.get(f"/tenants/{scim.tenant_id}/users/{disabled['id']}/history").json
    assert [e["kind"] for e in history["items"]][:2] == ["user.purged", "user.removed"]
    assert {"user.restored", "user.purged"} <= set(audit_actions(engine))


def test_restoring_a_user_whose_name_was_taken_is_a_conflict(partner: ApiClient,
                                                             scim: ScimClient) -> None:
    first = scim_user(scim, "dup@x.io")
    scim.delete(f"/Users/{first['id']}")
    scim_user(scim, "dup@x.io")
    partner.patch(f"/tenants/{scim.tenant_id}/settings", {"provisioningPaused": True})
    body = problem(partner.post(f"/tenants/{scim.tenant_id}/deleted-users/{first['id']}/restore"),
                   409, "conflict")
    assert body["field"] == "userName"


# -- groups, audit, export ------------------------------------------------------------------------


def test_groups_list_detail_and_members(partner: ApiClient, scim: ScimClient) -> None:
    users = [scim_user(scim, f"g{i}@x.io") for i in range(3)]
    group = scim.post("/Groups", {"schemas": [GROUP], "displayName": "Engineering",
                                  "members": [{"value": u["id"]} for u in users]}).json
    url = f"/tenants/{scim.tenant_id}/groups"
    listed = partner.get(f"{url}?q=eng").json
    assert listed["items"][0]["members"] == 3 and listed["total"] == 1
    assert partner.get(f"{url}/{group['id']}").json["displayName"] == "Engineering"
    members = partner.get(f"{url}/{group['id']}/members?per_page=2").json
    assert members["total"] == 3 and len(members["items"]) == 2
    assert {m["type"] for m in members["items"]} == {"User"}
    problem(partner.get(f"{url}/nope/members"), 404, "not-found")


def test_audit_log_records_who_did_what(partner: ApiClient, scim: ScimClient) -> None:
    partner.patch(f"/tenants/{scim.tenant_id}/settings", {"provisioningPaused": True})
    entries = partner.get(f"/tenants/{scim.tenant_id}/audit").json["items"]
    assert entries[0]["action"] == "tenant.settings"
    assert entries[0]["actor"] == f"admin:{partner.email}" and entries[0]["correlationId"]
    assert partner.get("/audit").json["total"] >= 1


def test_csv_export_streams_every_user_with_the_documented_columns(
        partner: ApiClient, scim: ScimClient) -> None:
    scim_user(scim, "b@x.io", **{"urn:connector:params:scim:schemas:extension:2.0:User":
                                 {"modules": ["Hybrid", "Engage"], "admin": True}})
    scim_user(scim, "=cmd@x.io", name={"givenName": "=HYPERLINK(1)", "familyName": "Evil"})
    gone = scim_user(scim, "gone@x.io")
    scim.delete(f"/Users/{gone['id']}")
    response = partner.get(f"/tenants/{scim.tenant_id}/exports/users.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["first name", "last name", "e-mail", "username", "status", "modules",
                       "guest", "admin"]
    assert rows[1:] == [
        ["'=HYPERLINK(1)", "Evil", "'=cmd@x.io", "'=cmd@x.io", "active", "", "false", "false"],
        ["B", "Doe", "b@x.io", "b@x.io", "active", "Engage;Hybrid", "false", "true"]]


def test_export_reads_in_batches(engine: Engine, scim: ScimClient) -> None:
    from connector import browse
    names = [scim_user(scim, f"batch{i:02d}@x.io")["userName"] for i in range(7)]
    with make_sessionmaker(engine)() as s:
        exported = [u.user_name for u in browse.export_users(s, scim.tenant_id, batch=3)]
    assert exported == sorted(names)


# -- protocol errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "status", "slug"), [
    ("GET", "/nope", 404, "not-found"),
    ("DELETE", "/tenants", 405, "method-not-allowed"),
])
def test_unknown_routes_and_methods_are_problems(partner: ApiClient, method: str, path: str,
                                                 status: int, slug: str) -> None:
    problem(partner.request(method, path), status, slug)


def test_malformed_bodies_are_400_and_change_nothing(partner: ApiClient,
                                                     scim: ScimClient) -> None:
    url = f"/tenants/{scim.tenant_id}/settings"
    for data in ("{", "\xff", "null", '"text"'):
        problem(partner.patch(url, data=data.encode("latin-1"),
                              headers={"Content-Type": "application/json"}), 400,
                "malformed-json" if data in ("{", "\xff") else "invalid-request")
    assert partner.get(url).json["provisioningPaused"] is False


def test_a_tenant_admin_can_be_created_and_is_scoped(partner: ApiClient, scim: ScimClient,
                                                     engine: Engine, app: Flask) -> None:
    created = partner.post("/admins", {"email": "ops@acme.io", "role": "tenant",
                                       "tenantId": scim.tenant_id})
    assert created.status_code == 201 and created.json["tenantId"] == scim.tenant_id
    problem(partner.post("/admins", {"email": "ops@acme.io", "role": "tenant",
                                     "tenantId": scim.tenant_id}), 409, "conflict")
    problem(partner.post("/admins", {"email": "x@y.io", "role": "tenant"}), 400,
            "invalid-request")
    problem(partner.post("/admins", {"email": "x@y.io", "role": "tenant",
                                     "tenantId": "nope"}), 404, "not-found")
    problem(partner.post("/admins", {"email": "x@y.io", "role": "root"}), 400,
            "invalid-request")
    emails = [a["email"] for a in partner.get("/admins").json["items"]]
    assert emails == ["ops@acme.io", "partner@example.com"]
    admin_id, token = make_admin(engine, "two@acme.io", "tenant", scim.tenant_id)
    two = ApiClient(app.test_client(), token, admin_id, "two@acme.io")
    assert two.get(f"/tenants/{scim.tenant_id}/users").status_code == 200
