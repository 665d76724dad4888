"""What a round could not apply, kept until a later round does.

The Graph object id is a user's identity; its userPrincipalName is a name that moves
(renamed, swapped, reused after a deletion). A page may ask for a name another user
still holds until later in the round, or an item may be refused for a reason of its
own. Such an item is never dropped and never mistaken for a deletion: its Graph item is
kept here with a code and a reason in plain words, retried at the end of the round and
of every later round (the deltaLink moves on; Graph will not send it again), merged
with whatever Graph sends of the object later, and left out of sweeps.

The same table holds the users whose group memberships are still to be read (kind
GROUPS_DUE): a user who enters the scope in an incremental round is in groups that
`/groups/delta` will not mention again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.orm import Session

from connector import provlog
from connector.events import WriteContext
from connector.models import SyncPending, SyncPendingMember
from connector.status import Source

USER = "user"
GROUP = "group"
GROUPS_DUE = "groups"


@dataclass(frozen=True)
class Failure:
    """Why an item did not apply: a stable code and the reason in plain words."""

    code: str
    reason: str
    operation: str = "update"


def remember(s: Session, tenant_id: str, kind: str, object_id: str, item: dict[str, Any],
             failure: Failure, run_id: int | None, now: dt.datetime) -> SyncPending:
    """Keep (or update) the object's pending item."""
    row = s.get(SyncPending, (tenant_id, kind, object_id))
    if row is None:
        row = SyncPending(tenant_id=tenant_id, kind=kind, object_id=object_id, item=item,
                          operation=failure.operation, code=failure.code,
                          reason=failure.reason, run_id=run_id, attempts=1,
                          first_failed_at=now, last_failed_at=now)
        s.add(row)
    else:
        row.item, row.operation, row.code = item, failure.operation, failure.code
        row.reason, row.run_id, row.last_failed_at = failure.reason, run_id, now
        row.attempts += 1
    if kind in (USER, GROUP) and run_id is not None:
        _log_failure(s, tenant_id, kind, object_id, item, failure, run_id, now)
    return row


def _log_failure(s: Session, tenant_id: str, kind: str, object_id: str, item: dict[str, Any],
                 failure: Failure, run_id: int, now: dt.datetime) -> None:
    """The attempt's entry in the provisioning log (one per round that failed it)."""
    name = item.get("userPrincipalName") or item.get("displayName")
    operation = failure.operation if failure.operation in provlog.OPERATIONS else "update"
    provlog.record(s, WriteContext(tenant_id, Source.ENTRA_SYNC, "entra-sync",
                                   f"sync-run:{run_id}", now),
                   operation=operation, result="failure", code=failure.code,
                   reason=failure.reason, object_id=object_id,
                   name=name if isinstance(name, str) else None, object_type=kind)


def forget(s: Session, tenant_id: str, kind: str, object_ids: Iterable[str]) -> None:
    ids = list(object_ids)
    for start in range(0, len(ids), 1000):
        s.execute(delete(SyncPending).where(
            SyncPending.tenant_id == tenant_id, SyncPending.kind == kind,
            SyncPending.object_id.in_(ids[start:start + 1000])))


def items_of(s: Session, tenant_id: str, kind: str, object_ids: Sequence[str]
             ) -> dict[str, dict[str, Any]]:
    """The kept items of these objects, by object id (one statement per 1,000 ids; none
    more when the tenant keeps nothing of the kind, as in nearly every round)."""
    found: dict[str, dict[str, Any]] = {}
    if s.scalar(select(SyncPending.object_id).where(
            SyncPending.tenant_id == tenant_id, SyncPending.kind == kind).limit(1)) is None:
        return found
    for start in range(0, len(object_ids), 1000):
        found.update(s.execute(select(SyncPending.object_id, SyncPending.item).where(
            SyncPending.tenant_id == tenant_id, SyncPending.kind == kind,
            SyncPending.object_id.in_(object_ids[start:start + 1000]))).all())
    return found


def waiting(s: Session, tenant_id: str, kind: str, limit: int | None = None
            ) -> list[SyncPending]:
    query = (select(SyncPending).where(SyncPending.tenant_id == tenant_id,
                                       SyncPending.kind == kind)
             .order_by(SyncPending.first_failed_at, SyncPending.object_id))
    if limit is not None:
        query = query.limit(limit)
    return list(s.scalars(query))


