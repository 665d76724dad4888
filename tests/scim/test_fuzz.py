"""Hypothesis against the SCIM endpoint (issue 17's fuzz), on SQLite and PostgreSQL:
random and grammar-shaped filters on /Users, /Groups and every .search, and random and
schema-shaped JSON bodies for POST, PUT, PATCH and /Bulk. Whatever comes in, the answer is
never a 5xx, and an error is a SCIM Error whose `status` is the HTTP status.

Requests go through the Flask test client to the real app and database (no server
between): thousands of requests in seconds. tests/api/test_schemathesis.py fuzzes the
admin API over real HTTP, tests/connector/test_hostile_requests.py a served process.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scim.schemas import (
    BULK_REQUEST,
    CONNECTOR_GROUP,
    CONNECTOR_USER,
    ENTERPRISE_USER,
    GROUP,
    PATCH_OP,
    SEARCH_REQUEST,
    USER,
    USER_SCHEMA,
    Schema,
)
from scim.schemas import GROUP_SCHEMA as GROUP_SCHEMA_DEF
from tests.scim.factories import group, user
from tests.support.clients import ScimClient

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


def answered(response: Any, method: str, path: str) -> Any:
    """Never a 5xx; an error in SCIM's format with the HTTP status in the body."""
    raw = response.get_data(as_text=True)
    where = f"{method} {path} -> {response.status_code}: {raw[:300]}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        assert response.mimetype == "application/scim+json", where
        body = json.loads(raw)
        assert body["schemas"] == [ERROR] and body["status"] == str(response.status_code), where
        assert isinstance(body["detail"], str) and body["detail"], where
    return response


def send(scim: ScimClient, method: str, path: str, body: Any = None,
         extra: dict[str, str] | None = None, **kw: Any) -> Any:
    headers = {"Content-Type": "application/scim+json", **(extra or {})}
    data = None if body is None else json.dumps(body)
    return answered(scim.request(method, path, data=data, headers=headers, **kw), method, path)


@pytest.fixture
def seeded(scim: ScimClient) -> dict[str, str]:
    """A user and a group for filters to find and writes to reach (404s test little)."""
    made = scim.post("/Users", user("fuzz@example.com", title="Fuzzer",
                                    emails=[{"value": "fuzz@example.com", "type": "work"}]))
    assert made.status_code == 201, made.json
    team = scim.post("/Groups", group("Fuzzers", [made.json["id"]]))
    assert team.status_code == 201, team.json
    return {"user": made.json["id"], "group": team.json["id"]}


# -- filters ---------------------------------------------------------------------------------

# No surrogates: a query string is UTF-8 (the app's own refusal of them is tested elsewhere).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def attribute_names(schema: Schema) -> list[str]:
    names = []
    for attr in schema.attributes:
        names.append(attr.name)
        names += [f"{attr.name}.{sub.name}" for sub in attr.sub_attributes]
    return names


PATHS = st.sampled_from([
    *attribute_names(USER_SCHEMA), *attribute_names(GROUP_SCHEMA_DEF), "id", "externalId",
    "meta.created", "meta.lastModified", "meta.resourceType", "meta.version",
    f"{ENTERPRISE_USER}:department", f"{ENTERPRISE_USER}:manager.value",
    f"{CONNECTOR_USER}:modules", f"{CONNECTOR_USER}:desklessPercent",
    f"{CONNECTOR_USER}:guest", f"{CONNECTOR_GROUP}:modules", f"{USER}:userName",
    "urn:unknown:2.0:User:x", "nope", "emails[type", "members.$ref", "USERNAME", "a.b.c",
])
OPERATORS = st.sampled_from(["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "EQ",
                             "Co", "regex", "=", ""])
