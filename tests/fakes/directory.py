"""One Entra ID tenant's directory as the fake Graph serves it: users, groups, a change log.

Pure state, no I/O. Every mutation appends to a change log; a delta token is a position in
that log, so "changes since the token" costs O(changes), never O(directory). Objects keep
their place in creation order (a full delta round walks that order) for good: deleted
ones stay as tombstones, so a round can report how they went.

Bulk-seeded users (`seed_users`, tests/fakes/seeding.py) are virtual: their ids and
properties are computed from their index until a test changes one, so seeding a million
costs O(1) time and memory.

Soft-deleted users stay restorable for 30 days of the shared clock, then are purged
(hard-deleted), as Entra's deleted-items container does.
"""

from __future__ import annotations

import bisect
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.changes import (
    ALL_FIELDS,
    REMOVED,
    Change,
    ChangeLog,
    GroupChange,
    MemberChange,
    UserChange,
)
from tests.fakes.clock import DAY
from tests.fakes.seeding import SeedBlock, SeededUsers, SeedLog

ACTIVE, SOFT_DELETED, PURGED = "active", "softDeleted", "purged"
SOFT_DELETE_RETENTION = 30 * DAY
USER_TYPE, GROUP_TYPE = "#microsoft.graph.user", "#microsoft.graph.group"

USER_PROPERTIES = frozenset({
    "accountEnabled", "businessPhones", "city", "companyName", "country", "createdDateTime",
    "department", "displayName", "employeeId", "employeeType", "faxNumber", "givenName",
    "jobTitle", "mail", "mailNickname", "mobilePhone", "officeLocation",
    "onPremisesExtensionAttributes", "onPremisesImmutableId", "onPremisesSamAccountName",
    "onPremisesSyncEnabled", "postalCode", "preferredLanguage", "state", "streetAddress",
    "surname", "usageLocation", "userPrincipalName", "userType",
    # A navigation property: set it to the manager's object id (None: no manager). Only
    # /users/delta returns it through $select, as `manager@delta` (see delta.render_user).
    "manager",
})
# The manager a user had before its manager was removed: the `@removed` entry names it.
FORMER_MANAGER = "@formerManager"
GROUP_PROPERTIES = frozenset({
    "classification", "createdDateTime", "description", "displayName", "groupTypes", "mail",
    "mailEnabled", "mailNickname", "securityEnabled", "visibility",
})


@dataclass(slots=True)
class UserRecord:
    props: dict[str, Any]
    state: str = ACTIVE
    deleted_at: float = 0.0


@dataclass(slots=True)
class GroupRecord:
    props: dict[str, Any]
    members: dict[str, str] = field(default_factory=dict)  # member id -> @odata.type
    state: str = ACTIVE


@dataclass(slots=True)
class _AddedRun:
    start: int
    ids: list[str]


