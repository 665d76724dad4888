"""Fold every user of a tenant over a month, partition by partition, chunk by chunk.

    plan_fold ──> FoldPlan (scopes, groups' modules, the close to carry states from,
                            the users something late was learned about)
    partitions ─> [low, high) user id ranges
    fold_partition(plan, low, high) ──> chunks of lines (decision, name, kept state)
    fold_tenant ─> every chunk, in this process (previews, re-verification)

A partition merges sorted streams (billing.reader) user by user; billing.fold folds one
user. The close writes the chunks (billing.close), in this process or in worker
processes (billing.workers), which get the picklable FoldPlan.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing import carry as carry_codec
from billing import reader
from billing.fold import Fact, fold_month
from billing.lines import Line
from billing.planning import CloseInputs, latest_close
from billing.policies import decide_user
from billing.snapshot import ENGINE_VERSION
from connector.models import BillingClose, User

CHUNK_USERS = 5000  # users folded and written at a time
# Users per partition when one process folds them all: each partition scans the month's
# events once (billing.reader) and has the database sort them, so fewer partitions read
# less; worker processes get one partition each.
LOCAL_PARTITION_USERS = 500_000
# Chunks between collections of the young generations while a partition folds. Each
# collection walks what is still alive (the chunks queued for the closing process) and,
# in a cold partition, found nothing after the first (docs/benchmarks.md, "Measurements
# behind the code").
COLLECT_EVERY = 20
Progress = Callable[[int, int], None]  # (users folded, of about this many)
Batch = list[tuple[str, list[Fact] | None, str | None]]  # (user, facts, kept state)


@dataclass(frozen=True)
class FoldPlan:
    """What every chunk of a tenant's fold shares (picklable: worker processes get it)."""

    inputs: CloseInputs
    scope: reader.Scope  # the rows a chunk reads (from the month's start, when carried)
    full_scope: reader.Scope  # a user's whole history
    groups: Mapping[str, frozenset[str]]  # every group's modules at the month's end
    previous_id: int | None  # the close whose kept states this one starts from
    late: frozenset[str]  # users whose kept state is stale: folded from scratch


def plan_fold(session: Session, inputs: CloseInputs, carry: bool = True,
              learned: tuple[dt.datetime, list[reader.LateEvent]] | None = None,
              users: int | None = None) -> FoldPlan:
    """Plan a tenant's fold. With `carry` and the previous month closed under the same
    zone and engine, each user starts from the state that close kept, and only the
    month's events are read; users something late was learned about, or with no kept
    state, are folded from scratch. `learned`: the late events since a cut-off, when the
    caller has read them; `users`: the tenant's number of users, when the caller has
    counted them."""
    scope = inputs.scope()
    previous = _carry_source(session, inputs) if carry else None
    late: set[str] = set()
    if previous is not None:
        if learned is None or learned[0] != previous.cutoff:
            learned = (previous.cutoff, reader.late_events(
                session, inputs.tenant_id, previous.cutoff, inputs.cutoff, inputs.window.start))
        late = {e.user_id for e in learned[1] if e.user_id is not None}
    if previous is None:
        scope = replace(scope, scan_table=reader.table_scan_pays(session, inputs.tenant_id,
                                                                 users))
    return FoldPlan(inputs, replace(scope, from_start=previous is not None), scope,
                    reader.group_modules(session, scope),
                    previous.id if previous is not None else None, frozenset(late))


def _carry_source(session: Session, inputs: CloseInputs) -> BillingClose | None:
    """The previous month's close, if its kept states can start this one: same engine,
    its end is this month's start (no zone change), and it knew no more than this close
    may (a reissue after this month's cut-off did)."""
    previous = latest_close(session, inputs.tenant_id, inputs.month.previous())
    if previous is None or previous.inputs.get("engineVersion") != ENGINE_VERSION:
        return None
    if previous.window_end != inputs.window.start or previous.cutoff > inputs.cutoff:
        return None
    return previous