VALUES = st.one_of(
    TEXT.map(json.dumps),  # a quoted string, escapes and all
    st.integers().map(str), st.just("99999999999999999999"), st.just("-99999999999999999999"),
    st.floats(allow_nan=False).map(repr), st.sampled_from(["true", "false", "null", "True"]),
    st.sampled_from(['"2024-01-01T00:00:00Z"', '"2024-13-45T99:00:00Z"', '"0001-01-01"',
                     '"9999-12-31T23:59:59.999999+14:00"', '"not a date"', '"%"', '"_"',
                     '"\\\\"', '"\\u0000"', "'single'", '"unterminated']),
)
COMPARISONS = st.one_of(
    st.builds(lambda p, o, v: f"{p} {o} {v}", PATHS, OPERATORS, VALUES),
    PATHS.map(lambda p: f"{p} pr"),
)
FILTERS = st.recursive(
    COMPARISONS,
    lambda inner: st.one_of(
        st.builds(lambda a, j, b: f"{a} {j} {b}", inner, st.sampled_from(["and", "or", "AND"]),
                  inner),
        inner.map(lambda f: f"not ({f})"),
        inner.map(lambda f: f"({f})"),
        st.builds(lambda p, f: f"{p}[{f}]", st.sampled_from(["emails", "members", "addresses",
                                                             "phoneNumbers", "x"]), inner),
    ),
    max_leaves=6,
)
ANY_FILTER = st.one_of(FILTERS, TEXT, st.lists(st.sampled_from(
    ['"', "(", ")", "[", "]", " and ", " or ", "not", " pr", "userName", " eq ", "\\", ".",
     ":", "urn:", "emails", "1e999", "-", " "]), max_size=20).map("".join))
PAGING = st.fixed_dictionaries({}, optional={
    "sortBy": st.one_of(PATHS, TEXT), "sortOrder": st.sampled_from(["ascending",
                                                                    "descending", "up"]),
    "startIndex": st.one_of(st.integers(), st.just("99999999999999999999"), TEXT),
    "count": st.one_of(st.integers(), st.just("-1"), TEXT),
    "attributes": st.one_of(PATHS, TEXT), "excludedAttributes": st.one_of(PATHS, TEXT),
})


@FUZZ
@given(text=ANY_FILTER, paging=PAGING)
def test_filters_never_answer_a_server_error(scim: ScimClient, seeded: dict[str, str],
                                             text: str, paging: dict[str, Any]) -> None:
    query = {"filter": text, **{k: str(v) for k, v in paging.items()}}
    for path in ("/Users", "/Groups"):
        r = answered(scim.get(path, query_string=query), "GET", path)
        if r.status_code == 200:
            assert r.json["schemas"] == [LIST]
        elif r.status_code == 400:
            assert r.json.get("scimType") in ("invalidFilter", "invalidValue", "invalidPath",
                                              "invalidSyntax", None)
    search = {"schemas": [SEARCH_REQUEST], "filter": text, **paging}
    for path in ("/Users/.search", "/Groups/.search", "/.search"):
        send(scim, "POST", path, search)


# -- bodies ----------------------------------------------------------------------------------

# Texts past the columns' and index rows' sizes (a 500 on PostgreSQL before limits).
LONG = st.sampled_from(["x" * 600, "界" * 3000, "a" * 100_000])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.just(2**70),
                    st.floats(allow_nan=False, allow_infinity=False), TEXT, LONG,
                    st.just("2024-01-01T00:00:00Z"))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(TEXT, PATHS), inner, max_size=4)),
    max_leaves=12)
USER_KEYS = st.sampled_from([a.name for a in USER_SCHEMA.attributes]
                            + ["id", "externalId", "meta", ENTERPRISE_USER, CONNECTOR_USER,
                               "urn:unknown", "emails[type eq \"work\"].value"])


def shaped(schema_urn: str, keys: Any) -> Any:
    """A resource of the right kind with random members and values."""
    return st.builds(lambda extra, schemas: {"schemas": schemas, **extra},
                     st.dictionaries(keys, JSON, max_size=6),
                     st.one_of(st.just([schema_urn]), st.just([schema_urn, ENTERPRISE_USER,
                                                               CONNECTOR_USER]), JSON))


