"""The round's end retries what its pages could not apply, until nothing more applies.

Names move within a round: a re-hire takes a name whose old holder is deleted only when
the round's staged changes apply; a chain of renames (A→B, B→C) lands in whatever order
its items came. Retrying the kept items until none more applies settles those. Names in
a ring (A and B swap, or A→B, B→C, C→A) never settle one at a time: each waits for the
next. A ring is found from the kept items and applied together, every member's old name
set aside first, in one savepoint: all of it lands, or none of it.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from azure_sync import mapping, pending
from azure_sync import scope as scoping
from azure_sync.applier import PageApplier
from connector.errors import DomainError
from connector.models import SyncPending, SyncStaged, Tenant, User

# Retries of the whole kept list per round end, at most (each must apply one more item).
MAX_PASSES = 20


def settle(s: Session, tenant: Tenant, run_id: int, round_key: int, full_round: bool,
           scope: scoping.Scope, now: dt.datetime, before_staged: bool = False
           ) -> dict[str, int]:
    """Retry the tenant's kept items (users, then groups) until no more apply, then
    rings of renames; return what was applied. `before_staged`: the round's staged
    deletions are still to apply, so items waiting for a name one of them frees are
    left for the retry after them."""
    counts: Counter[str] = Counter()
    later = _freed_later(s, tenant.id, round_key) if before_staged else set()
    for kind, phase in ((pending.USER, "users"), (pending.GROUP, "groups")):
        _passes(s, tenant, run_id, round_key, full_round, scope, now, kind, phase, counts,
                later)
        if kind == pending.USER:
            for ring in _rings(s, tenant.id):
                if _apply_ring(s, tenant, run_id, round_key, full_round, scope, now, ring,
                               counts):
                    _passes(s, tenant, run_id, round_key, full_round, scope, now, kind,
                            phase, counts, later)
    s.flush()
    return {f"retried_{k}": v for k, v in counts.items() if k not in ("failed",)}


def _freed_later(s: Session, tenant_id: str, round_key: int) -> set[str]:
    """The names (case-folded) of the users whose removal the round staged."""
    return set(s.scalars(select(User.user_name_norm).join(
        SyncStaged, (SyncStaged.tenant_id == User.tenant_id) & (SyncStaged.user_id == User.id))
        .where(SyncStaged.run_id == round_key, User.removed_at.is_(None))))


def _waits_for(row: SyncPending, names: set[str]) -> bool:
    name = row.item.get("userPrincipalName") if row.item else None
    return row.code == "name_taken" and isinstance(name, str) and name.casefold() in names


def _passes(s: Session, tenant: Tenant, run_id: int, round_key: int, full_round: bool,
            scope: scoping.Scope, now: dt.datetime, kind: str, phase: str,
            counts: Counter[str], later: set[str]) -> None:
    for _ in range(MAX_PASSES):
        rows = [r for r in pending.waiting(s, tenant.id, kind) if not _waits_for(r, later)]
        if not rows:
            return
        # The fast way first (a re-hire's thousands of users: one INSERT), one by one
        # if something fails, as a page.
        applier = _applier(s, tenant, run_id, round_key, full_round, scope, now, rows)
        try:
            with applier.directory.savepoint():
                applier.apply(phase, [r.item for r in rows], careful=False)
        except (DomainError, IntegrityError):
            applier = _applier(s, tenant, run_id, round_key, full_round, scope, now, rows)
            applier.apply(phase, [r.item for r in rows], careful=True)
        # A retry that fails again is not a new failure: its row stays as it was.
        applier.failed.clear()
        applier.settle(phase)
        counts.update(applier.counts)
        if not applier.applied:
            return


class RingBroken(Exception):
    """A member of a ring of renames failed inside the ring's savepoint."""


def _applier(s: Session, tenant: Tenant, run_id: int, round_key: int, full_round: bool,
             scope: scoping.Scope, now: dt.datetime, rows: list[SyncPending]
             ) -> PageApplier:
    applier = PageApplier(s, tenant, run_id, full_round, now, scope=scope,
                          round_key=round_key)
    applier.kept = {r.object_id: r.item for r in rows}
    applier.after_groups = True  # what lands now missed the round's group pages
    return applier


def _rings(s: Session, tenant_id: str) -> list[list[SyncPending]]:
    """Kept renames whose wanted names are held by one another, in cycles."""
    rows = [r for r in pending.waiting(s, tenant_id, pending.USER) if r.code == "name_taken"]
    wanted: dict[str, str] = {}  # object id -> the name it waits for (case-folded)
    for row in rows:
        try:
            delta = mapping.parse_user(row.item)
        except mapping.MalformedItem:
            continue
        name = delta.changes.get("userPrincipalName")
        if delta.removed is None and isinstance(name, str) and name:
            wanted[row.object_id] = name.casefold()
    if not wanted:
        return []
    holders = dict(s.execute(select(User.user_name_norm, User.external_id).where(
        User.tenant_id == tenant_id, User.removed_at.is_(None),
        User.user_name_norm.in_(sorted(set(wanted.values()))))).all())
    # Each kept rename points at the kept rename holding its name: a functional graph,
    # whose cycles are the rings.
    following = {oid: holders.get(name) for oid, name in wanted.items()}
    by_id = {r.object_id: r for r in rows}
    rings: list[list[SyncPending]] = []
    done: set[str] = set()
    for start in sorted(following):
        path: list[str] = []
        node: str | None = start
        while node is not None and node in following and node not in done and node not in path:
            path.append(node)
            node = following[node]
        if node is not None and node in path:
            rings.append([by_id[oid] for oid in path[path.index(node):]])
        done.update(path)
    return rings


def _apply_ring(s: Session, tenant: Tenant, run_id: int, round_key: int, full_round: bool,
                scope: scoping.Scope, now: dt.datetime, ring: list[SyncPending],
                counts: Counter[str]) -> bool:
    users = list(s.scalars(select(User).where(
        User.tenant_id == tenant.id, User.removed_at.is_(None),
        User.external_id.in_([r.object_id for r in ring]))))
    if len(users) != len(ring):
        return False
    applier = _applier(s, tenant, run_id, round_key, full_round, scope, now, ring)
    try:
        with applier.directory.savepoint():
            applier.directory.hold_names_aside(users)
            applier.apply("users", [r.item for r in ring], careful=False)
            if applier.failed:  # one member did not land: none of the ring does
                raise RingBroken
    except (DomainError, IntegrityError, RingBroken):
        for user in users:  # the names set aside are back, in the database and here
            s.expire(user)
        return False
    applier.applied = [r.object_id for r in ring]
    applier.settle("users")
    counts.update(applier.counts)
    counts["ring_renamed"] += len(ring)
    return True
