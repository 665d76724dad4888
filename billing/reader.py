"""Read the event and activity logs user by user, for the fold (billing.fold).

A month close streams every user of a tenant in chunks of ids: for each chunk, three
indexed range reads (the users' own events, their memberships by `events.object_id`,
their activity), grouped by user in memory for that chunk only. Memory is bounded by
the chunk, never by the tenant. Only rows recorded up to the close's cut-off are read.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import DateTime, String, Text, and_, cast, select, type_coerce
from sqlalchemy.orm import Session

from billing.calendar import Window
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
from connector.models import Activity, BillingLine, Event, User

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
    # True: only events effective from `start` (the fold starts from carried states).
    from_start: bool = False


def group_modules(session: Session, scope: Scope) -> dict[str, frozenset[str]]:
    """Every group's modules at the scope's end (groups are few: read them at once)."""
    rows = session.execute(
        select(Event.subject_id, Event.kind, Event.new_value, Event.effective_at, Event.id)
        .where(Event.tenant_id == scope.tenant_id, Event.subject_type == "group",
               Event.object_id.is_(None),  # ix_events_group_changes: not memberships
               Event.kind.in_(GROUP_KINDS), Event.effective_at < scope.end,
               Event.recorded_at <= scope.cutoff)
        .order_by(Event.effective_at, Event.id))
    return fold_group_modules(
        ((gid, Fact(at, seq, kind, value)) for gid, kind, value, at, seq in rows), scope.end)


def user_id_chunks(session: Session, tenant_id: str, size: int,
                   after: str = "") -> Iterator[list[str]]:
    """Every user id of the tenant (removed ones too), in id order, `size` at a time."""
    while True:
        ids = list(session.connection().execute(
            select(User.id).where(User.tenant_id == tenant_id, User.id > after)
            .order_by(User.id).limit(size)).scalars())
        if not ids:
            return
        yield ids
        after = ids[-1]


def ids_between(session: Session, tenant_id: str, low: str, high: str) -> list[str]:
    """The tenant's user ids from `low` to `high`, in order (one chunk)."""
    return list(session.connection().execute(select(User.id).where(
        User.tenant_id == tenant_id, User.id >= low, User.id <= high).order_by(User.id)
    ).scalars())


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
    # The hot path of a close (one row per event of the tenant): Core rows without the
    # ORM's per-row work, JSON decoded through a cache (most values are true, false or
    # a short module list), instants as the driver gives them (see `instant_type`).
    conn = session.connection()
    when = instant_type(conn.dialect.name)
    decode = json_decoder()
    by_user: dict[str, list[Fact]] = {}
    own = conn.execute(
        select(Event.subject_id, Event.kind, cast(Event.new_value, Text),
               type_coerce(Event.effective_at, when), Event.id)
        .where(Event.tenant_id == scope.tenant_id, Event.subject_type == "user",
               users(Event.subject_id), Event.kind.in_(USER_KINDS),
               *_effective(scope), Event.recorded_at <= scope.cutoff)
        .order_by(Event.subject_id, Event.effective_at, Event.id))
    current, facts = None, []
    for uid, kind, value, at, seq in own:
        if uid != current:
            current, facts = uid, by_user.setdefault(uid, [])
        facts.append(Fact(at, seq, kind, decode(value)))
    mixed: set[str] = set()
    memberships = conn.execute(
        select(Event.object_id, Event.subject_id, Event.kind,
               type_coerce(Event.effective_at, when), Event.id)
        .where(Event.tenant_id == scope.tenant_id, users(Event.object_id),
               Event.kind.in_(MEMBER_KINDS), *_effective(scope),
               Event.recorded_at <= scope.cutoff))
    for uid, group_id, kind, at, seq in memberships:
        by_user.setdefault(uid, []).append(Fact(at, seq, MEMBER_KINDS[kind], group_id))
        mixed.add(uid)
    if scope.with_activity:
        used = conn.execute(
            select(Activity.user_id, Activity.kind, type_coerce(Activity.occurred_at, when),
                   Activity.id)
            .where(Activity.tenant_id == scope.tenant_id, users(Activity.user_id),
                   Activity.kind.in_(COUNTED_ACTIVITY), Activity.occurred_at >= scope.start,
                   Activity.occurred_at < scope.end, Activity.recorded_at <= scope.cutoff))
        for uid, kind, at, seq in used:
            by_user.setdefault(uid, []).append(Fact(at, seq, ACTIVITY, kind))
            mixed.add(uid)
    for uid in mixed:
        by_user[uid].sort(key=fact_order)
    return by_user


def _effective(scope: Scope) -> tuple[Any, ...]:
    if scope.from_start:
        return (Event.effective_at >= scope.start, Event.effective_at < scope.end)
    return (Event.effective_at < scope.end,)


def carried_states(session: Session, close_id: int, ids: Sequence[str]) -> dict[str, str]:
    """The end-of-month states a close kept for users `ids` (one chunk: a range read)."""
    return dict(session.connection().execute(
        select(BillingLine.user_id, BillingLine.state).where(
            BillingLine.close_id == close_id, BillingLine.user_id >= ids[0],
            BillingLine.user_id <= ids[-1], BillingLine.state.is_not(None))).all())


def learned_late(session: Session, tenant_id: str, since: dt.datetime, cutoff: dt.datetime,
                 before: dt.datetime) -> set[str]:
    """Users with something recorded in (since, cutoff] that took effect before
    `before`: their carried state is stale, they are folded from scratch."""
    window = (Event.tenant_id == tenant_id, Event.recorded_at > since,
              Event.recorded_at <= cutoff, Event.effective_at < before)
    late = set(session.scalars(select(Event.subject_id).where(
        *window, Event.subject_type == "user", Event.kind.in_(USER_KINDS)).distinct()))
    late.update(session.scalars(select(Event.object_id).where(
        *window, Event.kind.in_(MEMBER_KINDS)).distinct()))
    return late


SQLITE_INSTANT = "%Y-%m-%d %H:%M:%S.%f"


def instant_type(dialect: str) -> Any:
    """How the fold's rows carry instants: SQLite's stored text as it is (its fixed
    format sorts and compares like the instants; parsing it cost more than the rest
    of the fold), PostgreSQL's timestamps as the driver decodes them."""
    return String() if dialect == "sqlite" else DateTime(timezone=True)


def comparable(dialect: str, window: Window) -> Window:
    """`window` with its instants in the form `instant_type` gives rows."""
    if dialect != "sqlite":
        return window

    def text(value: dt.datetime) -> Any:
        return value.astimezone(dt.UTC).strftime(SQLITE_INSTANT)

    return replace(window, start=text(window.start), end=text(window.end),
                   first_day_end=text(window.first_day_end))


_MISSING = object()


def json_decoder(limit: int = 50_000) -> Callable[[str | None], Any]:
    """json.loads with a bounded cache for short texts (values are never mutated)."""
    cache: dict[str, Any] = {}

    def decode(text: str | None) -> Any:
        if text is None:
            return None
        value = cache.get(text, _MISSING)
        if value is _MISSING:
            value = json.loads(text)
            if len(text) <= 96:
                if len(cache) >= limit:
                    cache.clear()
                cache[text] = value
        return value

    return decode