# A valid user but for one attribute (a sub-attribute through a one-element list or an
# object), the shape most likely to reach the database; then anything at all.
ONE_BAD = st.builds(
    lambda n, key, sub, value, wrap: user(f"u{n}@example.com", **{
        key: value if sub is None else ([{sub: value}] if wrap else {sub: value})}),
    st.integers(0, 50), USER_KEYS, st.one_of(st.none(), st.sampled_from(
        ["value", "type", "display", "primary", "givenName", "department", "streetAddress",
         "modules", "$ref", "x"])), st.one_of(LONG, SCALARS, JSON), st.booleans())
USERS = st.one_of(ONE_BAD, shaped(USER, USER_KEYS), JSON)
GROUPS = st.one_of(shaped(GROUP, st.sampled_from(["displayName", "members", "externalId",
                                                  CONNECTOR_GROUP, "x"])), JSON)
PATCH_OPS = st.lists(st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "replace", "remove", "Replace", "move", 1])},
    optional={"path": st.one_of(PATHS, ANY_FILTER, st.just('members[value eq "x"]'),
                                st.just('emails[type eq "work"].value')),
              "value": JSON}), max_size=4)
PATCHES = st.one_of(
    st.builds(lambda ops: {"schemas": [PATCH_OP], "Operations": ops}, PATCH_OPS), JSON)


IF_MATCH = st.one_of(st.none(), st.just("*"), st.just('W/"1"'), st.just('W/"99999999999999999999"'),
                    TEXT.filter(lambda t: t.isprintable() and t.isascii()))


@FUZZ
@given(body=USERS, patch=PATCHES, if_match=IF_MATCH, projection=PAGING)
def test_user_bodies_never_answer_a_server_error(
        scim: ScimClient, seeded: dict[str, str], body: Any, patch: Any,
        if_match: str | None, projection: dict[str, Any]) -> None:
    uid = seeded["user"]
    headers = {} if if_match is None else {"If-Match": if_match}
    query = {k: str(v) for k, v in projection.items()}
    send(scim, "POST", "/Users", body, query_string=query)
    send(scim, "PUT", f"/Users/{uid}", body, query_string=query, extra=headers)
    send(scim, "PATCH", f"/Users/{uid}", patch, query_string=query, extra=headers)
    got = answered(scim.get(f"/Users/{uid}", query_string=query), "GET", "/Users/{id}")
    assert got.status_code in (200, 400, 404)


@FUZZ
@given(body=GROUPS, patch=PATCHES)
def test_group_bodies_never_answer_a_server_error(scim: ScimClient, seeded: dict[str, str],
                                                  body: Any, patch: Any) -> None:
    gid = seeded["group"]
    send(scim, "POST", "/Groups", body)
    send(scim, "PUT", f"/Groups/{gid}", body)
    send(scim, "PATCH", f"/Groups/{gid}", patch)


BULK_OPS = st.lists(st.fixed_dictionaries(
    {"method": st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET", "post", 7])},
    optional={"path": st.one_of(st.sampled_from(["/Users", "/Groups", "/Users/bulkId:a",
                                                 "/Nope", ""]), TEXT),
              "bulkId": st.one_of(st.sampled_from(["a", "b"]), JSON),
              "version": JSON, "data": st.one_of(USERS, GROUPS, PATCHES)}), max_size=4)


@FUZZ
@given(ops=st.one_of(BULK_OPS, JSON), fail_on_errors=st.one_of(st.none(), JSON))
def test_bulk_bodies_never_answer_a_server_error(scim: ScimClient, seeded: dict[str, str],
                                                 ops: Any, fail_on_errors: Any) -> None:
    body: dict[str, Any] = {"schemas": [BULK_REQUEST], "Operations": ops}
    if fail_on_errors is not None:
        body["failOnErrors"] = fail_on_errors
    r = send(scim, "POST", "/Bulk", body)
    if r.status_code == 200:
        for op in r.json["Operations"]:
            assert int(op["status"]) < 500, op
