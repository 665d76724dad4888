"""The OpenAPI 3.1 contract of the admin API (connector/api/openapi.json) against the code:
a valid document, one operation per real route and no other, served as kept in the repo,
and real responses (successes and problems) that are exactly what it declares."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import OpenAPIV31SpecValidator
from sqlalchemy import Engine

from connector import browse
from connector.api import OPENAPI_FILE, PREFIX
from connector.api.routes import SETTING_NAMES
from connector.tenant_settings import CHOICES
from tests.api.contract import SPEC, check_response, operations, seed_directory
from tests.support.clients import ApiClient, ScimClient, make_admin, make_tenant


def test_the_file_is_a_valid_openapi_3_1_document() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    errors = [e.message for e in OpenAPIV31SpecValidator(SPEC).iter_errors()]
    assert errors == []


def test_the_file_is_pretty_printed_with_two_space_indent() -> None:
    text = OPENAPI_FILE.read_text(encoding="utf-8")
    assert text == json.dumps(SPEC, indent=2, ensure_ascii=False) + "\n"


def api_routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(PREFIX + "/"):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule.removeprefix(PREFIX))
            routes |= {(m, path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_every_route_is_documented_and_every_operation_is_a_route(app: Flask) -> None:
    assert SPEC["servers"] == [{"url": PREFIX, "description": SPEC["servers"][0]["description"]}]
    documented = {(method, path) for method, path, _ in operations()}
    routes = api_routes(app)
    assert routes - documented == set(), "routes missing from openapi.json"
    assert documented - routes == set(), "operations in openapi.json without a route"


def test_operations_are_complete() -> None:
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids))
    for method, path, op in operations():
        assert op["summary"] and op["tags"], (method, path)
        declared = {p["$ref"].rsplit("/", 1)[-1] if "$ref" in p else p["name"]
                    for p in op.get("parameters", [])}
        assert set(re.findall(r"{(\w+)}", path)) <= declared, (method, path)
        if method != "GET":  # cookie sessions need the CSRF header on unsafe methods
            assert {"cookieAuth": [], "csrfToken": []} in op["security"], (method, path)


def test_enums_are_the_codes_own() -> None:
    schemas = SPEC["components"]["schemas"]
    params = {p["name"]: p["schema"] for p in SPEC["paths"]["/tenants/{tenant_id}/users"][
        "get"]["parameters"] if "name" in p}
    assert set(params["sort"]["enum"]) == {s for k in browse.SORTS for s in (k, "-" + k)}
    assert tuple(params["source"]["enum"]) == browse.ORIGINS
    assert tuple(params["status"]["enum"]) == browse.STATUSES
    for camel, snake in SETTING_NAMES.items():
        declared = schemas["Settings"]["properties"][camel]
        assert tuple(declared.get("enum", (True, False))) == CHOICES[snake]
        assert schemas["SettingsPatch"]["properties"][camel] == declared


def test_request_bodies_are_closed_objects_like_read_body() -> None:
    """read_body refuses unknown members: every request schema says so."""
    for method, path, op in operations():
        for media, content in op.get("requestBody", {}).get("content", {}).items():
            assert media in ("application/json", "application/merge-patch+json")
            name = content["schema"]["$ref"].rsplit("/", 1)[-1]
            schema = SPEC["components"]["schemas"][name]
            assert schema["additionalProperties"] is False, (method, path)
            assert "required" in schema, (method, path)


def test_the_served_document_is_the_file_and_public(client: FlaskClient, engine: Engine
                                                    ) -> None:
    response = client.get(PREFIX + "/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_data() == OPENAPI_FILE.read_bytes()


# -- real calls against the contract ----------------------------------------------------


class Checked:
    """An ApiClient whose every response is checked against the contract."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def __call__(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        response = self.api.request(method, path, body, **kw)
        check_response(method, PREFIX + path, response)
        return response


@pytest.fixture
def directory(scim: ScimClient) -> dict[str, Any]:
    return {"tenant": scim.tenant_id, **seed_directory(scim)}


