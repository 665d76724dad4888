"""Graph delta items → what the directory stores. Pure: no I/O, no clock.

Delta pages carry only what changed: a key that is absent means "unchanged", never
null (Graph docs, "delta query: properties not changed are not returned"). A null value
that IS present means the property was cleared. `@removed` marks a deleted object:
reason `changed` is a soft delete (restorable for 30 days), `deleted` a hard delete.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from connector.commands import IndexedValue, UserFields

USER_SELECT = ("accountEnabled", "userPrincipalName", "mail", "givenName", "surname",
               "displayName", "userType", "employeeId")
GROUP_SELECT = ("displayName", "members")
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


# `@removed`'s reason: "changed" is a soft delete (restorable), "deleted" a hard one.
Removal = Literal["changed", "deleted"]
MemberKind = Literal["User", "Group"]


class MalformedItem(ValueError):
    """A delta item without a usable id: skipped and counted, never guessed at."""


@dataclass(frozen=True)
class UserDelta:
    object_id: str
    removed: Removal | None = None
    changes: dict[str, object] = field(default_factory=dict)  # only the keys Graph sent


@dataclass(frozen=True)
class GroupDelta:
    object_id: str
    removed: Removal | None = None
    display_name: str | None = None  # None: not in this item
    added: tuple[tuple[str, MemberKind], ...] = ()  # (object id, kind)
    removed_members: tuple[str, ...] = ()


def _json_object(item: object) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise MalformedItem("a delta item is not a JSON object")
    return item


def _object_id(item: dict[str, Any]) -> str:
    object_id = item.get("id")
    if not isinstance(object_id, str) or not object_id.strip() or len(object_id) > 512:
        raise MalformedItem("a delta item has no usable id")
    return object_id


def _removed(item: dict[str, Any]) -> Removal | None:
    marker = item.get("@removed")
    if marker is None:
        return None
    reason = marker.get("reason") if isinstance(marker, dict) else None
    return "deleted" if reason == "deleted" else "changed"


def parse_user(raw: object) -> UserDelta:
    item = _json_object(raw)
    object_id = _object_id(item)
    removed = _removed(item)
    changes = {k: item[k] for k in USER_SELECT if k in item}
    return UserDelta(object_id, removed, changes)


def parse_group(raw: object) -> GroupDelta:
    item = _json_object(raw)
    object_id = _object_id(item)
    name = item.get("displayName")
    added: list[tuple[str, MemberKind]] = []
    gone: list[str] = []
    for member in item.get("members@delta") or ():
        if not isinstance(member, dict) or not isinstance(member.get("id"), str):
            continue
        if "@removed" in member:
            gone.append(member["id"])
        else:
            kind: MemberKind = ("Group" if str(member.get("@odata.type", "")).endswith(".group")
                                else "User")
            added.append((member["id"], kind))
    return GroupDelta(object_id, _removed(item), name if isinstance(name, str) else None,
                      tuple(added), tuple(gone))


@dataclass(frozen=True)
class StoredProfile:
    """What the connector holds of a synced user, to merge a partial delta into."""

    user_name: str
    display_name: str | None
    data: dict[str, Any]
    guest: bool
    admin: bool = False  # an admin's decisions, which Graph knows nothing of
    external_company_guest: bool = False


def user_fields(object_id: str, stored: StoredProfile | None, changes: Mapping[str, object]
                ) -> UserFields | None:
    """The user's full fields after applying `changes` (absent keys keep their stored
    value). None when there is not enough to create the user (no userPrincipalName)."""
    data = copy.deepcopy(stored.data) if stored else {}
    user_name = stored.user_name if stored else None
    display = stored.display_name if stored else None
    guest = stored.guest if stored else False
    principal_name = changes.get("userPrincipalName")
    if isinstance(principal_name, str) and principal_name:
        user_name = principal_name
    if user_name is None:
        return None
    if "displayName" in changes:
        shown = changes["displayName"]
        display = shown if isinstance(shown, str) else None
    name = dict(data.get("name") or {})
    for graph_key, scim_key in (("givenName", "givenName"), ("surname", "familyName")):
        if graph_key in changes:
            value = changes[graph_key]
            if isinstance(value, str) and value:
                name[scim_key] = value
            else:
                name.pop(scim_key, None)
    if name:
        data["name"] = name
    else:
        data.pop("name", None)
    if "mail" in changes:
        mail = changes["mail"]
        if isinstance(mail, str) and mail:
            data["emails"] = [{"value": mail, "type": "work", "primary": True}]
        else:
            data.pop("emails", None)
    if "employeeId" in changes:
        enterprise = dict(data.get(ENTERPRISE) or {})
        employee_id = changes["employeeId"]
        if isinstance(employee_id, str) and employee_id:
            enterprise["employeeNumber"] = employee_id
        else:
            enterprise.pop("employeeNumber", None)
        if enterprise:
            data[ENTERPRISE] = enterprise
        else:
            data.pop(ENTERPRISE, None)
    if "userType" in changes:
        user_type = changes["userType"]
        guest = isinstance(user_type, str) and user_type.lower() == "guest"
        if isinstance(user_type, str) and user_type:
            data["userType"] = user_type
        else:
            data.pop("userType", None)
    enabled = changes.get("accountEnabled")
    return UserFields(
        user_name=user_name, external_id=object_id, display_name=display, data=data,
        values=tuple(_email_values(data)),
        active=enabled if isinstance(enabled, bool) else None, guest=guest,
        admin=stored.admin if stored else False,
        external_company_guest=stored.external_company_guest if stored else False,
        modules=None)


def _email_values(data: dict[str, Any]) -> list[IndexedValue]:
    return [IndexedValue("emails", i, e.get("value"), e.get("type"), bool(e.get("primary")))
            for i, e in enumerate(data.get("emails") or ()) if isinstance(e, dict)]