class Directory:
    """Users and groups of one tenant; every method is safe to call from any thread."""

    def __init__(self, tenant_id: str, now: Callable[[], float],
                 lock: threading.RLock | None = None) -> None:
        self.tenant_id = tenant_id
        self.lock = lock or threading.RLock()
        self._now = now
        self._users: dict[str, UserRecord] = {}  # added users, and seeded ones once touched
        self._segments: list[SeedBlock | _AddedRun] = []
        self._segment_starts: list[int] = []
        self._blocks_by_high: dict[int, SeedBlock] = {}
        self._upns: dict[str, str] = {}  # lower-cased UPN -> id, for materialised users
        self._user_end = 0
        self._groups: dict[str, GroupRecord] = {}
        self._group_order: list[str] = []
        self._member_of: dict[str, set[str]] = {}  # member id -> group ids
        self._suspended: dict[str, set[str]] = {}  # soft-deleted user -> groups to restore
        self._soft_deleted: deque[tuple[float, str]] = deque()
        self._log = ChangeLog()

    # -- users ------------------------------------------------------------------------

    def add_user(self, user_principal_name: str, *, id: str | None = None,
                 **properties: Any) -> str:
        """Create a member user; `properties` use Graph's names (`givenName=...`)."""
        _check_names(properties, USER_PROPERTIES)
        local = user_principal_name.split("@")[0]
        props: dict[str, Any] = {
            "userPrincipalName": user_principal_name, "mail": user_principal_name,
            "displayName": local, "mailNickname": local, "accountEnabled": True,
            "userType": "Member", **properties}
        with self.lock:
            user_id = id or str(uuid.uuid4())
            if self._user(user_id) is not None:
                raise ValueError(f"user {user_id} exists")
            self._append_position(user_id)
            self._users[user_id] = UserRecord(props)
            self._index_upn(user_id, None, props)
            self._log.append(UserChange(user_id, ALL_FIELDS))
            return user_id

    def seed_users(self, count: int, *, domain: str = "contoso.example", prefix: str = "user",
                   account_enabled: bool = True, user_type: str = "Member") -> SeededUsers:
        """Add `count` users at once in O(1); see SeedBlock.props for their properties."""
        with self.lock:
            high = uuid.uuid4().int >> 32
            block = SeedBlock(self._user_end, count, high, prefix, domain, account_enabled,
                              user_type)
            self._segments.append(block)
            self._segment_starts.append(block.start)
            self._blocks_by_high[high] = block
            self._user_end += count
            self._log.extend_virtual(SeedLog(block))  # creations, built only when read
            return SeededUsers(block)

    def update_user(self, user_id: str, **properties: Any) -> None:
        """Set properties; only values that really change are logged as changes."""
        _check_names(properties, USER_PROPERTIES)
        with self.lock:
            record = self._live_user(user_id)
            changed = frozenset(k for k, v in properties.items() if record.props.get(k) != v)
            if not changed:
                return
            old = dict(record.props)
            if "manager" in changed and properties["manager"] is None:
                record.props[FORMER_MANAGER] = old.get("manager")
            record.props.update(properties)
            self._index_upn(user_id, old, record.props)
            self._log.append(UserChange(user_id, changed))

    def disable_user(self, user_id: str) -> None:
        self.update_user(user_id, accountEnabled=False)

    def enable_user(self, user_id: str) -> None:
        self.update_user(user_id, accountEnabled=True)

    def soft_delete_user(self, user_id: str) -> None:
        """Move the user to deleted items: `@removed: changed`, restorable for 30 days."""
        with self.lock:
            record = self._live_user(user_id)
            record.state, record.deleted_at = SOFT_DELETED, self._now()
            self._soft_deleted.append((record.deleted_at, user_id))
            self._suspended[user_id] = self._leave_groups(user_id)
            self._log.append(UserChange(user_id, REMOVED))

    def hard_delete_user(self, user_id: str) -> None:
        """Delete permanently (from active or deleted items): `@removed: deleted`."""
        with self.lock:
            record = self._touch(user_id)
            if record is None or record.state == PURGED:
                raise KeyError(user_id)
            if record.state == ACTIVE:
                self._leave_groups(user_id)
            self._suspended.pop(user_id, None)
            record.state = PURGED
            self._upns.pop(str(record.props.get("userPrincipalName", "")).lower(), None)
            self._log.append(UserChange(user_id, REMOVED))

    def restore_user(self, user_id: str) -> None:
        """Bring a soft-deleted user back with the same id and its group memberships."""
        with self.lock:
            record = self._user(user_id)
            if record is None or record.state != SOFT_DELETED:
                raise KeyError(f"{user_id} is not in deleted items")
            record.state = ACTIVE
            self._log.append(UserChange(user_id, ALL_FIELDS))
            for group_id in sorted(self._suspended.pop(user_id, set())):
                if self._groups[group_id].state == ACTIVE:
                    self.add_members(group_id, [user_id])

    def get_user(self, key: str) -> dict[str, Any] | None:
        """An active user's properties (with id) by object id or userPrincipalName."""
        with self.lock:
            user_id = self._resolve(key)
            record = self._user(user_id) if user_id else None
            if record is None or record.state != ACTIVE:
                return None
            return {"id": user_id, **record.props}

    def user_state(self, user_id: str) -> str | None:
        with self.lock:
            record = self._user(user_id)
            return record.state if record else None

    def user_record(self, user_id: str) -> UserRecord | None:
        """The live record (a copy for untouched seeded users); call under `lock`."""
        return self._user(user_id)

    def user_at(self, position: int) -> tuple[str, UserRecord]:
        """The user at a place in creation order (seeded ones are built on the fly)."""
        segment = self._segments[bisect.bisect_right(self._segment_starts, position) - 1]
        offset = position - segment.start
        if isinstance(segment, _AddedRun):
            user_id = segment.ids[offset]
            return user_id, self._users[user_id]
        user_id = segment.user_id(offset)
        return user_id, self._users.get(user_id) or UserRecord(segment.props(offset))

    @property
    def user_end(self) -> int:
        return self._user_end

    # -- groups -----------------------------------------------------------------------

    def create_group(self, display_name: str, *, id: str | None = None,
                     members: Iterable[str] = (), **properties: Any) -> str:
        _check_names(properties, GROUP_PROPERTIES)
        props = {"displayName": display_name, "securityEnabled": True, "mailEnabled": False,
                 "groupTypes": [], **properties}
        with self.lock:
            group_id = id or str(uuid.uuid4())
            if group_id in self._groups:
                raise ValueError(f"group {group_id} exists")
            self._groups[group_id] = GroupRecord(props)
            self._group_order.append(group_id)
            self._log.append(GroupChange(group_id, ALL_FIELDS))
            self.add_members(group_id, members)
            return group_id

    def update_group(self, group_id: str, **properties: Any) -> None:
        _check_names(properties, GROUP_PROPERTIES)
        with self.lock:
            record = self._live_group(group_id)
            changed = frozenset(k for k, v in properties.items() if record.props.get(k) != v)
            if changed:
                record.props.update(properties)
                self._log.append(GroupChange(group_id, changed))

    def rename_group(self, group_id: str, display_name: str) -> None:
        self.update_group(group_id, displayName=display_name)

    def delete_group(self, group_id: str, *, permanent: bool = True) -> None:
        """Delete a group (security groups go at once; `permanent=False` keeps it restorable)."""
        with self.lock:
            record = self._live_group(group_id)
            record.state = PURGED if permanent else SOFT_DELETED
            for member_id in list(record.members):
                self._member_of.get(member_id, set()).discard(group_id)
            self._leave_groups(group_id)
            self._log.append(GroupChange(group_id, REMOVED))

    def add_members(self, group_id: str, member_ids: Iterable[str]) -> None:
        with self.lock:
            record = self._live_group(group_id)
            for member_id in member_ids:
                if member_id in record.members:
                    continue
                member_type = GROUP_TYPE if member_id in self._groups else USER_TYPE
                if member_type == USER_TYPE and self.user_state(member_id) != ACTIVE:
                    raise KeyError(f"no active user or group {member_id}")
                record.members[member_id] = member_type
                self._member_of.setdefault(member_id, set()).add(group_id)
                self._log.append(MemberChange(group_id, member_id, member_type, True))

    def remove_members(self, group_id: str, member_ids: Iterable[str]) -> None:
        with self.lock:
            record = self._live_group(group_id)
            for member_id in member_ids:
                member_type = record.members.pop(member_id, None)
                if member_type is None:
                    continue
                self._member_of.get(member_id, set()).discard(group_id)
                self._log.append(MemberChange(group_id, member_id, member_type, False))

    def get_group(self, group_id: str) -> GroupRecord | None:
        with self.lock:
            return self._groups.get(group_id)

    def members_of(self, group_id: str) -> list[str]:
        with self.lock:
            return list(self._live_group(group_id).members)

    def member_listing(self, group_id: str, transitive: bool = False
                       ) -> list[tuple[str, str]] | None:
        """(member id, @odata.type) of an active group's members, or None if there is no
        such group. `transitive` adds the members of nested groups, breadth first, each
        member once (nested groups are listed too, as Graph's transitiveMembers does)."""
        with self.lock:
            record = self._groups.get(group_id)
            if record is None or record.state != ACTIVE:
                return None
            if not transitive:
                return list(record.members.items())
            listed: dict[str, str] = {}
            queue = deque([group_id])
            visited = {group_id}
            while queue:
                for member_id, member_type in self._groups[queue.popleft()].members.items():
                    listed.setdefault(member_id, member_type)
                    if member_type == GROUP_TYPE and member_id not in visited:
                        visited.add(member_id)
                        queue.append(member_id)
            listed.pop(group_id, None)  # a cycle back to the group itself
            return list(listed.items())

    def member_of_listing(self, key: str) -> list[tuple[str, str]] | None:
        """(group id, @odata.type) of the active groups an active user (by object id or
        userPrincipalName) is a direct member of, or None if there is no such user."""
        with self.lock:
            user_id = self._resolve(key)
            record = self._user(user_id) if user_id else None
            if user_id is None or record is None or record.state != ACTIVE:
                return None
            return [(group_id, GROUP_TYPE) for group_id in sorted(self._member_of.get(user_id, ()))
                    if self._groups[group_id].state == ACTIVE]

    @property
    def group_ids(self) -> list[str]:
        with self.lock:
            return list(self._group_order)

    def group_at(self, position: int) -> tuple[str, GroupRecord]:
        group_id = self._group_order[position]
        return group_id, self._groups[group_id]

    @property
    def group_end(self) -> int:
        return len(self._group_order)

    # -- the change log ---------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The log position a delta token issued now would carry."""
        return len(self._log)

    def changes(self, start: int, end: int) -> Iterator[Change]:
        """Log entries in [start, end): O(end - start)."""
        return self._log.slice(start, end)

    def purge_expired(self) -> None:
        """Hard-delete users whose 30 days in deleted items are over."""
        with self.lock:
            now = self._now()
            while self._soft_deleted and self._soft_deleted[0][0] + SOFT_DELETE_RETENTION <= now:
                deleted_at, user_id = self._soft_deleted.popleft()
                record = self._user(user_id)
                if record and record.state == SOFT_DELETED and record.deleted_at == deleted_at:
                    self.hard_delete_user(user_id)

    # -- internals --------------------------------------------------------------------

    def _user(self, user_id: str) -> UserRecord | None:
        """The user's record; for an untouched seeded user, a throwaway copy."""
        record = self._users.get(user_id)
        if record is not None:
            return record
        block, index = self._seeded(user_id)
        return UserRecord(block.props(index)) if block else None

    def _touch(self, user_id: str) -> UserRecord | None:
        """The user's record, kept from now on so that changes to it stick."""
        record = self._user(user_id)
        if record is not None:
            self._users[user_id] = record
        return record

    def _seeded(self, user_id: str) -> tuple[SeedBlock | None, int]:
        try:
            number = uuid.UUID(user_id).int
        except ValueError:
            return None, -1
        block = self._blocks_by_high.get(number >> 32)
        index = number & 0xFFFFFFFF
        if block is None or index >= block.count or block.user_id(index) != user_id.lower():
            return None, -1
        return block, index

    def _live_user(self, user_id: str) -> UserRecord:
        record = self._touch(user_id)
        if record is None or record.state != ACTIVE:
            raise KeyError(f"no active user {user_id}")
        return record

    def _live_group(self, group_id: str) -> GroupRecord:
        record = self._groups.get(group_id)
        if record is None or record.state != ACTIVE:
            raise KeyError(f"no active group {group_id}")
        return record

    def _resolve(self, key: str) -> str | None:
        if "@" not in key:
            return key
        if user_id := self._upns.get(key.lower()):
            return user_id
        for block in self._blocks_by_high.values():
            index = block.index_of_upn(key)
            if index is not None:
                user_id = block.user_id(index)
                record = self._users.get(user_id)  # touched since: its UPN may have moved
                if record is None or str(record.props["userPrincipalName"]).lower() == key.lower():
                    return user_id
        return None

    def _index_upn(self, user_id: str, old: dict[str, Any] | None,
                   new: dict[str, Any]) -> None:
        if old is not None:
            self._upns.pop(str(old.get("userPrincipalName", "")).lower(), None)
        self._upns[str(new["userPrincipalName"]).lower()] = user_id

    def _append_position(self, user_id: str) -> None:
        last = self._segments[-1] if self._segments else None
        if isinstance(last, _AddedRun):
            last.ids.append(user_id)
        else:
            self._segments.append(_AddedRun(self._user_end, [user_id]))
            self._segment_starts.append(self._user_end)
        self._user_end += 1

    def _leave_groups(self, member_id: str) -> set[str]:
        """Drop a member from every group it is in (logged); return those groups."""
        groups = set(self._member_of.get(member_id, set()))
        for group_id in sorted(groups):
            self.remove_members(group_id, [member_id])
        return groups


def _check_names(properties: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = set(properties) - allowed
    if unknown:
        raise ValueError(f"unknown properties {sorted(unknown)}; use Graph's names")