def test_account_and_admin_calls_conform(partner: ApiClient, engine: Engine) -> None:
    call = Checked(partner)
    assert call("GET", "/me").json["via"] == "token"
    created = call("POST", "/me/tokens", {"name": "ci"}).json
    assert created["token"].startswith("cadm_")
    assert len(call("GET", "/me/tokens").json["items"]) == 2
    assert call("DELETE", f"/me/tokens/{created['id']}").status_code == 204
    assert call("DELETE", "/me/tokens/00000000-0000-4000-8000-000000000000").status_code == 404
    assert call("POST", "/me/password", {"currentPassword": "wrong password!",
                                         "newPassword": "a new long password"}
                ).status_code == 400
    assert call("POST", "/me/password", {"currentPassword": "x"}).status_code == 400
    tenant_id, _ = make_tenant(engine, "Other")
    admin = call("POST", "/admins", {"email": "t@example.com", "role": "tenant",
                                     "tenantId": tenant_id}).json
    assert admin["oneTimePassword"] and admin["tenantId"] == tenant_id
    assert call("POST", "/admins", {"email": "T@example.com", "role": "partner"}
                ).json["field"] == "email"
    assert call("POST", "/admins", {"email": "u@example.com", "role": "tenant",
                                    "tenantId": "00000000-0000-4000-8000-000000000000"}
                ).status_code == 404
    assert len(call("GET", "/admins").json["items"]) == 2
    assert call("GET", "/audit", query_string={"per_page": 2}).json["perPage"] == 2


def test_tenant_calls_conform(partner: ApiClient, directory: dict[str, Any]) -> None:
    call = Checked(partner)
    tenant = directory["tenant"]
    created = call("POST", "/tenants", {"name": "  New Corp "}).json
    assert created["name"] == "New Corp" and created["scimToken"].startswith("scim_")
    assert call("POST", "/tenants", {"name": " "}).status_code == 400
    assert len(call("GET", "/tenants").json["items"]) == 2
    assert call("GET", f"/tenants/{tenant}").json["users"] == 3
    assert call("GET", f"/tenants/{tenant}/settings").json["provisioningPaused"] is False
    assert call("PATCH", f"/tenants/{tenant}/settings", {"statusSource": "connector"},
                headers={"Content-Type": "application/merge-patch+json"}
                ).json["statusSource"] == "connector"
    assert call("PATCH", f"/tenants/{tenant}/settings", {"provisioningPaused": "yes"}
                ).status_code == 400
    assert call("POST", f"/tenants/{tenant}/scim-token").json["scimToken"].startswith("scim_")
    assert [m["name"] for m in call("GET", f"/tenants/{tenant}/modules").json["items"]] == [
        "Engage", "Hybrid", "Unify"]
    assert call("POST", f"/tenants/{tenant}/modules", {"name": "Legacy"}).status_code == 201
    assert call("POST", f"/tenants/{tenant}/modules", {"name": "legacy"}
                ).json["field"] == "name"
    assert call("GET", f"/tenants/{tenant}/audit").json["total"] >= 3


def test_user_calls_conform(partner: ApiClient, directory: dict[str, Any]) -> None:
    call = Checked(partner)
    base = f"/tenants/{directory['tenant']}"
    first, second = directory["users"]
    page = call("GET", f"{base}/users", query_string={
        "q": "seed", "status": "active", "guest": "false", "source": "scim",
        "sort": "-created", "per_page": 1}).json
    assert (page["total"], page["pages"], len(page["items"])) == (2, 2, 1)
    assert call("GET", f"{base}/users", query_string={"sort": "age"}).status_code == 400
    made = call("POST", f"{base}/users", {"userName": "local@example.com", "givenName": "Lo",
                                          "email": "local@example.com", "modules": ["hybrid"],
                                          "guest": True}).json
    assert (made["source"], made["ownModules"]) == ("admin", ["Hybrid"])
    assert call("POST", f"{base}/users", {"userName": "LOCAL@example.com"}
                ).json["field"] == "userName"
    assert call("POST", f"{base}/users", {"userName": "x", "modules": ["Nope"]}
                ).status_code == 400
    detail = call("GET", f"{base}/users/{first}").json
    assert detail["groups"][0]["id"] == directory["group"]
    assert call("PATCH", f"{base}/users/{first}", {"admin": True, "modules": ["Unify"]}
                ).json["modules"] == ["Unify"]
    refused = call("PUT", f"{base}/users/{first}/status", {"status": "inactive"}).json
    assert refused["setting"] == "provisioning_paused"
    assert call("PUT", f"{base}/users/{made['id']}/status", {"status": "inactive"}
                ).json["status"] == "inactive"
    assert call("GET", f"{base}/users/{first}/history").json["items"][0]["subjectId"] == first
    assert call("GET", f"{base}/users/{directory['deleted']}").json["removed"] is not None
    assert call("GET", f"{base}/users/00000000-0000-4000-8000-000000000000/history"
                ).status_code == 404
    assert call("GET", f"{base}/exports/users.csv").get_data(as_text=True).startswith(
        "first name,last name,e-mail,username,status,modules,guest,admin\r\n")
    assert call("PATCH", f"{base}/users/{second}", {"nickName": "x"}).status_code == 400


