"""Statement counts of the admin API's lists: 50 tenants, users, groups, members, modules or
audit lines cost the statements that 5 do (no N+1 as an installation grows)."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import Engine

from scim.schemas import CONNECTOR_GROUP, CONNECTOR_USER
from tests.scim.factories import created, group, patch, user, users_in_a_group
from tests.support.clients import ApiClient, ScimClient, add_audit_lines, make_tenant
from tests.support.statements import assert_flat

ALL = "?per_page=200"
_names = itertools.count(1)


def items(api: ApiClient, path: str, n: int) -> list[dict[str, Any]]:
    response = api.get(path)
    assert response.status_code == 200, response.json
    found = response.json["items"]
    assert len(found) == n, (path, len(found))
    return found  # type: ignore[no-any-return]


def test_tenants(partner: ApiClient, engine: Engine, scim: ScimClient) -> None:
    """Each tenant shows its live-user count: one more tenant must not be one more read."""
    users_in_a_group(scim, 2)

    def add(k: int) -> None:
        for _ in range(k):
            make_tenant(engine, f"Tenant {next(_names)}")

    # The `scim` fixture's tenant is listed too.
    assert_flat(engine, add, lambda n: items(partner, f"/tenants{ALL}", n + 1))


def test_users(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    def read(n: int) -> None:
        found = items(partner, f"/tenants/{scim.tenant_id}/users{ALL}", n)
        assert all(u["modules"] for u in found)

    assert_flat(engine, lambda k: users_in_a_group(scim, k), read)


def test_deleted_users(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    def add(k: int) -> None:
        for i, uid in enumerate(users_in_a_group(scim, k)):
            if i % 2:  # disabled by the IdP: still present, on the list
                assert scim.patch(f"/Users/{uid}", patch(
                    {"op": "replace", "path": "active", "value": False})).status_code == 200
            else:
                assert scim.delete(f"/Users/{uid}").status_code == 204

    assert_flat(engine, add,
                lambda n: items(partner, f"/tenants/{scim.tenant_id}/deleted-users{ALL}", n))


def test_groups(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    members = [created(scim.post("/Users", user()))["id"] for _ in range(2)]

    def add(k: int) -> None:
        for _ in range(k):
            created(scim.post("/Groups", group(members=members,
                                            **{CONNECTOR_GROUP: {"modules": ["Engage"]}})))

    def read(n: int) -> None:
        found = items(partner, f"/tenants/{scim.tenant_id}/groups{ALL}", n)
        assert all(g["members"] == 2 and g["modules"] == ["Engage"] for g in found)

    assert_flat(engine, add, read)


def test_group_members(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    gid = created(scim.post("/Groups", group()))["id"]
    inner = created(scim.post("/Groups", group()))["id"]  # a nested group is a member too
    assert scim.patch(f"/Groups/{gid}", patch(
        {"op": "add", "path": "members", "value": [{"value": inner}]})).status_code in (200, 204)

    def add(k: int) -> None:
        ids = [created(scim.post("/Users", user()))["id"] for _ in range(k)]
        assert scim.patch(f"/Groups/{gid}", patch(
            {"op": "add", "path": "members", "value": [{"value": i} for i in ids]})
        ).status_code in (200, 204)

    assert_flat(engine, add, lambda n: items(
        partner, f"/tenants/{scim.tenant_id}/groups/{gid}/members{ALL}", n + 1))


def test_modules(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    """k modules, each held by a user and by a group (besides the three every tenant
    starts with)."""
    def add(k: int) -> None:
        for _ in range(k):
            module = f"Module {next(_names)}"
            created(partner.post(f"/tenants/{scim.tenant_id}/modules", {"name": module}))
            uid = created(scim.post("/Users", user(**{CONNECTOR_USER: {"modules": [module]}})))
            created(scim.post("/Groups", group(members=[uid["id"]],
                                            **{CONNECTOR_GROUP: {"modules": [module]}})))

    def read(n: int) -> None:
        found = items(partner, f"/tenants/{scim.tenant_id}/modules", n + 3)
        assert sum(m["users"] == 1 and m["groups"] == 1 for m in found) == n

    assert_flat(engine, add, read)


def test_tenant_audit(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    assert_flat(engine, lambda k: add_audit_lines(engine, scim.tenant_id, partner.admin_id, k),
                lambda n: items(partner, f"/tenants/{scim.tenant_id}/audit{ALL}", n))


def test_audit(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    def add(k: int) -> None:
        add_audit_lines(engine, scim.tenant_id, partner.admin_id, k - k // 2)
        add_audit_lines(engine, None, partner.admin_id, k // 2)

    assert_flat(engine, add, lambda n: items(partner, f"/audit{ALL}", n))


def test_event_feeds(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    """A page of the feed is one read, whatever the events on it or the tenants behind
    every tenant's feed."""
    def add(k: int) -> None:
        for _ in range(k):
            created(scim.post("/Users", user()))
            make_tenant(engine, f"Tenant {next(_names)}")

    def read(n: int) -> None:
        for path, expected in ((f"/tenants/{scim.tenant_id}/events", 1 + n),
                               ("/events", 1 + 2 * n)):  # + each new tenant.created
            response = partner.get(path, query_string={"limit": 1000})
            assert response.status_code == 200, response.json
            assert len(response.json["data"]) == expected, (path, n)

    assert_flat(engine, add, read)
