"""Bad input gets the SCIM error format, the right status, and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connector.models import Event, User
from tests.scim.factories import patch, user
from tests.support.clients import SCIM, ApiClient, ScimClient

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def assert_error(r, status: int, scim_type: str | None = None) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/scim+json"
    assert r.json["schemas"] == [ERROR]
    assert r.json["status"] == str(status)
    if scim_type:
        assert r.json.get("scimType") == scim_type
    assert "Traceback" not in r.get_data(as_text=True)


def nothing_written(session: Session) -> None:
    assert session.scalar(select(func.count()).select_from(User)) == 0
    assert session.scalar(select(func.count()).select_from(Event)
                          .where(Event.subject_type == "user")) == 0


def test_no_token_and_bad_token(client) -> None:  # type: ignore[no-untyped-def]
    missing = client.get(f"{SCIM}/Users")
    assert_error(missing, 401)
    # RFC 6750 §3: the 401 names the scheme; a token that was sent and refused says so.
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="SCIM"'
    wrong = client.get(f"{SCIM}/Users", headers={"Authorization": "Bearer nope"})
    assert_error(wrong, 401)
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="SCIM", error="invalid_token"'
    assert_error(client.get(f"{SCIM}/Users", headers={"Authorization": "Basic eA=="}), 401)


def test_malformed_json(scim: ScimClient, session: Session) -> None:
    r = scim.request("POST", "/Users", data="{not json",
                     headers={"Content-Type": "application/scim+json"})
    assert_error(r, 400, "invalidSyntax")
    nothing_written(session)


def test_wrong_media_type(scim: ScimClient) -> None:
    r = scim.request("POST", "/Users", data="userName=x",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(r, 415)


def test_plain_json_is_accepted(scim: ScimClient) -> None:
    r = scim.post("/Users", user(), headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201


@pytest.mark.parametrize("body", [
    [],
    {"userName": "no-schemas"},
    {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "userName": "x"},
])
def test_bad_envelope(scim: ScimClient, session: Session, body: object) -> None:
    assert_error(scim.post("/Users", body), 400, "invalidSyntax")
    nothing_written(session)


@pytest.mark.parametrize("extra", [
    {"userName": 42},
    {"active": "maybe"},
    {"emails": "not-a-list-of-objects"},
    {"name": "flat"},
    {"shoeSize": 44},
    {"emails": [{"value": "a@b", "colour": "red"}]},
])
def test_wrong_types_and_unknown_attributes(scim: ScimClient, session: Session,
                                            extra: dict[str, object]) -> None:
    r = scim.post("/Users", {**user(), **extra})
    assert_error(r, 400, "invalidValue")
    nothing_written(session)


def test_missing_user_name(scim: ScimClient) -> None:
    body = user()
    del body["userName"]
    assert_error(scim.post("/Users", body), 400, "invalidValue")


def test_oversized_body(scim: ScimClient, app, partner: ApiClient) -> None:  # type: ignore[no-untyped-def]
    """The 413 says the size, the limit and its setting, on SCIM and the admin API alike
    (the API said werkzeug's "The data value transmitted exceeds the capacity limit.")."""
    limit = app.config["MAX_CONTENT_LENGTH"]
    big = user(displayName="x" * (limit + 10))
    response = scim.post("/Users", big)
    assert_error(response, 413)
    said = (f"This server takes request bodies of at most {limit:,} bytes ([server] "
            f"max_body_bytes); this one is {response.request.content_length:,} bytes. Send it "
            "in smaller requests.")
    assert response.json["detail"] == said
    api = partner.post(f"/tenants/{scim.tenant_id}/users", {"userName": "x" * (limit + 10)})
    assert api.status_code == 413 and api.json["detail"].startswith(
        f"This server takes request bodies of at most {limit:,} bytes ([server] max_body_bytes)")


def test_unknown_endpoint_and_method(scim: ScimClient) -> None:
    assert_error(scim.get("/Nope"), 404)
    not_allowed = scim.request("PATCH", "/Users")
    assert_error(not_allowed, 405)
    # RFC 9110 §15.5.6: a 405 says which methods the resource supports.
    assert not_allowed.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
    on_one = scim.request("POST", "/Users/some-id")
    assert_error(on_one, 405)
    assert on_one.headers["Allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH, PUT"
    # Flask's own answer to OPTIONS has no body, and no HTML type either.
    options = scim.request("OPTIONS", "/Users")
    assert options.status_code == 200 and "Content-Type" not in options.headers


def test_bad_filter(scim: ScimClient) -> None:
    for bad in ('userName eq', 'nope eq "x"', 'userName xx "a"', "((", 'password eq "x"',
                'userName eq "a" and nickName eq "b" or'):
        assert_error(scim.get("/Users", query_string={"filter": bad}), 400, "invalidFilter")


def test_bad_paging_parameters(scim: ScimClient) -> None:
    assert_error(scim.get("/Users?count=ten"), 400, "invalidValue")
    assert scim.get("/Users?startIndex=-5").json["startIndex"] == 1


def test_bad_patch_leaves_the_user_untouched(scim: ScimClient) -> None:
    created = scim.post("/Users", user()).json
    r = scim.patch(f"/Users/{created['id']}", patch(
        {"op": "replace", "path": "displayName", "value": "Changed"},
        {"op": "replace", "path": "nope", "value": 1}))
    assert r.status_code == 400
    after = scim.get(f"/Users/{created['id']}").json
    assert after["displayName"] == created["displayName"]
    assert after["meta"]["version"] == created["meta"]["version"]


def test_patch_without_patchop_schema(scim: ScimClient) -> None:
    uid = scim.post("/Users", user()).json["id"]
    assert_error(scim.patch(f"/Users/{uid}", {"Operations": []}), 400, "invalidSyntax")


def test_not_found(scim: ScimClient) -> None:
    assert_error(scim.get("/Users/does-not-exist"), 404)
    assert_error(scim.put("/Users/does-not-exist", user()), 404)
    assert_error(scim.delete("/Groups/does-not-exist"), 404)


# -- text the databases cannot store ------------------------------------------------------


def test_nul_and_lone_surrogates_are_invalid_values_not_database_errors(scim: Any) -> None:
    for user_name in ("nul\u0000name@x.io", "half\ud800@x.io"):
        body = json.dumps({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                           "userName": user_name})
        response = scim.client.post("/scim/v2/Users", data=body, headers={
            "Authorization": f"Bearer {scim.token}", "Content-Type": "application/scim+json"})
        assert response.status_code == 400, response.json
        assert response.json["scimType"] == "invalidValue"
    assert scim.get("/Users/a%00b").status_code == 404
    bad_filter = scim.get('/Users?filter=userName eq "a%00b"')
    assert bad_filter.status_code == 400 and bad_filter.json["scimType"] == "invalidValue"
    for escaped in ('userName eq "a\\u0000b"', 'displayName co "\\u0000"',
                    'emails[value sw "\\ud800"]'):
        answer = scim.get("/Users", query_string={"filter": escaped})
        assert answer.status_code == 400, (escaped, answer.json)
    assert scim.get("/Users").json["totalResults"] == 0


def test_json_nested_beyond_reason_is_invalid_syntax(scim: Any) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = scim.client.post("/scim/v2/Users", data=deep, headers={
        "Authorization": f"Bearer {scim.token}", "Content-Type": "application/scim+json"})
    assert response.status_code == 400 and response.json["scimType"] == "invalidSyntax"


# What gunicorn (and any server that de-chunks) says of a body without Content-Length.
CHUNKED = {"wsgi.input_terminated": True}


def test_a_chunked_body_over_the_limit_is_refused_not_cut(scim: ScimClient, app) -> None:  # type: ignore[no-untyped-def]
    """Without a Content-Length (chunked), the body was cut at the limit and the rest
    of the request went on; now it is a 413 like a declared one."""
    import io

    limit = app.config["MAX_CONTENT_LENGTH"]
    body = json.dumps(user(displayName="x" * 10)).encode()
    padded = body[:-1] + b" " * (limit + 10 - len(body)) + b"}"  # valid JSON past the limit
    response = scim.client.post(
        "/scim/v2/Users", input_stream=io.BytesIO(padded),
        headers={"Authorization": f"Bearer {scim.token}", "Transfer-Encoding": "chunked",
                 "Content-Type": "application/scim+json"},
        environ_overrides=CHUNKED)
    assert_error(response, 413)
    assert response.json["detail"].endswith("Send it in smaller requests.")
    small = scim.client.post(
        "/scim/v2/Users", input_stream=io.BytesIO(body),
        headers={"Authorization": f"Bearer {scim.token}", "Transfer-Encoding": "chunked",
                 "Content-Type": "application/scim+json"},
        environ_overrides=CHUNKED)
    assert small.status_code == 201, small.json


def test_bodies_the_fast_parser_refuses_are_read_as_the_standard_one_reads_them(
        scim: ScimClient) -> None:
    """orjson reads bodies first; what it refuses (JSON in UTF-16, a number beyond 64
    bits) the standard parser decides, as before: read, then judged by the schema."""
    headers = {"Authorization": f"Bearer {scim.token}", "Content-Type": "application/scim+json"}
    body = json.dumps({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                       "userName": "utf16@x.io"})
    created = scim.client.post("/scim/v2/Users", data=body.encode("utf-16"), headers=headers)
    assert created.status_code == 201, created.json
    assert created.json["userName"] == "utf16@x.io"
    big = ('{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], '
           '"userName": "big@x.io", "externalId": 123456789012345678901234567890}')
    refused = scim.client.post("/scim/v2/Users", data=big, headers=headers)
    assert refused.status_code == 400 and refused.json["scimType"] == "invalidValue"
    assert "externalId" in refused.json["detail"]
    broken = scim.client.post("/scim/v2/Users", data=b'{"userName": ', headers=headers)
    assert broken.status_code == 400 and broken.json["scimType"] == "invalidSyntax"
    assert "not valid JSON" in broken.json["detail"]


def test_doubled_and_trailing_slashes_reach_the_resource(scim: ScimClient) -> None:
    """A base URL typed with a trailing "/" gives `/scim/v2//Users`: no redirect (an
    identity provider does not repeat its POST after a 308), the resource itself."""
    created = scim.post("//Users", user())
    assert created.status_code == 201, created.get_data(as_text=True)
    uid = created.json["id"]
    assert scim.get(f"//Users//{uid}").json["id"] == uid
    assert scim.get(f"/Users/{uid}/").json["id"] == uid
    listed = scim.get("/Users/", query_string={"filter": f'id eq "{uid}"'})
    assert listed.status_code == 200 and listed.json["totalResults"] == 1
    renamed = scim.patch(f"//Users/{uid}/", patch(
        {"op": "replace", "path": "displayName", "value": "Slashed"}))
    assert renamed.status_code == 200 and renamed.json["displayName"] == "Slashed"
    assert scim.get("//ServiceProviderConfig").status_code == 200
    assert_error(scim.get("//Nope"), 404)


def test_an_unknown_sort_order_is_refused(scim: ScimClient) -> None:
    assert_error(scim.get("/Users?sortBy=userName&sortOrder=sideways"), 400, "invalidValue")
    assert scim.get("/Users?sortBy=userName&sortOrder=DESCENDING").status_code == 200
    assert scim.get("/Users?sortBy=userName&sortOrder=").status_code == 200
