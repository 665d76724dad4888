"""Maximum lengths (docs/scim.md, "Maximum lengths"): a text over its attribute's limit is
a 400 invalidValue naming the attribute on every SCIM write (POST, PUT, PATCH, Bulk) and
changes nothing; a text at the limit is stored and read back, on SQLite (which checks no
length) as on PostgreSQL (which refused such values with a 500 before)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connector import limits
from connector.models import Group, User
from tests.scim.factories import patch, user
from tests.scim.test_errors import assert_error
from tests.support.clients import ScimClient

GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def text(n: int, wide: bool = True) -> str:
    """n characters that do not compress, each of 3 bytes in UTF-8 (`wide`, the hardest
    case for an index row) or of one, the same on every run."""
    rng = random.Random(n)
    low, high = (0x4E00, 0x9FFF) if wide else (ord("a"), ord("z"))
    return "".join(chr(rng.randrange(low, high)) for _ in range(n))


def too_long(r: Any, attribute: str) -> None:
    assert_error(r, 400, "invalidValue")
    assert f"'{attribute}'" in r.json["detail"] and "at most" in r.json["detail"]


def count(session: Session, model: Any) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


LIMITED: list[tuple[str, int, Any]] = [
    ("userName", limits.NAME, lambda t: {"userName": t}),
    ("displayName", limits.NAME, lambda t: {"displayName": t}),
    ("externalId", limits.EXTERNAL_ID, lambda t: {"externalId": t}),
    ("name.givenName", limits.NAME, lambda t: {"name": {"givenName": t}}),
    ("emails.value", limits.NAME, lambda t: {"emails": [{"value": t, "type": "work"}]}),
    ("emails.type", limits.TYPE, lambda t: {"emails": [{"value": "a@example.com", "type": t}]}),
    ("photos.value", limits.URL, lambda t: {"photos": [{"value": t}]}),
    ("profileUrl", limits.URL, lambda t: {"profileUrl": t}),
    ("addresses.streetAddress", limits.TEXT, lambda t: {"addresses": [{"streetAddress": t}]}),
    (f"{ENTERPRISE}:department", limits.NAME, lambda t: {ENTERPRISE: {"department": t}}),
]


@pytest.mark.parametrize(("attribute", "limit", "make"), LIMITED, ids=[a for a, *_ in LIMITED])
def test_a_user_attribute_at_its_limit_is_kept_and_one_character_more_is_refused(
        scim: ScimClient, session: Session, attribute: str, limit: int, make: Any) -> None:
    longest = text(limit, wide=limit < limits.URL)
    over = make(longest + "x")
    too_long(scim.post("/Users", user("over@example.com", **over)), attribute)
    assert count(session, User) == 0

    at = scim.post("/Users", user("at@example.com", **make(longest)))
    assert at.status_code == 201, at.get_data(as_text=True)
    stored = scim.get(f"/Users/{at.json['id']}").json
    assert longest in json.dumps(stored, ensure_ascii=False)

    # PUT and PATCH check the same limits, and change nothing when refused.
    uid, version = at.json["id"], at.json["meta"]["version"]
    too_long(scim.put(f"/Users/{uid}", user("at@example.com", **over)), attribute)
    key = next(iter(over))
    too_long(scim.patch(f"/Users/{uid}", patch({"op": "replace", "path": key,
                                                  "value": over[key]})), attribute)
    assert scim.get(f"/Users/{uid}").json["meta"]["version"] == version


def test_indexed_values_also_have_a_size_in_bytes(scim: ScimClient, session: Session) -> None:
    """An element of a multi-valued attribute is indexed for filtering: at most 2,048
    bytes in UTF-8 as well (an index row's limit on PostgreSQL), whatever its type."""
    wide = text(limits.INDEXED_BYTES // 3 + 1)  # 2,049 bytes
    r = scim.post("/Users", user("u@example.com", photos=[{"value": wide}]))
    too_long(r, "photos.value")
    assert "bytes" in r.json["detail"]
    certificate = "QUJD" * (limits.URL // 4)  # base64, at the limit
    made = scim.post("/Users", user("u@example.com", photos=[{"value": wide[:-1]}],
                                    x509Certificates=[{"value": certificate}]))
    assert made.status_code == 201, made.get_data(as_text=True)
    too_long(scim.post("/Users", user("v@example.com",
                                      x509Certificates=[{"value": certificate + "QUJD"}])),
             "x509Certificates.value")


def test_group_names_external_ids_and_member_ids_have_limits(scim: ScimClient,
                                                             session: Session) -> None:
    body = {"schemas": [GROUP], "displayName": text(limits.NAME + 1)}
    too_long(scim.post("/Groups", body), "displayName")
    too_long(scim.post("/Groups", {"schemas": [GROUP], "displayName": "G",
                                   "externalId": "e" * (limits.EXTERNAL_ID + 1)}), "externalId")
    too_long(scim.post("/Groups", {"schemas": [GROUP], "displayName": "G",
                                   "members": [{"value": "m" * (limits.ID + 1)}]}),
             "members.value")
    assert count(session, Group) == 0
    made = scim.post("/Groups", {"schemas": [GROUP], "displayName": text(limits.NAME)})
    assert made.status_code == 201
    too_long(scim.patch(f"/Groups/{made.json['id']}", patch(
        {"op": "add", "path": "members", "value": [{"value": "m" * (limits.ID + 1)}]})),
        "members.value")
    too_long(scim.patch(f"/Groups/{made.json['id']}", patch(
        {"op": "replace", "path": "displayName", "value": text(limits.NAME + 1)})),
        "displayName")


def test_a_hundred_thousand_characters_are_a_clear_refusal_everywhere(
        scim: ScimClient, session: Session) -> None:
    """The issue's case: a 100,000-character userName (500 on PostgreSQL before)."""
    huge = "a" * 100_000
    too_long(scim.post("/Users", user(huge, emails=[])), "userName")
    too_long(scim.post("/Users", user("u@example.com", emails=[{"value": text(100_000)}])),
             "emails.value")
    bulk = scim.post("/Bulk", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "a",
             "data": user(huge, emails=[])},
            {"method": "POST", "path": "/Users", "bulkId": "b", "data": user("ok@example.com")},
        ]})
    assert bulk.status_code == 200, bulk.get_data(as_text=True)
    first, second = bulk.json["Operations"]
    assert first["status"] == "400" and first["response"]["scimType"] == "invalidValue"
    assert "'userName'" in first["response"]["detail"]
    assert second["status"] == "201"
    assert count(session, User) == 1


