"""Delta rounds over a Directory: what skip and delta tokens stand for, and page building.

Follows Microsoft Graph's delta query (learn.microsoft.com/graph/delta-query-overview,
/graph/api/user-delta, /graph/api/group-delta):

- a round without a token walks every live object in creation order; its last page
  carries a delta token for the change-log position at the round's start, so changes made
  while the round ran are replayed in the next one (Graph's replays are allowed);
- a round from a delta token reports each object changed since, once, in its current
  state; deleted ones as `{"id": ..., "@removed": {"reason": "changed"|"deleted"}}`;
- by default an incremental round returns every selected property that is set, plus the
  changed ones even when null; with `Prefer: return=minimal` only the changed ones;
  properties never set are never included;
- groups' `members@delta` lists members as `{"@odata.type", "id"}` (removed ones with
  `"@removed": {"reason": "deleted"}`); a big group's members are split over several
  items, the group repeated with the next chunk, across pages.

Pure functions of the directory and a cursor; the caller holds `directory.lock`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tests.fakes.changes import ALL_FIELDS, GroupChange, MemberChange, UserChange
from tests.fakes.directory import (
    ACTIVE,
    FORMER_MANAGER,
    SOFT_DELETED,
    USER_TYPE,
    Directory,
    GroupRecord,
    UserRecord,
)

USERS, GROUPS = "users", "groups"
# The properties Graph returns when a delta request has no $select.
DEFAULT_USER_SELECT = ("businessPhones", "displayName", "givenName", "jobTitle", "mail",
                       "mobilePhone", "officeLocation", "preferredLanguage", "surname",
                       "userPrincipalName")
DEFAULT_GROUP_SELECT = ("classification", "createdDateTime", "description", "displayName",
                        "groupTypes", "mail", "mailEnabled", "mailNickname",
                        "securityEnabled", "visibility", "members")
_NEW_OR_GONE = frozenset({"*", "@removed"})

MemberEntry = tuple[str, str, bool]  # member id, @odata.type, added (False: removed)


@dataclass(frozen=True, slots=True)
class DeltaState:
    """What a $deltatoken stands for: a log position, taken at a time."""

    resource: str
    select: tuple[str, ...]
    seq: int
    issued_at: float


@dataclass(frozen=True, slots=True)
class Cursor:
    """What a $skiptoken stands for: where a round is, and what it will end with."""

    resource: str
    select: tuple[str, ...]
    full: bool
    position: int
    end: int
    delta_seq: int
    changes: tuple[Any, ...] = ()
    member_offset: int = 0
    members: tuple[MemberEntry, ...] | None = None
    replay: dict[str, Any] | None = None  # an item to send again first (a fault knob)
    empties_left: int = 0  # empty pages to send before this one (a fault knob)


@dataclass
class Page:
    items: list[dict[str, Any]]
    next: Cursor | None  # None: the round ends, the answer carries a deltaLink


def start_full_round(directory: Directory, resource: str, select: tuple[str, ...]) -> Cursor:
    end = directory.user_end if resource == USERS else directory.group_end
    return Cursor(resource, select, True, 0, end, directory.seq)


def start_change_round(directory: Directory, state: DeltaState,
                       select: tuple[str, ...]) -> Cursor:
    end = directory.seq
    entries = directory.changes(state.seq, end)
    changes = (_user_changes(entries, select) if state.resource == USERS
               else _group_changes(entries, select))
    return Cursor(state.resource, select, False, 0, len(changes), end, changes)


def build_page(directory: Directory, cursor: Cursor, *, page_size: int, member_chunk: int,
               minimal: bool) -> Page:
    if cursor.resource == USERS:
        return _user_page(directory, cursor, page_size, minimal)
    return _group_page(directory, cursor, page_size, member_chunk, minimal)


# -- users ---------------------------------------------------------------------------

def _user_changes(entries: Iterable[Any], select: tuple[str, ...]) -> tuple[Any, ...]:
    merged: dict[str, frozenset[str]] = {}
    for change in entries:
        if isinstance(change, UserChange):
            merged[change.user_id] = merged.get(change.user_id, frozenset()) | change.fields
    wanted = frozenset(select)
    return tuple((user_id, fields) for user_id, fields in merged.items()
                 if fields & _NEW_OR_GONE or fields & wanted)


def _user_page(directory: Directory, cursor: Cursor, page_size: int, minimal: bool) -> Page:
    items: list[dict[str, Any]] = []
    position = cursor.position
    while len(items) < page_size and position < cursor.end:
        if cursor.full:
            user_id, record = directory.user_at(position)
            if record.state == ACTIVE:
                items.append(render_user(user_id, record, cursor.select, None, minimal))
        else:
            user_id, fields = cursor.changes[position]
            found = directory.user_record(user_id)
            if found is not None:
                items.append(render_user(user_id, found, cursor.select, fields, minimal))
        position += 1
    return _page(cursor, items, position, 0, None)


def render_user(user_id: str, record: UserRecord, select: tuple[str, ...],
                changed: frozenset[str] | None, minimal: bool) -> dict[str, Any]:
    if record.state != ACTIVE:
        return removed(user_id, record.state)
    item = _properties(record.props, select, changed, minimal)
    if "manager" in item:  # a reference: Graph's delta names it, or its removal
        manager = item.pop("manager")
        if manager is not None:
            item["manager@delta"] = [{"@odata.type": USER_TYPE, "id": manager}]
        else:
            former = record.props.get(FORMER_MANAGER)
            item["manager@delta"] = [{"@odata.type": USER_TYPE, "id": former,
                                      "@removed": {"reason": "deleted"}}] if former else []
    item["id"] = user_id
    return item


def removed(object_id: str, state: str) -> dict[str, Any]:
    reason = "changed" if state == SOFT_DELETED else "deleted"
    return {"id": object_id, "@removed": {"reason": reason}}


# -- groups --------------------------------------------------------------------------

def _group_changes(entries: Iterable[Any], select: tuple[str, ...]) -> tuple[Any, ...]:
    fields: dict[str, frozenset[str]] = {}
    members: dict[str, dict[str, MemberEntry]] = {}
    for change in entries:
        if isinstance(change, GroupChange):
            fields[change.group_id] = fields.get(change.group_id, frozenset()) | change.fields
        elif isinstance(change, MemberChange) and "members" in select:
            fields.setdefault(change.group_id, frozenset())
            members.setdefault(change.group_id, {})[change.member_id] = (
                change.member_id, change.member_type, change.added)
    wanted = frozenset(select)
    return tuple(
        (group_id, changed, tuple(members.get(group_id, {}).values()))
        for group_id, changed in fields.items()
        if changed & _NEW_OR_GONE or changed & wanted or members.get(group_id))


def _group_page(directory: Directory, cursor: Cursor, page_size: int, member_chunk: int,
                minimal: bool) -> Page:
    items: list[dict[str, Any]] = []
    position, offset, members = cursor.position, cursor.member_offset, cursor.members
    with_members = "members" in cursor.select
    while len(items) < page_size and position < cursor.end:
        if cursor.full:
            group_id, record = directory.group_at(position)
            changed, member_changes = None, ()
        else:
            group_id, changed, member_changes = cursor.changes[position]
            record = directory.get_group(group_id)
        if offset == 0:
            if record is None or record.state != ACTIVE:
                if not cursor.full and record is not None:
                    items.append(removed(group_id, record.state))
                position += 1
                continue
            members = _members_to_send(record, changed, member_changes) if with_members else None
        chunk = members[offset:offset + member_chunk] if members else None
        items.append(render_group(group_id, record, cursor.select, changed, minimal, chunk))
        offset += member_chunk
        if not members or offset >= len(members):
            position, offset, members = position + 1, 0, None
    return _page(cursor, items, position, offset, members)


def _members_to_send(record: GroupRecord, changed: frozenset[str] | None,
                     member_changes: tuple[MemberEntry, ...]) -> tuple[MemberEntry, ...]:
    if changed is None or "*" in changed:
        return tuple((member_id, kind, True) for member_id, kind in record.members.items())
    return member_changes


def render_group(group_id: str, record: GroupRecord | None, select: tuple[str, ...],
                 changed: frozenset[str] | None, minimal: bool,
                 members: tuple[MemberEntry, ...] | None) -> dict[str, Any]:
    props = record.props if record else {}
    item = _properties(props, tuple(n for n in select if n != "members"), changed, minimal)
    item["id"] = group_id
    if members:
        item["members@delta"] = [_member(*entry) for entry in members]
    return item


def _member(member_id: str, member_type: str, added: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"@odata.type": member_type, "id": member_id}
    if not added:
        item["@removed"] = {"reason": "deleted"}
    return item


# -- shared --------------------------------------------------------------------------

def _properties(props: dict[str, Any], select: tuple[str, ...],
                changed: frozenset[str] | None, minimal: bool) -> dict[str, Any]:
    """The selected properties an item carries (see the module docstring for the rules)."""
    if changed is None or changed & ALL_FIELDS:
        return {n: props[n] for n in select if props.get(n) is not None}
    if minimal:
        return {n: props.get(n) for n in select if n in changed}
    return {n: props.get(n) for n in select if props.get(n) is not None or n in changed}


def _page(cursor: Cursor, items: list[dict[str, Any]], position: int, offset: int,
          members: tuple[MemberEntry, ...] | None) -> Page:
    if position >= cursor.end:
        return Page(items, None)
    following = dataclasses.replace(cursor, position=position, member_offset=offset,
                                    members=members, replay=None, empties_left=0)
    return Page(items, following)
