"""Read the event and activity logs user by user, for the fold (billing.fold).

A month close streams every user of a tenant in chunks of ids: for each chunk, three
indexed range reads (the users' own events, their memberships by `events.object_id`,
their activity), grouped by user in memory for that chunk only. Memory is bounded by
the chunk, never by the tenant. Only rows recorded up to the close's cut-off are read.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from billing.fold import (
    ACTIVITY,
    COUNTED_ACTIVITY,
    JOINED,
    LEFT,
    USER_KINDS,
    Fact,
    fact_order,
    fold_group_modules,
)
from connector import events
from connector.models import Activity, Event, User

GROUP_KINDS = ("group.created", "group.modules", "group.removed")
MEMBER_KINDS = {events.MEMBER_ADDED: JOINED, events.MEMBER_REMOVED: LEFT}


@dataclass(frozen=True)
class Scope:
    """Which rows a fold reads: one tenant's, effective before `end`, recorded by
    `cutoff`; activity only when the policy counts it, and only inside the month."""

    tenant_id: str
    start: dt.datetime
    end: dt.datetime
    cutoff: dt.datetime
    with_activity: bool


def group_modules(session: Session, scope: Scope) -> dict[str, frozenset[str]]:
    """Every group's modules at the scope's end (groups are few: read them at once)."""
    rows = session.execute(
        select(Event.subject_id, Event.kind, Event.new_value, Event.effective_at, Event.id)
        .where(Event.tenant_id == scope.tenant_id, Event.subject_type == "group",
               Event.kind.in_(GROUP_KINDS), Event.effective_at < scope.end,
               Event.recorded_at <= scope.cutoff)
        .order_by(Event.effective_at, Event.id))
    return fold_group_modules(
        ((gid, Fact(at, seq, kind, value)) for gid, kind, value, at, seq in rows), scope.end)


def user_id_chunks(session: Session, tenant_id: str, size: int,
                   after: str = "") -> Iterator[list[str]]:
    """Every user id of the tenant (removed ones too), in id order, `size` at a time."""
    while True:
        ids = list(session.scalars(
            select(User.id).where(User.tenant_id == tenant_id, User.id > after)
            .order_by(User.id).limit(size)))
        if not ids:
            return
        yield ids
        after = ids[-1]


def facts_by_user(session: Session, scope: Scope, ids: Sequence[str]
                  ) -> dict[str, list[Fact]]:
    """The facts of users `ids` (sorted, one chunk of consecutive ids), each user's in
    fold order: three range reads."""
    low, high = ids[0], ids[-1]
    return _facts(session, scope, lambda column: and_(column >= low, column <= high))


def facts_of(session: Session, scope: Scope, ids: Sequence[str]) -> dict[str, list[Fact]]:
    """Like `facts_by_user`, for a scattered set of users (late-event corrections)."""
    found: dict[str, list[Fact]] = {}
    ids = list(ids)
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        found.update(_facts(session, scope, lambda column, part=part: column.in_(part)))
    return found


def _facts(session: Session, scope: Scope, users: Callable[[Any], Any]
           ) -> dict[str, list[Fact]]:
    by_user: dict[str, list[Fact]] = defaultdict(list)
    own = session.execute(
        select(Event.subject_id, Event.kind, Event.new_value, Event.effective_at, Event.id)
        .where(Event.tenant_id == scope.tenant_id, Event.subject_type == "user",
               users(Event.subject_id), Event.kind.in_(USER_KINDS),
               Event.effective_at < scope.end, Event.recorded_at <= scope.cutoff))
    for uid, kind, value, at, seq in own:
        by_user[uid].append(Fact(at, seq, kind, value))
    memberships = session.execute(
        select(Event.object_id, Event.subject_id, Event.kind, Event.effective_at, Event.id)
        .where(Event.tenant_id == scope.tenant_id, users(Event.object_id),
               Event.kind.in_(MEMBER_KINDS), Event.effective_at < scope.end,
               Event.recorded_at <= scope.cutoff))
    for uid, group_id, kind, at, seq in memberships:
        by_user[uid].append(Fact(at, seq, MEMBER_KINDS[kind], group_id))
    if scope.with_activity:
        used = session.execute(
            select(Activity.user_id, Activity.kind, Activity.occurred_at, Activity.id)
            .where(Activity.tenant_id == scope.tenant_id, users(Activity.user_id),
                   Activity.kind.in_(COUNTED_ACTIVITY), Activity.occurred_at >= scope.start,
                   Activity.occurred_at < scope.end, Activity.recorded_at <= scope.cutoff))
        for uid, kind, at, seq in used:
            by_user[uid].append(Fact(at, seq, ACTIVITY, kind))
    for facts in by_user.values():
        facts.sort(key=fact_order)
    return by_user