def test_an_over_long_id_in_the_path_is_named(scim: ScimClient) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        for kind in ("Users", "Groups"):
            r = scim.request(method, f"/{kind}/{'i' * (limits.ID + 1)}",
                             {} if method in ("PUT", "PATCH") else None)
            assert_error(r, 400, "invalidValue")
            assert "id in the path" in r.json["detail"]
    assert_error(scim.get(f"/Users/{'i' * limits.ID}"), 404)


def test_folded_names_that_grow_stay_within_the_columns(scim: ScimClient) -> None:
    """'ﬃ' folds to 'ffi': 256 of them are 768 characters once folded, more than the
    column of folded names holds; such a name is refused, not a database error."""
    too_long(scim.post("/Users", user("ﬃ" * limits.NAME, emails=[])), "userName")
    made = scim.post("/Users", user("ß" * limits.NAME, emails=[]))  # folds to 512: fits
    assert made.status_code == 201, made.get_data(as_text=True)


def test_a_url_over_4_kb_is_a_scim_414_that_points_to_search(scim: ScimClient) -> None:
    from connector import serving

    fits = 'userName eq "' + "f" * (serving.MAX_URL_BYTES - 200) + '"'
    assert scim.get("/Users", query_string={"filter": fits}).status_code == 200
    r = scim.get("/Users", query_string={"filter": fits + " or " + fits})
    assert_error(r, 414)
    assert "POST /Users/.search" in r.json["detail"]
    assert_error(scim.get("/Users/" + "u" * serving.MAX_URL_BYTES), 414)
    assert_error(scim.request("GET", "/NoSuchEndpoint/" + "u" * serving.MAX_URL_BYTES), 414)