def test_deleted_user_and_group_calls_conform(partner: ApiClient, directory: dict[str, Any]
                                              ) -> None:
    call = Checked(partner)
    base = f"/tenants/{directory['tenant']}"
    listed = call("GET", f"{base}/deleted-users").json
    assert {u["id"] for u in listed["items"]} == {directory["disabled"], directory["deleted"]}
    refused = call("POST", f"{base}/deleted-users/{directory['disabled']}/restore").json
    assert refused["setting"] == "provisioning_paused"
    assert call("POST", f"{base}/deleted-users/{directory['users'][0]}/restore"
                ).status_code == 409
    call("PATCH", f"{base}/settings", {"provisioningPaused": True})
    restored = call("POST", f"{base}/deleted-users/{directory['deleted']}/restore").json
    assert restored["removed"] is None and restored["status"] == "active"
    assert call("DELETE", f"{base}/deleted-users/{directory['disabled']}").status_code == 204
    assert call("DELETE", f"{base}/deleted-users/{directory['disabled']}").status_code == 404
    group_id = directory["group"]
    assert call("GET", f"{base}/groups", query_string={"q": "seed"}).json["total"] == 1
    assert call("GET", f"{base}/groups/{group_id}").json["members"] == 2
    members = call("GET", f"{base}/groups/{group_id}/members").json["items"]
    assert {m["type"] for m in members} == {"User"}
    assert call("PUT", f"{base}/groups/{group_id}/modules", {"modules": ["Engage"]}
                ).json["modules"] == ["Engage"]
    assert call("PUT", f"{base}/groups/{group_id}/modules", {"modules": "Engage"}
                ).status_code == 400
    assert call("GET", f"{base}/groups/00000000-0000-4000-8000-000000000000/members"
                ).status_code == 404


def test_problems_conform(partner: ApiClient, tenant_admin: ApiClient, client: FlaskClient,
                          engine: Engine) -> None:
    call, limited = Checked(partner), Checked(tenant_admin)
    nobody = Checked(ApiClient(client, "cadm_not-a-token", "", ""))
    assert nobody("GET", "/tenants").headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(PREFIX + "/me").status_code == 401
    check_response("GET", PREFIX + "/me", client.get(PREFIX + "/me"))
    assert limited("GET", "/admins").json["type"] == "urn:connector:problem:forbidden"
    other, _ = make_tenant(engine, "Not yours")
    assert limited("GET", f"/tenants/{other}/users").status_code == 404
    assert call("POST", "/tenants", data="name=x",
                headers={"Content-Type": "application/x-www-form-urlencoded"}
                ).status_code == 415
    assert call("POST", "/tenants", data="{", headers={"Content-Type": "application/json"}
                ).json["type"] == "urn:connector:problem:malformed-json"
    assert call("POST", "/me/tokens", data="[]", headers={"Content-Type": "application/json"}
                ).status_code == 400
    _, token = make_admin(engine, "new@example.com", password=None)
    fresh = Checked(ApiClient(client, token, "", ""))
    assert fresh("GET", "/tenants").json["type"] == (
        "urn:connector:problem:password-change-required")
    assert fresh("GET", "/me").json["mustChangePassword"] is True


def test_text_no_database_can_store_is_a_declared_problem(partner: ApiClient,
                                                          directory: dict[str, Any]) -> None:
    """NUL (PostgreSQL refuses it), unpaired surrogates (not UTF-8), text longer than its
    column and absurd nesting are refused as the spec says, on both databases: never 500."""
    call = Checked(partner)
    base = f"/tenants/{directory['tenant']}"
    for method, path, body in [
            ("POST", "/tenants", {"name": "a\x00b"}),
            ("POST", "/me/tokens", {"name": "\ud800"}),
            ("POST", "/admins", {"email": "a\x00@example.com", "role": "partner"}),
            ("POST", f"{base}/users", {"userName": "x", "givenName": "a\x00"}),
            ("POST", f"{base}/users", {"userName": "x", "displayName": "x" * 513}),
            ("POST", f"{base}/modules", {"name": "a\x00b"})]:
        assert call(method, path, body).status_code == 400, (method, path, body)
    assert call("POST", "/tenants", data="[" * 100_000, headers={
        "Content-Type": "application/json"}).json["type"] == "urn:connector:problem:malformed-json"
    for query in ({"q": "a\x00"}, {"module": "a\x00"}):
        assert call("GET", f"{base}/users", query_string=query).status_code == 400
    assert call("GET", f"{base}/groups", query_string={"q": "\x00"}).status_code == 400
    assert call("GET", "/tenants/a%00b").status_code == 404
    assert call("GET", f"{base}/users/a%00b/history").status_code == 404
    assert call("DELETE", "/me/tokens/a%00b").status_code == 404
