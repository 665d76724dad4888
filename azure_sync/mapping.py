"""Graph delta items → what the directory stores. Pure: no I/O, no clock.

Delta pages carry only what changed: a key that is absent means "unchanged", never
null (Graph docs, "delta query: properties not changed are not returned"). A null value
that IS present means the property was cleared. `@removed` marks a deleted object:
reason `changed` is a soft delete (restorable for 30 days), `deleted` a hard delete.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from connector.commands import IndexedValue, UserFields

GROUP_SELECT = ("displayName", "members")
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

# -- the attribute mapping table ---------------------------------------------------------
#
# Which Graph user property lands in which connector (SCIM) attribute, per tenant. The
# default follows the default user mapping Entra ID gives a non-gallery SCIM app
# ("Tutorial: Develop and plan provisioning for a SCIM endpoint", table 1), in Graph's
# names. Not in the table, because the sync itself needs them whatever the table says:
# id (→ externalId), userPrincipalName (→ userName), accountEnabled (→ active) and
# userType (→ userType and the guest flag).

ALWAYS_SELECTED = ("accountEnabled", "userPrincipalName", "userType")
EXTENSION_ATTRIBUTES = "onPremisesExtensionAttributes"
MANAGER = "manager"
MANAGER_TARGET = f"{ENTERPRISE}:manager"

# Graph user properties the table may map (v1.0 names); all string-valued except
# businessPhones (a list: its first number is the one mapped, as Entra maps
# telephoneNumber) and manager (a reference to another user).
SOURCES: tuple[str, ...] = (
    "displayName", "givenName", "surname", "mail", "employeeId", "department", "jobTitle",
    "mobilePhone", "businessPhones", "faxNumber", "officeLocation", "companyName",
    "streetAddress", "city", "state", "postalCode", "country", "preferredLanguage",
    "employeeType", "mailNickname", MANAGER,
    *(f"{EXTENSION_ATTRIBUTES}.extensionAttribute{n}" for n in range(1, 16)))


def _typed(attr: str, kind: str, sub: str = "value") -> str:
    return f'{attr}[type eq "{kind}"].{sub}'


# Connector attributes a Graph property may land in: SCIM paths of the core User schema
# and the enterprise extension, as Entra's attribute mapping names them.
TARGETS: tuple[str, ...] = (
    "displayName", "name.givenName", "name.familyName", "name.middleName", "name.formatted",
    "nickName", "title", "preferredLanguage", "locale", "timezone",
    _typed("emails", "work"), _typed("emails", "other"),
    _typed("phoneNumbers", "work"), _typed("phoneNumbers", "mobile"),
    _typed("phoneNumbers", "fax"), _typed("phoneNumbers", "other"),
    _typed("addresses", "work", "formatted"), _typed("addresses", "work", "streetAddress"),
    _typed("addresses", "work", "locality"), _typed("addresses", "work", "region"),
    _typed("addresses", "work", "postalCode"), _typed("addresses", "work", "country"),
    _typed("addresses", "other", "formatted"),
    *(f"{ENTERPRISE}:{name}" for name in ("employeeNumber", "costCenter", "organization",
                                          "division", "department")),
    MANAGER_TARGET,
)

DEFAULT_TABLE: dict[str, str] = {
    "displayName": "displayName",
    "givenName": "name.givenName",
    "surname": "name.familyName",
    "mail": _typed("emails", "work"),
    "jobTitle": "title",
    "department": f"{ENTERPRISE}:department",
    "employeeId": f"{ENTERPRISE}:employeeNumber",
    MANAGER: MANAGER_TARGET,
    "mobilePhone": _typed("phoneNumbers", "mobile"),
    "businessPhones": _typed("phoneNumbers", "work"),
    "faxNumber": _typed("phoneNumbers", "fax"),
    "officeLocation": _typed("addresses", "other", "formatted"),
    "streetAddress": _typed("addresses", "work", "streetAddress"),
    "postalCode": _typed("addresses", "work", "postalCode"),
}
# Offered, not mapped by default (Entra's default table maps neither): companyName →
# the enterprise organization, extensionAttribute1..15 → whatever the admin chooses.
SUGGESTED: dict[str, str] = {"companyName": f"{ENTERPRISE}:organization"}


class InvalidMapping(ValueError):
    """A mapping table that cannot be applied; `field` names the offending entry (the
    first one), `errors` every offending entry's message ({property: message})."""

    def __init__(self, message: str, field: str | None = None,
                 errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.errors = errors or ({field: message} if field else {})


def validate_table(table: object) -> dict[str, str]:
    """The table as {Graph property: target}, or InvalidMapping saying what is wrong."""
    if not isinstance(table, dict):
        raise InvalidMapping("The mapping table must be an object of Graph property → "
                             "target attribute.")
    sources = set(SOURCES)
    targets = set(TARGETS)
    used: dict[str, str] = {}
    out: dict[str, str] = {}
    errors: dict[str, str] = {}  # every wrong entry, not only the first
    for source, target in table.items():
        if source not in sources:
            errors[source] = (f"Unknown Graph user property {source!r}; mappable ones: "
                              f"{', '.join(SOURCES[:20])}, {EXTENSION_ATTRIBUTES}."
                              "extensionAttribute1..15.")
        elif not isinstance(target, str) or target not in targets:
            errors[source] = f"Unknown target attribute {target!r} for {source!r}."
        elif (source == MANAGER) != (target == MANAGER_TARGET):
            errors[source] = ("manager maps only to the enterprise manager, and only "
                              "manager maps there (it is a reference to a user).")
        elif target in used:
            errors[source] = (f"{source!r} and {used[target]!r} both map to {target!r}; "
                              "a target takes one property.")
        else:
            used[target] = source
            out[source] = target
    if errors:
        first = next(iter(errors))
        raise InvalidMapping(" ".join(errors.values()), first, errors)
    return out


def select_for(table: Mapping[str, str], also: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The $select of a users request under this table: what the sync always needs, the
    mapped properties (an extension attribute selects their container), and `also`."""
    wanted = list(ALWAYS_SELECTED)
    for name in (*table, *also):
        graph_name = name.split(".", 1)[0]
        if graph_name not in wanted:
            wanted.append(graph_name)
    return tuple(wanted)


USER_SELECT = select_for(DEFAULT_TABLE)
# Every mappable property but the manager: for reads outside a delta round (a user
# entering the scope, "sync this user now"), where the table may map anything. The
# manager is a navigation property that only /users/delta returns through $select;
# absent from those reads, it stays as it is.
FULL_SELECT = select_for({name: "" for name in SOURCES if name != MANAGER})
_KNOWN = frozenset((*ALWAYS_SELECTED, *(s.split(".", 1)[0] for s in SOURCES
                                         if s != MANAGER)))


# -- a table, ready to apply ---------------------------------------------------------------

# (the user's object id, its manager's object id or None: removed) → the manager's
# connector id, or None: no manager to show (yet).
ManagerResolver = Callable[[str, "str | None"], "str | None"]


def _source_step(source: str) -> tuple[str, str, str | None]:
    if source.startswith(EXTENSION_ATTRIBUTES + "."):
        return "extension", EXTENSION_ATTRIBUTES, source.split(".", 1)[1]
    if source == "businessPhones":
        return "first", source, None
    return "plain", source, None


_TYPED = re.compile(r'(\w+)\[type eq "(\w+)"\]\.(\w+)')


def _target_step(target: str) -> tuple[str, str, str | None, str | None]:
    if target == "displayName":
        return "display", target, None, None
    if target.startswith(ENTERPRISE + ":"):
        return "enterprise", target[len(ENTERPRISE) + 1:], None, None
    typed = _TYPED.fullmatch(target)
    if typed:
        return "typed", typed.group(1), typed.group(2), typed.group(3)
    if target.startswith("name."):
        return "name", target[5:], None, None
    return "core", target, None, None


@dataclass(frozen=True)
class Rules:
    """A validated table, compiled: what `user_fields` follows. `resolve_manager` turns a
    manager's object id into its connector id (None: not a connector user yet)."""

    table: tuple[tuple[str, str], ...]
    resolve_manager: ManagerResolver | None = None
    steps: tuple[tuple[str, str, str | None, str, str, str | None, str | None], ...] = ()

    def __post_init__(self) -> None:
        if self.table and not self.steps:  # built from a table alone: compile it
            object.__setattr__(self, "steps", Rules.of(dict(self.table)).steps)

    @classmethod
    def of(cls, table: Mapping[str, str], resolve_manager: ManagerResolver | None = None
           ) -> Rules:
        checked = validate_table(dict(table))
        steps = tuple((*_source_step(s), *_target_step(t)) for s, t in checked.items())
        return cls(tuple(checked.items()), resolve_manager, steps)

    @property
    def as_dict(self) -> dict[str, str]:
        return dict(self.table)

    def select(self, also: tuple[str, ...] = ()) -> tuple[str, ...]:
        return select_for(self.as_dict, also)


DEFAULT_RULES = Rules.of(DEFAULT_TABLE)
# The rules of the tenant whose page is being applied (set by the page applier, per
# thread/task); the default when none was set.
_CURRENT: ContextVar[Rules] = ContextVar("entra_mapping_rules", default=DEFAULT_RULES)


def use_rules(rules: Rules) -> None:
    """Make `rules` the ones `user_fields` follows in this thread (a page's tenant)."""
    _CURRENT.set(rules)


def current_rules() -> Rules:
    return _CURRENT.get()


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
    changes = {k: v for k, v in item.items() if k in _KNOWN}
    if "manager@delta" in item:  # Graph's delta form of the manager reference
        changes[MANAGER] = _manager_of(item["manager@delta"])
    elif isinstance(item.get(MANAGER), dict):  # a GET with $expand=manager
        changes[MANAGER] = _manager_of([item[MANAGER]])
    return UserDelta(object_id, removed, changes)


def _manager_of(entries: object) -> str | None:
    """The manager's object id in a `manager@delta` list; None: it was removed."""
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and "@removed" not in entry:
            object_id = entry.get("id")
            if isinstance(object_id, str) and object_id:
                return object_id
    return None


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


def user_fields(object_id: str, stored: StoredProfile | None, changes: Mapping[str, object],
                rules: Rules | None = None) -> UserFields | None:
    """The user's full fields after applying `changes` (absent keys keep their stored
    value, a null clears) through `rules` (the current tenant's when not given). None
    when there is not enough to create the user (no userPrincipalName)."""
    rules = rules or _CURRENT.get()
    data = _json_copy(stored.data) if stored else {}
    user_name = stored.user_name if stored else None
    display = stored.display_name if stored else None
    guest = stored.guest if stored else False
    principal_name = changes.get("userPrincipalName")
    if isinstance(principal_name, str) and principal_name:
        user_name = principal_name
    if user_name is None:
        return None
    for kind, key, sub, target, t1, t2, t3 in rules.steps:
        if key not in changes:
            continue
        raw = changes[key]
        if kind == "extension":
            if isinstance(raw, dict):
                if sub not in raw:
                    continue  # the container came without it: unchanged
                raw = raw[sub]
            elif raw is not None:
                continue
        elif kind == "first":
            raw = raw[0] if isinstance(raw, list) and raw else None
        value = raw if isinstance(raw, str) and raw else None
        if target == "display":
            display = value
        elif target == "typed":
            _set_typed(data, t1, t2 or "", t3 or "value", value)
        elif target == "enterprise":
            if t1 == "manager":
                manager = (rules.resolve_manager(object_id, value)
                           if rules.resolve_manager is not None else None)
                _set_in(data, ENTERPRISE, t1, {"value": manager} if manager else None)
            else:
                _set_in(data, ENTERPRISE, t1, value)
        elif target == "name":
            _set_in(data, "name", t1, value)
        else:
            if value is None:
                data.pop(t1, None)
            else:
                data[t1] = value
    if "userType" in changes:
        user_type = changes["userType"]
        said = isinstance(user_type, str) and user_type.lower() == "guest"
        # A full round repeats every property: only a userType that changed (or a new
        # user's) decides the guest flag, so an admin's flag survives the repetition.
        before = data.get("userType") if stored else None
        if stored is None or str(before or "").lower() != str(user_type or "").lower():
            guest = said
        if isinstance(user_type, str) and user_type:
            data["userType"] = user_type
        else:
            data.pop("userType", None)
    enabled = changes.get("accountEnabled")
    return UserFields(
        user_name=user_name, external_id=object_id, display_name=display, data=data,
        values=tuple(_indexed_values(data)),
        active=enabled if isinstance(enabled, bool) else None, guest=guest,
        admin=stored.admin if stored else False,
        external_company_guest=stored.external_company_guest if stored else False,
        modules=None)


def _json_copy(data: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a stored profile (JSON: dicts, lists, strings, numbers, booleans),
    through orjson: a tenth of `copy.deepcopy`'s time, an incremental round's largest
    cost in mapping. What orjson refuses (an integer beyond 64 bits) is deep-copied."""
    try:
        copied = orjson.loads(orjson.dumps(data))
    except TypeError:
        return copy.deepcopy(data)
    return copied if isinstance(copied, dict) else {}


def _set_in(data: dict[str, Any], section: str, key: str, value: object) -> None:
    """Set or clear `data[section][key]`; an emptied section goes."""
    part = data.get(section)
    part = dict(part) if isinstance(part, dict) else {}
    if value is None:
        part.pop(key, None)
    else:
        part[key] = value
    if part:
        data[section] = part
    else:
        data.pop(section, None)


def _set_typed(data: dict[str, Any], attr: str, kind: str, sub: str, value: str | None
               ) -> None:
    """Set or clear `sub` of the `attr` element of type `kind` (Entra's
    `phoneNumbers[type eq "mobile"].value`); an element left with nothing goes."""
    existing = data.get(attr)
    if not existing:  # the common case of a new user: nothing to merge with
        if value is not None:
            data[attr] = ([{sub: value, "type": kind, "primary": True}]
                          if attr == "emails" and kind == "work" else [{sub: value, "type": kind}])
        else:
            data.pop(attr, None)
        return
    items = [dict(e) for e in existing if isinstance(e, dict)]
    at = next((i for i, e in enumerate(items) if e.get("type") == kind), None)
    if value is not None:
        if at is None:
            items.append({sub: value, "type": kind})
            at = len(items) - 1
        else:
            items[at][sub] = value
        if attr == "emails" and kind == "work":
            items[at]["primary"] = True
    elif at is not None:
        items[at].pop(sub, None)
        if not set(items[at]) - {"type", "primary"}:
            del items[at]
    if items:
        data[attr] = items
    else:
        data.pop(attr, None)


_INDEXED = ("emails", "phoneNumbers", "addresses")
_NOT_DATA = frozenset({"value", "type", "primary", "display"})


def _indexed_values(data: dict[str, Any]) -> list[IndexedValue]:
    """The multi-valued elements, as the filter index holds them (as scim.casting)."""
    out = []
    for attr in _INDEXED:
        for i, e in enumerate(data.get(attr) or ()):
            if isinstance(e, dict):
                value = e.get("value")
                out.append(IndexedValue(
                    attr, i, None if value is None else str(value), e.get("type"),
                    bool(e.get("primary")), e.get("display"),
                    {k: v for k, v in e.items() if k not in _NOT_DATA}))
    return out