def kept_count(s: Session, tenant_id: str) -> int:
    """How many user and group items the tenant keeps for later rounds."""
    return s.scalar(select(func.count()).select_from(SyncPending).where(
        SyncPending.tenant_id == tenant_id, SyncPending.kind.in_((USER, GROUP)))) or 0


def kept(s: Session, tenant_id: str, offset: int = 0, limit: int | None = None
         ) -> list[SyncPending]:
    """The user and group items the tenant keeps, oldest first (the API, the status
    page and `connector sync run` list them)."""
    query = (select(SyncPending).where(SyncPending.tenant_id == tenant_id,
                                       SyncPending.kind.in_((USER, GROUP)))
             .order_by(SyncPending.first_failed_at, SyncPending.object_id).offset(offset))
    if limit is not None:
        query = query.limit(limit)
    return list(s.scalars(query))


def kept_json(row: SyncPending) -> dict[str, Any]:
    """A kept item as the admin API and `connector sync run --json` show it."""
    item = row.item or {}
    name = item.get("userPrincipalName") if row.kind == USER else item.get("displayName")
    return {"objectId": row.object_id, "kind": row.kind,
            "userName": name if isinstance(name, str) else None,
            "operation": row.operation, "code": row.code, "reason": row.reason,
            "attempts": row.attempts, "runId": row.run_id,
            "firstFailed": row.first_failed_at.isoformat(),
            "lastFailed": row.last_failed_at.isoformat()}


def waiting_object_ids(tenant_id: str) -> Any:
    """A subquery of the object ids of users kept pending: sweeps leave them alone."""
    return select(SyncPending.object_id).where(SyncPending.tenant_id == tenant_id,
                                               SyncPending.kind == USER)


def merged(kept: dict[str, Any] | None, item: dict[str, Any]) -> dict[str, Any]:
    """A kept item with what Graph sent since laid over it (delta items carry only what
    changed, so the kept one may hold a change the new one lacks). A removal replaces
    everything; an object sent again after its removal starts afresh."""
    if kept is None or "@removed" in item or "@removed" in kept:
        return item
    return {**kept, **item}


# -- members not known yet ----------------------------------------------------------------


def wait_for_members(s: Session, tenant_id: str, group_object_id: str,
                     member_object_ids: Iterable[str]) -> None:
    ids = set(member_object_ids)
    if not ids:
        return
    known = set(s.scalars(select(SyncPendingMember.member_object_id).where(
        SyncPendingMember.tenant_id == tenant_id,
        SyncPendingMember.group_object_id == group_object_id,
        SyncPendingMember.member_object_id.in_(ids))))
    s.add_all(SyncPendingMember(tenant_id=tenant_id, group_object_id=group_object_id,
                                member_object_id=m) for m in sorted(ids - known))


def stop_waiting(s: Session, tenant_id: str, group_object_id: str,
                 member_object_ids: Iterable[str] | None = None) -> None:
    """The group no longer waits for these members (removed from it), or for any (the
    group is gone)."""
    query = delete(SyncPendingMember).where(
        SyncPendingMember.tenant_id == tenant_id,
        SyncPendingMember.group_object_id == group_object_id)
    if member_object_ids is not None:
        ids = list(member_object_ids)
        if not ids:
            return
        query = query.where(SyncPendingMember.member_object_id.in_(ids))
    s.execute(query)


def members_waiting(s: Session, tenant_id: str) -> dict[str, list[str]]:
    """Every group's members not known yet, by group object id."""
    by_group: dict[str, list[str]] = {}
    for group_oid, member_oid in s.execute(select(
            SyncPendingMember.group_object_id, SyncPendingMember.member_object_id).where(
            SyncPendingMember.tenant_id == tenant_id).order_by(
            SyncPendingMember.group_object_id, SyncPendingMember.member_object_id)):
        by_group.setdefault(group_oid, []).append(member_oid)
    return by_group


def members_found(s: Session, tenant_id: str, pairs: Iterable[tuple[str, str]]) -> None:
    rows = list(pairs)
    for start in range(0, len(rows), 500):
        s.execute(delete(SyncPendingMember).where(
            SyncPendingMember.tenant_id == tenant_id,
            tuple_(SyncPendingMember.group_object_id, SyncPendingMember.member_object_id)
            .in_(rows[start:start + 500])))
