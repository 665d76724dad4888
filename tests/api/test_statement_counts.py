"""Statement counts of the admin API's lists: 50 tenants, users, groups, members, modules or
audit lines cost the statements that 5 do (no N+1 as an installation grows)."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine

from connector.db import make_sessionmaker
from connector.models import AuditEntry
from tests.scim.factories import group, patch, user
from tests.support.clients import ApiClient, ScimClient, make_tenant
from tests.support.statements import assert_flat

CONNECTOR_USER = "urn:connector:params:scim:schemas:extension:2.0:User"
CONNECTOR_GROUP = "urn:connector:params:scim:schemas:extension:2.0:Group"
ALL = "?per_page=200"
_names = itertools.count(1)


def made(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def add_users(scim: ScimClient, k: int) -> list[str]:
    """k users, each with a module of its own and in a group that has one."""
    ids = [made(scim.post("/Users", user(**{CONNECTOR_USER: {"modules": ["Hybrid"]}})))["id"]
           for _ in range(k)]
    made(scim.post("/Groups", group(members=ids, **{CONNECTOR_GROUP: {"modules": ["Engage"]}})))
    return ids


def items(api: ApiClient, path: str, n: int) -> list[dict[str, Any]]:
    response = api.get(path)
    assert response.status_code == 200, response.json
    found = response.json["items"]
    assert len(found) == n, (path, len(found))
    return found  # type: ignore[no-any-return]


@pytest.mark.xfail(strict=True, reason=(
    "N+1: GET /api/v1/tenants reads each listed tenant's live-user count with its own "
    "SELECT on tenant_counters (connector.api.routes.tenant_json -> "
    "counters.live_users): 8 statements for 6 tenants, 53 for 51"))
def test_tenants(partner: ApiClient, engine: Engine, scim: ScimClient) -> None:
    """Each tenant shows its live-user count: one more tenant must not be one more read."""
    add_users(scim, 2)

    def add(k: int) -> None:
        for _ in range(k):
            make_tenant(engine, f"Tenant {next(_names)}")

    # The `scim` fixture's tenant is listed too.
    assert_flat(engine, add, lambda n: items(partner, "/tenants", n + 1))


def test_users(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    def read(n: int) -> None:
        found = items(partner, f"/tenants/{scim.tenant_id}/users{ALL}", n)
        assert all(u["modules"] for u in found)

    assert_flat(engine, lambda k: add_users(scim, k), read)


def test_deleted_users(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    def add(k: int) -> None:
        for i, uid in enumerate(add_users(scim, k)):
            if i % 2:  # disabled by the IdP: still present, on the list
                assert scim.patch(f"/Users/{uid}", patch(
                    {"op": "replace", "path": "active", "value": False})).status_code == 200
            else:
                assert scim.delete(f"/Users/{uid}").status_code == 204

    assert_flat(engine, add,
                lambda n: items(partner, f"/tenants/{scim.tenant_id}/deleted-users{ALL}", n))


def test_groups(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    members = [made(scim.post("/Users", user()))["id"] for _ in range(2)]

    def add(k: int) -> None:
        for _ in range(k):
            made(scim.post("/Groups", group(members=members,
                                            **{CONNECTOR_GROUP: {"modules": ["Engage"]}})))

    def read(n: int) -> None:
        found = items(partner, f"/tenants/{scim.tenant_id}/groups{ALL}", n)
        assert all(g["members"] == 2 and g["modules"] == ["Engage"] for g in found)

    assert_flat(engine, add, read)


def test_group_members(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    gid = made(scim.post("/Groups", group()))["id"]
    inner = made(scim.post("/Groups", group()))["id"]  # a nested group is a member too
    assert scim.patch(f"/Groups/{gid}", patch(
        {"op": "add", "path": "members", "value": [{"value": inner}]})).status_code in (200, 204)

    def add(k: int) -> None:
        ids = [made(scim.post("/Users", user()))["id"] for _ in range(k)]
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
            made(partner.post(f"/tenants/{scim.tenant_id}/modules", {"name": module}))
            uid = made(scim.post("/Users", user(**{CONNECTOR_USER: {"modules": [module]}})))
            made(scim.post("/Groups", group(members=[uid["id"]],
                                            **{CONNECTOR_GROUP: {"modules": [module]}})))

    def read(n: int) -> None:
        found = items(partner, f"/tenants/{scim.tenant_id}/modules", n + 3)
        assert sum(m["users"] == 1 and m["groups"] == 1 for m in found) == n

    assert_flat(engine, add, read)


def add_audit(engine: Engine, tenant_id: str | None, admin_id: str, k: int) -> None:
    """k admin actions as the admin API records them."""
    now = dt.datetime.now(dt.UTC)
    with make_sessionmaker(engine)() as s:
        s.add_all(AuditEntry(at=now, admin_id=admin_id, actor="partner@example.com",
                             action="module.added", tenant_id=tenant_id,
                             target=f"Module {next(_names)}", detail={"why": "test"},
                             remote_addr="127.0.0.1", correlation_id=uuid.uuid4().hex)
                  for _ in range(k))
        s.commit()


def test_tenant_audit(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    assert_flat(engine, lambda k: add_audit(engine, scim.tenant_id, partner.admin_id, k),
                lambda n: items(partner, f"/tenants/{scim.tenant_id}/audit{ALL}", n))


def test_audit(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    def add(k: int) -> None:
        add_audit(engine, scim.tenant_id, partner.admin_id, k - k // 2)
        add_audit(engine, None, partner.admin_id, k // 2)

    assert_flat(engine, add, lambda n: items(partner, f"/audit{ALL}", n))
