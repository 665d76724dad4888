"""Statement counts of the SCIM reads: a page of 50 users, a group of 50 members or a user
in 50 groups costs the statements that 5 do (no N+1 as a tenant grows)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from scim.schemas import CONNECTOR_GROUP, CONNECTOR_USER, SEARCH_REQUEST
from tests.scim.factories import created, group, patch, user, users_in_a_group
from tests.support.clients import ScimClient
from tests.support.statements import assert_flat


def listed(scim: ScimClient, path: str, n: int, body: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    response = scim.post(path, body) if body is not None else scim.get(path)
    assert response.status_code == 200, response.json
    assert len(response.json["Resources"]) == n
    return response.json  # type: ignore[no-any-return]


def test_listing_users(scim: ScimClient, engine: Engine) -> None:
    assert_flat(engine, lambda k: users_in_a_group(scim, k),
                lambda n: listed(scim, "/Users?count=200", n))


def test_filtering_users(scim: ScimClient, engine: Engine) -> None:
    assert_flat(engine, lambda k: users_in_a_group(scim, k),
                lambda n: listed(scim, '/Users?count=200&filter=userName co "@example.com"'
                                       ' and active eq true', n))


def test_searching_users(scim: ScimClient, engine: Engine) -> None:
    body = {"schemas": [SEARCH_REQUEST], "filter": 'emails.value ew "@example.com"',
            "count": 200}
    assert_flat(engine, lambda k: users_in_a_group(scim, k),
                lambda n: listed(scim, "/Users/.search", n, body))


def test_searching_everything(scim: ScimClient, engine: Engine) -> None:
    """The root search spans users, then groups: k users and one group per add."""
    added = {"users": 0, "groups": 0}

    def add(k: int) -> None:
        users_in_a_group(scim, k)
        added["users"] += k
        added["groups"] += 1

    def read(_n: int) -> None:
        body = listed(scim, "/.search", added["users"] + added["groups"],
                      {"schemas": [SEARCH_REQUEST], "count": 200})
        assert body["totalResults"] == added["users"] + added["groups"]

    assert_flat(engine, add, read)


def test_one_user_in_many_groups(scim: ScimClient, engine: Engine) -> None:
    uid = created(scim.post("/Users", user(**{CONNECTOR_USER: {"modules": ["Hybrid"]}})))["id"]

    def add(k: int) -> None:
        for _ in range(k):
            created(scim.post("/Groups", group(members=[uid],
                                            **{CONNECTOR_GROUP: {"modules": ["Engage"]}})))

    def read(n: int) -> None:
        response = scim.get(f"/Users/{uid}")
        assert response.status_code == 200 and len(response.json["groups"]) == n

    assert_flat(engine, add, read)


def test_listing_groups(scim: ScimClient, engine: Engine) -> None:
    members = [created(scim.post("/Users", user()))["id"] for _ in range(2)]

    def add(k: int) -> None:
        for _ in range(k):
            created(scim.post("/Groups", group(members=members,
                                            **{CONNECTOR_GROUP: {"modules": ["Engage"]}})))

    def read(n: int) -> None:
        groups = listed(scim, "/Groups?count=200", n)["Resources"]
        assert all(len(g["members"]) == 2 for g in groups)

    assert_flat(engine, add, read)


def test_one_group_with_many_members(scim: ScimClient, engine: Engine) -> None:
    gid = created(scim.post("/Groups", group(**{CONNECTOR_GROUP: {"modules": ["Engage"]}})))["id"]

    def add(k: int) -> None:
        ids = [created(scim.post("/Users", user()))["id"] for _ in range(k)]
        response = scim.patch(f"/Groups/{gid}", patch(
            {"op": "add", "path": "members", "value": [{"value": i} for i in ids]}))
        assert response.status_code in (200, 204), response.json

    def read(n: int) -> None:
        response = scim.get(f"/Groups/{gid}")
        assert response.status_code == 200 and len(response.json["members"]) == n

    assert_flat(engine, add, read)
