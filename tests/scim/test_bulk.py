"""/Bulk with bulkId references and failOnErrors (RFC 7644 §3.7)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.scim.factories import group, user
from tests.support.clients import ScimClient

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def test_bulk_with_bulk_id_reference(scim: ScimClient) -> None:
    r = scim.post("/Bulk", {"schemas": [BULK], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "u1", "data": user("bulk1@x.io")},
        {"method": "POST", "path": "/Groups", "bulkId": "g1",
         "data": group("Bulkers", ["bulkId:u1"])},
        {"method": "PATCH", "path": "/Users/bulkId:u1", "data": {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "displayName", "value": "B"}]}},
    ]})
    assert r.status_code == 200
    ops = r.json["Operations"]
    assert [o["status"] for o in ops] == ["201", "201", "200"]
    uid = ops[0]["location"].rsplit("/", 1)[1]
    members = scim.get(ops[1]["location"].split("/scim/v2")[1]).json["members"]
    assert [m["value"] for m in members] == [uid]


def test_a_reference_to_a_later_post_waits_for_it(scim: ScimClient) -> None:
    # RFC 7644 §3.7: operations may run in another order when the result is what the
    # client meant; the group needs the user its member refers to, created after it.
    r = scim.post("/Bulk", {"schemas": [BULK], "Operations": [
        {"method": "POST", "path": "/Groups", "bulkId": "g", "data": group("Later",
                                                                          ["bulkId:u"])},
        {"method": "PATCH", "path": "/Users/bulkId:u", "data": {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": "Patched"}]}},
        {"method": "POST", "path": "/Users", "bulkId": "u", "data": user("later@x.io")},
    ]})
    ops = r.json["Operations"]
    assert [(o["method"], o["status"]) for o in ops] == [("POST", "201"), ("PATCH", "200"),
                                                         ("POST", "201")]
    assert [o.get("bulkId") for o in ops] == ["g", None, "u"]  # listed in request order
    uid = ops[2]["location"].rsplit("/", 1)[1]
    members = scim.get(ops[0]["location"].split("/scim/v2")[1]).json["members"]
    assert [m["value"] for m in members] == [uid]
    assert scim.get(f"/Users/{uid}").json["title"] == "Patched"


def test_circular_and_repeated_bulk_ids_are_refused_alone(scim: ScimClient) -> None:
    r = scim.post("/Bulk", {"schemas": [BULK], "Operations": [
        {"method": "POST", "path": "/Groups", "bulkId": "a", "data": group("A", ["bulkId:b"])},
        {"method": "POST", "path": "/Groups", "bulkId": "b", "data": group("B", ["bulkId:a"])},
        {"method": "POST", "path": "/Groups", "bulkId": "self",
         "data": group("Self", ["bulkId:self"])},
        {"method": "POST", "path": "/Users", "bulkId": "same", "data": user("one@x.io")},
        {"method": "POST", "path": "/Users", "bulkId": "same", "data": user("two@x.io")},
    ]})
    assert r.status_code == 200
    ops = r.json["Operations"]
    assert [o["status"] for o in ops] == ["409", "409", "409", "201", "400"]
    assert ops[0]["response"]["status"] == "409" and "scimType" not in ops[0]["response"]
    assert ops[4]["response"]["scimType"] == "invalidValue"
    assert "already used" in ops[4]["response"]["detail"]
    assert scim.get('/Users?filter=userName eq "two@x.io"').json["totalResults"] == 0
    assert scim.get('/Groups?filter=displayName sw "A"').json["totalResults"] == 0


def test_bulk_errors_are_per_operation_and_fail_on_errors_stops(scim: ScimClient) -> None:
    r = scim.post("/Bulk", {"schemas": [BULK], "failOnErrors": 1, "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "a", "data": user("dup@x.io")},
        {"method": "POST", "path": "/Users", "bulkId": "b", "data": user("dup@x.io")},
        {"method": "POST", "path": "/Users", "bulkId": "c", "data": user("never@x.io")},
    ]})
    ops = r.json["Operations"]
    assert [o["status"] for o in ops] == ["201", "409"]
    assert ops[1]["response"]["scimType"] == "uniqueness"
    assert scim.get('/Users?filter=userName eq "never@x.io"').json["totalResults"] == 0
    assert scim.get('/Users?filter=userName eq "dup@x.io"').json["totalResults"] == 1


def test_a_bulk_version_is_a_condition_even_when_it_is_not_ours(scim: ScimClient) -> None:
    # RFC 7644 §3.7 `version`: a tag we never issued matches nothing (it used to drop the
    # condition and write anyway); a list works as in If-Match; a non-string is refused.
    uid = scim.post("/Users", user("versioned@x.io")).json["id"]
    patch_op = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

    def rename(version: Any, to: str) -> dict[str, Any]:
        return {"method": "PATCH", "path": f"/Users/{uid}", "version": version,
                "data": {"schemas": [patch_op], "Operations": [
                    {"op": "replace", "path": "displayName", "value": to}]}}

    r = scim.post("/Bulk", {"schemas": [BULK], "Operations": [
        rename('W/"abc"', "Foreign"), rename(1, "Number"), rename("W/1", "Bare"),
        rename('W/"5", W/"1"', "Listed")]})
    ops = r.json["Operations"]
    assert [o["status"] for o in ops] == ["412", "400", "400", "200"], ops
    assert scim.get(f"/Users/{uid}").json["displayName"] == "Listed"


def test_bulk_limits(scim: ScimClient) -> None:
    too_many = {"schemas": [BULK], "Operations": [
        {"method": "DELETE", "path": "/Users/x"}] * 1001}
    refused = scim.post("/Bulk", too_many)
    assert refused.status_code == 413
    assert refused.json["detail"] == (
        "Bulk requests may have at most 1,000 operations (maxOperations in "
        "/ServiceProviderConfig); this one has 1,001. Send them in several requests.")
    assert scim.post("/Bulk", {"Operations": []}).json["scimType"] == "invalidSyntax"


def test_later_operations_see_what_earlier_ones_wrote(scim: ScimClient) -> None:
    # Within one /Bulk request the session remembers users' modules and groups; a group
    # change must make it forget, or a later PATCH would start from a stale user.
    ext = "urn:connector:params:scim:schemas:extension:2.0:User"
    patch_op = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
    r = scim.post("/Bulk", {"schemas": [BULK], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "u",
         "data": user("mods@x.io", **{ext: {"modules": ["Hybrid"]}})},
        {"method": "POST", "path": "/Groups", "bulkId": "g", "data": group("Seen", ["bulkId:u"])},
        {"method": "PATCH", "path": "/Users/bulkId:u", "data": {"schemas": [patch_op],
         "Operations": [{"op": "add", "path": f"{ext}:modules", "value": ["Engage"]}]}},
        {"method": "PATCH", "path": "/Groups/bulkId:g", "data": {"schemas": [patch_op],
         "Operations": [{"op": "replace", "path": "displayName", "value": "Renamed"}]}},
        {"method": "PATCH", "path": "/Users/bulkId:u", "data": {"schemas": [patch_op],
         "Operations": [{"op": "replace", "path": "displayName", "value": "M"}]}},
    ]})
    assert [o["status"] for o in r.json["Operations"]] == ["201", "201", "200", "200", "200"]
    uid = r.json["Operations"][0]["location"].rsplit("/", 1)[1]
    body = scim.get(f"/Users/{uid}").json
    assert body[ext]["modules"] == ["Engage", "Hybrid"]
    assert [g["display"] for g in body["groups"]] == ["Renamed"]


def test_a_connection_lost_mid_bulk_answers_503_and_commits_nothing(
        scim: ScimClient, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: the request's connection dies between two operations (the server
    ends it, as a failover or a restart does). The bulk answered 500 (its commit met
    the dead transaction); it answers 503 with Retry-After, as a single POST does, and
    the first operation is not half-kept."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a server-side connection kill is PostgreSQL's")
    from scim import resources

    real = resources.create_user
    calls = {"n": 0}

    def create_then_lose_the_connection(session: Any, ctx: Any, data: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the server ends this very connection
            session.connection().exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
        return real(session, ctx, data)

    monkeypatch.setattr(resources, "create_user", create_then_lose_the_connection)
    response = scim.post("/Bulk", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [{"method": "POST", "path": "/Users", "bulkId": f"u{i}",
                        "data": user(userName=f"bulk{i}@example.com")} for i in range(3)]})
    assert response.status_code == 503, response.json
    assert response.headers["Retry-After"]
    assert response.json["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    monkeypatch.undo()
    assert scim.get('/Users?filter=userName sw "bulk"').json["totalResults"] == 0
    assert scim.post("/Users", user()).status_code == 201  # the pool recovered


def test_a_bulk_request_over_max_payload_size_says_the_sizes(tmp_path: Any, engine: Any,
                                                             database_url: str) -> None:
    """It said only "Bulk requests are limited to N bytes."; now the request's size too,
    where the limit is published, and what to do."""
    from connector.app import create_app
    from connector.config import load_settings
    from tests.support.clients import make_tenant

    _tenant, token = make_tenant(engine, "Bulky")
    settings = load_settings(environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
                                      "CONNECTOR_DATABASE__URL": database_url,
                                      "CONNECTOR_SCIM__BULK_MAX_PAYLOAD_BYTES": "500"})
    body = {"schemas": [BULK], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": f"b{n}", "data": user(f"b{n}@x.io")}
        for n in range(5)]}
    with create_app(settings, engine=engine).test_client() as client:
        refused = client.post("/scim/v2/Bulk", json=body, headers={
            "Authorization": f"Bearer {token}"})
    assert refused.status_code == 413
    size = refused.request.content_length
    assert refused.json["detail"] == (
        "Bulk requests may have at most 500 bytes (maxPayloadSize in /ServiceProviderConfig); "
        f"this one has {size:,}. Send its operations in several requests.")
