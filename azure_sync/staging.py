"""Destructive changes wait for the round's end: staging, the threshold, applying them.

A round does not disable or delete page by page. It stages those changes (a disable, a
soft or hard delete, a user who left the scope, the sweep of users a full round did not
see) in `sync_staged`; when the round completes, they are applied together if they stay
under the tenant's threshold (a count, or a percentage of the synced users), or held
for an admin's approval if not. So a misconfigured scope or a bad night in the identity
provider never mass-disables people.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from azure_sync import mapping, pending, writer
from azure_sync import scope as scoping
from azure_sync.writer import stored_profile, write_context
from connector.commands import GroupFields, MemberChange
from connector.directory import Directory
from connector.errors import DomainError
from connector.models import (
    EntraRegistration,
    Group,
    Membership,
    SyncRun,
    SyncStaged,
    Tenant,
    User,
)
from connector.status import Source

# A new registration's threshold (an admin may change it): a round holds its
# disables/deletions when they are more than this many users, or this percentage of the
# synced users. Entra's own provisioning defaults to 500 ("accidental deletions").
THRESHOLD_COUNT = 500
THRESHOLD_PERCENT = 20

# Below this many disables/deletions the percentage rule does not apply: in a tenant of
# 8 users, 2 leavers are 25 %, and that is ordinary life, not an accident.
PERCENT_RULE_FROM = 10


# What a soft delete in Entra ID (the user moved to deleted items, restorable for 30
# days) does to the connector's user. "disable", the default, is what Entra's own
# provisioning service does to SCIM apps: the user turns inactive and goes on the
# deleted-users list, keeps its id, modules and memberships, and a restore makes it
# active again; only a hard delete removes it. "remove" hides it at once (the
# connector's behaviour before; a restore still brings the same user back).
SOFT_DELETE = ("disable", "remove")


def soft_delete_of(registration: EntraRegistration | None) -> str:
    return registration.soft_delete if registration is not None else "disable"


def released_name(object_id: str, user_principal_name: str) -> str:
    """The name a soft-deleted user keeps while it waits in deleted items, as Entra ID
    renames it (the object id without hyphens, then the old name): the old name is free
    for a new account, as it is in Entra."""
    prefix = object_id.replace("-", "")
    if user_principal_name.startswith(prefix):
        return user_principal_name
    return f"{prefix}{user_principal_name}"


def remove_or_disable(directory: Directory, user: User, action: str, soft_delete: str
                      ) -> str:
    """Apply one destructive change to `user`; return the count it goes under."""
    if action == "soft_delete" and soft_delete == "disable":
        oid = user.external_id or ""
        fields = mapping.user_fields(oid, stored_profile(user), {
            "accountEnabled": False,
            "userPrincipalName": released_name(oid, user.user_name)})
        assert fields is not None
        directory.update_user(user, fields)
        return "disabled"
    if action == "disable":
        fields = mapping.user_fields(user.external_id or "", stored_profile(user),
                                     {"accountEnabled": False})
        assert fields is not None
        directory.update_user(user, fields)
        return "disabled"
    directory.remove_user(user)
    return "deleted"


def round_key_of(s: Session, run_id: int) -> int:
    """The key of the round a run belongs to (its first run's id): staged changes are
    the round's."""
    return s.scalar(select(func.coalesce(SyncRun.round_id, SyncRun.id))
                    .where(SyncRun.id == run_id)) or run_id


def held_run_id(s: Session, tenant_id: str) -> int | None:
    """The tenant's round awaiting approval, if any (no round starts while one is)."""
    return s.scalar(select(SyncRun.id).where(SyncRun.tenant_id == tenant_id,
                                             SyncRun.status == "awaiting_approval"))


# -- staging ------------------------------------------------------------------------------


def stage(s: Session, tenant_id: str, run_id: int,
          rows: Iterable[tuple[str, str, str | None]]) -> None:
    """Stage (object id, action, user id) rows after the round's others, in order."""
    start = s.scalar(select(func.coalesce(func.max(SyncStaged.seq), 0))
                     .where(SyncStaged.run_id == run_id)) or 0
    s.add_all(SyncStaged(run_id=run_id, seq=start + i, tenant_id=tenant_id, object_id=oid,
                         action=action, user_id=uid)
              for i, (oid, action, uid) in enumerate(rows, 1))
    s.flush()  # sessions do not autoflush: the counts and reads that follow must see them


def drop_staged(s: Session, run_id: int) -> int:
    """Drop a round's staged changes unapplied; return how many there were."""
    result = s.execute(delete(SyncStaged).where(SyncStaged.run_id == run_id))
    return int(result.rowcount)  # type: ignore[attr-defined]


def leavers(s: Session, tenant_id: str, run_id: int, scope: scoping.Scope
            ) -> list[tuple[str, str, str | None]]:
    """Synced users outside the round's group scope (they left the chosen groups, or the
    groups changed), except those the round staged already."""
    if not scope.by_groups:
        return []
    staged = select(SyncStaged.user_id).where(SyncStaged.run_id == run_id,
                                              SyncStaged.user_id.is_not(None))
    rows = s.execute(select(User.id, User.external_id, User.user_name).where(
        User.tenant_id == tenant_id, User.removed_at.is_(None),
        User.origin == Source.ENTRA_SYNC, User.id.not_in(staged),
        User.external_id.not_in(pending.waiting_object_ids(tenant_id))))
    return [(oid or "", "out_of_scope", uid) for uid, oid, user_name in rows
            if not scope.admits(oid or "", user_name)]


def stage_sweep(s: Session, tenant_id: str, run_id: int, counts: dict[str, int]) -> int:
    """Stage the removal of synced users this full round did not see. A round that saw
    nobody sweeps nobody: an empty answer is more likely a fault than an empty tenant.
    A user kept pending (an item that failed) is never swept: Graph did send it.
    `run_id`: the round's key (its first run)."""
    if counts.get("seen", 0) == 0:
        return 0
    staged = select(SyncStaged.user_id).where(SyncStaged.run_id == run_id,
                                              SyncStaged.user_id.is_not(None))
    missing = s.execute(select(User.id, User.external_id).where(
        User.tenant_id == tenant_id, User.removed_at.is_(None),
        User.origin == Source.ENTRA_SYNC, User.id.not_in(staged),  # out of scope, staged
        User.external_id.not_in(pending.waiting_object_ids(tenant_id)),
        or_(User.seen_in_run.is_(None), User.seen_in_run != run_id))).all()
    stage(s, tenant_id, run_id, [(oid or "", "sweep", uid) for uid, oid in missing])
    return len(missing)


def sweep_groups(s: Session, tenant: Tenant, run_id: int, counts: dict[str, int],
                 now: dt.datetime) -> dict[str, int]:
    """After a full round: remove the synced groups, and the memberships of synced
    groups, that it did not list (gone from Entra ID). A round that listed no group
    removes nothing (an empty answer is more likely a fault)."""
    if counts.get("groups_seen", 0) == 0:
        return {}
    directory = Directory(s, tenant, write_context(tenant.id, run_id, now))
    swept: Counter[str] = Counter()
    for group in s.scalars(select(Group).where(
            Group.tenant_id == tenant.id, Group.origin == Source.ENTRA_SYNC,
            or_(Group.seen_in_run.is_(None), Group.seen_in_run != run_id))).all():
        directory.remove_group(group)
        swept["groups_swept"] += 1
    for group_id, members in _stale_members(s, tenant.id, run_id).items():
        stale = s.get(Group, (tenant.id, group_id))
        if stale is None:
            continue
        fields = GroupFields(display_name=stale.display_name, external_id=stale.external_id,
                             data=dict(stale.data or {}))
        directory.update_group(stale, fields, [MemberChange("remove", tuple(members))])
        swept["memberships_swept"] += len(members)
    s.flush()
    return dict(swept)


def _stale_members(s: Session, tenant_id: str, run_id: int) -> dict[str, list[str]]:
    """The members of synced groups the full round did not list, by group."""
    stale = s.execute(
        select(Membership.group_id, Membership.member_id)
        .join(Group, (Group.tenant_id == Membership.tenant_id)
              & (Group.id == Membership.group_id))
        .where(Membership.tenant_id == tenant_id, Group.origin == Source.ENTRA_SYNC,
               or_(Membership.seen_in_run.is_(None), Membership.seen_in_run != run_id))
    ).all()
    by_group: dict[str, list[str]] = {}
    for group_id, member_id in stale:
        by_group.setdefault(group_id, []).append(member_id)
    return by_group


# -- the threshold ------------------------------------------------------------------------


def hold_reason(s: Session, tenant_id: str, run_id: int,
                registration: EntraRegistration | None) -> str | None:
    """Why the round's staged changes wait for an admin's approval; None: they may be
    applied now (none staged, or under the threshold)."""
    staged = s.scalar(select(func.count()).select_from(SyncStaged)
                      .where(SyncStaged.run_id == run_id)) or 0
    limit_count = registration.threshold_count if registration else THRESHOLD_COUNT
    limit_percent = registration.threshold_percent if registration else THRESHOLD_PERCENT
    synced = synced_users(s, tenant_id, users_that_decide(staged, limit_percent))
    if not staged or not is_over_threshold(staged, synced, limit_count, limit_percent):
        return None
    synced = synced_users(s, tenant_id)  # the exact number, for the admin
    return (f"{staged} disables/deletions exceed the threshold ({limit_count} users or "
            f"{limit_percent} % of {synced}); held for approval.")


def users_that_decide(staged: int, limit_percent: int) -> int:
    """How many synced users the percentage rule needs counted: with at least this many,
    `staged` is not over `limit_percent` % (counting a million users cost an
    incremental round on PostgreSQL a tenth of a second, for a yes/no answer)."""
    if staged < PERCENT_RULE_FROM or limit_percent <= 0:
        return 0
    return staged * 100 // limit_percent + 1


def synced_users(s: Session, tenant_id: str, at_most: int | None = None) -> int:
    """The tenant's live users synced from Entra ID, counted up to `at_most`."""
    if at_most == 0:
        return 0
    users = select(User.id).where(User.tenant_id == tenant_id, User.removed_at.is_(None),
                                  User.origin == Source.ENTRA_SYNC)
    if at_most is not None:
        users = users.limit(at_most)
    return s.scalar(select(func.count()).select_from(users.subquery())) or 0


def is_over_threshold(staged: int, synced: int, limit_count: int, limit_percent: int) -> bool:
    """Accidental-deletion prevention: more than `limit_count` destructive changes, or
    (from PERCENT_RULE_FROM on) more than `limit_percent` % of the synced users."""
    if staged > limit_count:
        return True
    return staged >= PERCENT_RULE_FROM and staged * 100 > limit_percent * max(synced, 1)


# -- applying ------------------------------------------------------------------------------


def apply_staged(s: Session, tenant: Tenant, run_id: int, now: dt.datetime,
                 by_run: int | None = None) -> dict[str, int]:
    """Apply a round's staged destructive changes (at completion, or on approval), as
    written at `now`. `run_id`: the round's key; `by_run`: the run writing them (its
    events' correlation id), the round's key by default."""
    directory = Directory(s, tenant, write_context(tenant.id, by_run or run_id, now))
    soft_delete = soft_delete_of(s.get(EntraRegistration, tenant.id))
    with directory.batched_events():
        return _apply_staged(s, directory, tenant, run_id, soft_delete)


def _apply_staged(s: Session, directory: Directory, tenant: Tenant, run_id: int,
                  soft_delete: str) -> dict[str, int]:
    staged = s.execute(select(SyncStaged.action, SyncStaged.user_id, SyncStaged.object_id)
                       .where(SyncStaged.run_id == run_id, SyncStaged.tenant_id == tenant.id)
                       .order_by(SyncStaged.seq)).all()
    users = _users_by_id(s, tenant.id, [row.user_id for row in staged if row.user_id])
    # All together first (one savepoint: a round's 200 disables, not 200 savepoints);
    # if one is refused, again one by one, so that it alone is left out.
    try:
        with directory.savepoint():
            counts = _apply_rows(directory, users, staged, soft_delete, None)
    except (DomainError, IntegrityError):
        for user in users.values():
            s.expire(user)
        counts = _apply_rows(directory, users, staged, soft_delete, (tenant.id, run_id))
    s.execute(delete(SyncStaged).where(SyncStaged.run_id == run_id,
                                       SyncStaged.tenant_id == tenant.id))
    s.flush()
    return dict(counts)


def _apply_rows(directory: Directory, users: dict[str, User], staged: Any,
                soft_delete: str, careful: tuple[str, int] | None) -> Counter[str]:
    """Apply the staged rows; `careful` (tenant id, run id): each in its own savepoint,
    a refused one counted and logged instead of raised."""
    counts: Counter[str] = Counter()
    for row in staged:
        user = users.get(row.user_id) if row.user_id else None
        if user is None or user.removed_at is not None:
            counts["unchanged"] += 1
            continue
        if careful is None:
            counts[remove_or_disable(directory, user, row.action, soft_delete)] += 1
            continue
        try:
            with directory.savepoint():
                counts[remove_or_disable(directory, user, row.action, soft_delete)] += 1
        except (DomainError, IntegrityError) as exc:
            # Never a reason to stop the round: counted, logged, and Graph's next word
            # on the user (or the next full round) applies it.
            counts["failed"] += 1
            writer.log_event(careful[0], careful[1], "staged change failed",
                             f"{row.action} {row.object_id}: "
                             f"{getattr(exc, 'message', type(exc).__name__)}")
    return counts


def _users_by_id(s: Session, tenant_id: str, ids: list[str]) -> dict[str, User]:
    """The users with these connector ids, locked, in a few statements (not one each)."""
    found: dict[str, User] = {}
    for start in range(0, len(ids), 1000):
        found.update((u.id, u) for u in s.scalars(select(User).where(
            User.tenant_id == tenant_id, User.id.in_(ids[start:start + 1000]))
            .with_for_update()))
    return found
