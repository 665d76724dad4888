"""Test data: SCIM resources as identity providers send them."""

from __future__ import annotations

import itertools
from typing import Any

from scim.schemas import CONNECTOR_GROUP, CONNECTOR_USER, ENTERPRISE_USER, GROUP, PATCH_OP, USER
from tests.support.clients import ScimClient

_seq = itertools.count(1)


def user(user_name: str | None = None, **extra: Any) -> dict[str, Any]:
    n = next(_seq)
    user_name = user_name or f"user{n}@example.com"
    body: dict[str, Any] = {
        "schemas": [USER, ENTERPRISE_USER],
        "userName": user_name,
        "externalId": extra.pop("externalId", f"ext-{n}"),
        "active": True,
        "displayName": f"User {n}",
        "name": {"givenName": "Given", "familyName": f"Family{n}"},
        "emails": [{"value": user_name, "type": "work", "primary": True}],
        ENTERPRISE_USER: {"department": "Sales", "employeeNumber": str(1000 + n)},
    }
    body.update(extra)
    return body


def group(name: str | None = None, members: list[str] | None = None, **extra: Any
          ) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [GROUP], "displayName": name or f"Group {next(_seq)}"}
    if members is not None:
        body["members"] = [{"value": m} for m in members]
    body.update(extra)
    return body


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


# -- posted through SCIM, for tests that need many ---------------------------------------


def created(response: Any) -> dict[str, Any]:
    """The body of a 201 answer."""
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def users_in_a_group(scim: ScimClient, k: int) -> list[str]:
    """k users, each with a module of its own and in a new group that has one, so that
    every part of a user's view that is joined in has rows for each of them."""
    ids = [created(scim.post("/Users", user(**{CONNECTOR_USER: {"modules": ["Hybrid"]}})))["id"]
           for _ in range(k)]
    created(scim.post("/Groups", group(members=ids,
                                       **{CONNECTOR_GROUP: {"modules": ["Engage"]}})))
    return ids