def fold_partition(session: Session, plan: FoldPlan, low: str | None, high: str | None,
                   size: int | None = None, own: bool = False
                   ) -> Iterator[tuple[list[Line], int]]:
    """Yield the decisions of the users with ids in [low, high) (None: open), `size`
    users at a time: (lines, users read). A line is the decision, the user's name as of
    the month's end and its state then (kept for the next close). Users with no account
    during the month have none. Reads sorted streams (billing.reader), in the caller's
    transaction (`own`: on a connection of their own, so the caller may write and commit
    meanwhile), and merges them user by user."""
    size = size or CHUNK_USERS
    with reader.streaming(session, own) as conn, _collecting_per_chunk():
        facts = reader.Aligned(reader.partition_facts(conn, plan.scope, low, high))
        batch: Batch = []
        chunks = 0
        for uid, kept in reader.partition_users(conn, plan.inputs.tenant_id, low, high,
                                                plan.previous_id):
            batch.append((uid, facts.take(uid), kept))
            if len(batch) >= size:
                yield _fold_users(session, plan, batch), len(batch)
                batch = []
                chunks += 1
                if chunks % COLLECT_EVERY == 0:
                    gc.collect(1)
        if batch:
            yield _fold_users(session, plan, batch), len(batch)


@contextlib.contextmanager
def _collecting_per_chunk() -> Iterator[None]:
    """Python's cyclic garbage collector off while a partition folds; the caller
    collects the young generations every `COLLECT_EVERY` chunks instead. A partition
    allocates tens of millions of short-lived objects (facts, values), none of them in
    a cycle, and the collector ran on every 700th: 17 % of a cold close's time. Memory
    stays bounded: everything a chunk made is freed by reference counting when the
    next begins, and anything in a cycle by the periodic collection."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fold_users(session: Session, plan: FoldPlan, batch: Batch) -> list[Line]:
    inputs = plan.inputs
    carried = plan.previous_id is not None
    # Folded from scratch, from the whole log: users something late was learned about
    # (their kept state is stale) and users with facts but no kept state.
    scratch = {uid for uid, found, kept in batch
               if carried and (uid in plan.late or (found is not None and kept is None))}
    whole = reader.facts_of(session, plan.full_scope, sorted(scratch)) if scratch else {}
    window = reader.comparable(session.get_bind().dialect.name, inputs.window)
    first_day = inputs.month.first_day()
    lines = []
    for uid, found, kept in batch:
        if uid in scratch:
            found, kept = whole.get(uid), None
        state = carry_codec.decode(kept) if kept is not None else None
        if state is None and found is None:
            continue
        month = fold_month(uid, found or (), window, plan.groups, state)
        decision = decide_user(inputs.policy, month, first_day, inputs.trial_ends_on)
        if decision is not None:
            # Nothing happened to the user this month: its state is the kept one.
            end = kept if kept is not None and found is None else carry_codec.encode(
                month.end)
            lines.append((decision, month.end.user_name, end))
    return lines


def partitions(session: Session, tenant_id: str, size: int
               ) -> list[tuple[str | None, str | None]]:
    """Return [low, high) id ranges of about `size` users each, covering every id."""
    bounds = reader.partition_bounds(session, tenant_id, size)
    if not bounds:
        return []
    return list(zip([None, *bounds[1:]], [*bounds[1:], None], strict=True))


def partitions_for(session: Session, tenant_id: str, users: int, processes: int
                   ) -> list[tuple[str | None, str | None]]:
    """Return the partitions of a close's fold: one per worker process (each scans the
    month's events once), or `LOCAL_PARTITION_USERS` users each in this one."""
    size = -(-users // processes) if processes > 1 else LOCAL_PARTITION_USERS
    if users <= size:  # one partition, open at both ends: no bounds to look up (the
        return [(None, None)] if users else []  # fleet's many small tenants save 2 reads)
    return partitions(session, tenant_id, max(size, 1))


def fold_tenant(session: Session, inputs: CloseInputs, progress: Progress | None = None,
                carry: bool = True) -> Iterator[list[Line]]:
    """Yield every user's decision for the month, a chunk at a time, in this process
    (previews, re-verification, small tenants)."""
    plan = plan_fold(session, inputs, carry)
    total = user_count(session, inputs.tenant_id) if progress else 0
    done = 0
    for low, high in partitions(session, inputs.tenant_id, LOCAL_PARTITION_USERS):
        for lines, users in fold_partition(session, plan, low, high):
            yield lines
            done += users
            if progress:
                progress(done, total)


def user_count(session: Session, tenant_id: str) -> int:
    """Return how many rows the tenant has in the users table (what progress counts to
    and the worker processes share)."""
    return session.scalar(select(func.count()).select_from(User).where(
        User.tenant_id == tenant_id)) or 0
