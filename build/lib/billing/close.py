"""Close a tenant's month: fold every user's history, store the lines, total, invoice.

    plan_close ──> inputs (window, cut-off, policy, prices…; or NotDue with the reason)
    close_month ─> attempt row (building) ─> lines, chunk by chunk ─> flip to closed
                   └─ late events of earlier closed months ─> adjustment lines

Exactly once per (tenant, month, version): the flip from `building` to `closed` is
checked by a unique index, so two processes closing the same month both compute, one
wins, the other deletes its attempt and returns the winner's close. A crash leaves only
an attempt nobody reads; the next close starts over and, from the same inputs, gets the
same hash. A closed month never changes: a partner's reissue is a new version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import multiprocessing
import os
import queue
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from billing import carry as carry_codec
from billing import invoice as inv
from billing import reader
from billing.calendar import Month, Window
from billing.fold import Fact, fold_month
from billing.mail import enqueue_for
from billing.policies import POLICIES, Decision, Policy, decide_user
from billing.profiles import load_profile
from billing.snapshot import ENGINE_VERSION, ContentHash
from connector import db
from connector.config import BillingSettings, DatabaseSettings
from connector.models import (
    Activity,
    BillingAdjustment,
    BillingClose,
    BillingLine,
    Event,
    SyncRun,
    SyncState,
    Tenant,
    User,
)

SEP = "\x1f"
CHUNK_USERS = 5000  # users folded and written at a time
# Users per partition when one process folds them all: each partition scans the month's
# events once (billing.reader) and has the database sort them, so fewer partitions read
# less; worker processes get one partition each.
LOCAL_PARTITION_USERS = 500_000
STALE_ATTEMPT = dt.timedelta(hours=6)
Progress = Callable[[int, int], None]  # (users folded, of about this many)
Line = tuple[Decision, str, str]  # a user's decision, name and end-of-month state


class NotDue(Exception):
    """The month cannot be closed yet; the message says why and until when."""

    def __init__(self, message: str, retry_at: dt.datetime | None = None):
        super().__init__(message)
        self.retry_at = retry_at


@dataclass(frozen=True)
class CloseInputs:
    """Everything a close reads besides the logs: frozen into the close and its hash."""

    tenant_id: str
    month: Month
    window: Window
    cutoff: dt.datetime
    policy: Policy
    prices: Mapping[tuple[str, str], Decimal]
    trial_ends_on: dt.date | None
    non_profit: bool
    po_number: str
    info: Mapping[str, str]
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "engineVersion": ENGINE_VERSION, "tenantId": self.tenant_id,
            "month": str(self.month), "timeZone": self.window.tz,
            "windowStart": self.window.start.isoformat(),
            "windowEnd": self.window.end.isoformat(), "cutoff": self.cutoff.isoformat(),
            "policy": self.policy.name, "policyVersion": self.policy.version,
            "prices": inv.prices_as_json(self.prices),
            "trialEndsOn": self.trial_ends_on.isoformat() if self.trial_ends_on else None,
            "nonProfit": self.non_profit, "poNumber": self.po_number,
            "billingInfo": dict(self.info), "notes": list(self.notes)}

    def scope(self, cutoff: dt.datetime | None = None) -> reader.Scope:
        return reader.Scope(self.tenant_id, self.window.start, self.window.end,
                            cutoff or self.cutoff, self.policy.name == "monthly_active")


@dataclass
class Outcome:
    close: BillingClose
    created: bool  # False: the month was already closed (by this call's rival, or before)
    adjustments: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def plan_close(session: Session, tenant: Tenant, month: Month, settings: BillingSettings,
               now: dt.datetime, cutoff: dt.datetime | None = None) -> CloseInputs:
    """The inputs of closing `month` now, or NotDue saying why not yet."""
    window = month.window(tenant.time_zone)
    notes: list[str] = []
    if cutoff is None:
        cutoff = window.end + dt.timedelta(minutes=settings.grace_minutes)
        if now < cutoff:
            raise NotDue(f"{month} closes after its collection window, at "
                         f"{cutoff.isoformat()} ({settings.grace_minutes} minutes after "
                         "the month's end).", cutoff)
        if tenant.entra_sync:
            cutoff, note = _after_sync_round(session, tenant.id, window.end, cutoff, now)
            notes += [note] if note else []
    profile = load_profile(session, tenant.id)
    return CloseInputs(
        tenant.id, month, window, cutoff, POLICIES[profile.policy],
        inv.parse_prices(profile.prices), profile.trial_ends_on, profile.non_profit,
        profile.po_number, {"companyName": profile.company_name,
                            "referenceNumber": profile.reference_number,
                            "customerType": profile.customer_type,
                            "industry": profile.industry}, tuple(notes))


def _after_sync_round(session: Session, tenant_id: str, boundary: dt.datetime,
                      cutoff: dt.datetime, now: dt.datetime) -> tuple[dt.datetime, str]:
    """A tenant fed by Entra sync closes once a round that started after the boundary has
    completed (Graph pages carry no timestamps: a change is dated when a round sees it),
    or right away if its sync is quarantined, which the close records."""
    finished = session.scalar(
        select(SyncRun.finished_at).where(
            SyncRun.tenant_id == tenant_id, SyncRun.started_at >= boundary,
            SyncRun.status == "succeeded", SyncRun.kind.in_(("incremental", "full")))
        .order_by(SyncRun.started_at).limit(1))
    if finished is not None:
        return max(cutoff, finished), ""
    quarantined = session.scalar(select(SyncState.quarantined_until).where(
        SyncState.tenant_id == tenant_id))
    if quarantined is not None and quarantined > now:
        return cutoff, (f"Entra sync was quarantined at the close (until "
                        f"{quarantined.isoformat()}): changes it has not read are not in.")
    raise NotDue("Waiting for an Entra sync round that started after the month's end to "
                 "complete; it runs on the tenant's schedule, or start one with "
                 f"`connector sync run --tenant {tenant_id}`.")


def latest_close(session: Session, tenant_id: str, month: Month) -> BillingClose | None:
    return session.scalar(
        select(BillingClose).where(BillingClose.tenant_id == tenant_id,
                                   BillingClose.month == str(month),
                                   BillingClose.state == "closed"))


def close_month(maker: sessionmaker[Session], tenant_id: str, month: Month,
                settings: BillingSettings, now: dt.datetime, actor: str = "system",
                reissue_reason: str | None = None, progress: Progress | None = None,
                cutoff: dt.datetime | None = None) -> Outcome:
    """Close `month` for the tenant (idempotent), or reissue it with a reason."""
    with maker() as s:
        tenant = s.get(Tenant, tenant_id)
        if tenant is None:
            raise LookupError(f"No tenant {tenant_id}.")
        current = latest_close(s, tenant_id, month)
        if current is not None and reissue_reason is None:
            return Outcome(current, created=False)
        if current is None and reissue_reason is not None:
            raise NotDue(f"{month} is not closed yet: close it before reissuing it.")
        # A reissue recomputes from everything known now, under today's billing info.
        inputs = plan_close(s, tenant, month, settings, now,
                            cutoff=now if reissue_reason is not None else cutoff)
        version = current.version + 1 if current is not None else 1
        _drop_stale_attempts(s, tenant_id, month, now)
        attempt = BillingClose(
            tenant_id=tenant_id, month=str(month), version=version, state="building",
            started_at=now, closed_by=actor, reason=reissue_reason,
            window_start=inputs.window.start, window_end=inputs.window.end,
            cutoff=inputs.cutoff, event_high_water=_event_high_water(s, inputs),
            activity_high_water=_activity_high_water(s, inputs), inputs=inputs.as_json(),
            totals=[], invoice={}, report={})
        s.add(attempt)
        s.commit()
        attempt_id = attempt.id
    try:
        return _build(maker, attempt_id, inputs, settings, now, current, progress)
    except BaseException:
        with maker() as s:  # leave nothing half-built behind
            s.execute(delete(BillingClose).where(BillingClose.id == attempt_id,
                                                 BillingClose.state == "building"))
            s.commit()
        raise


def _drop_stale_attempts(s: Session, tenant_id: str, month: Month, now: dt.datetime) -> None:
    # Attempts of a process that died mid-close (a live rival's attempt is recent).
    s.execute(delete(BillingClose).where(
        BillingClose.tenant_id == tenant_id, BillingClose.month == str(month),
        BillingClose.state == "building", BillingClose.started_at < now - STALE_ATTEMPT))


def _event_high_water(s: Session, inputs: CloseInputs) -> int:
    return s.scalar(select(Event.id).where(
        Event.tenant_id == inputs.tenant_id, Event.recorded_at <= inputs.cutoff)
        .order_by(Event.recorded_at.desc(), Event.id.desc()).limit(1)) or 0


def _activity_high_water(s: Session, inputs: CloseInputs) -> int:
    return s.scalar(select(Activity.id).where(
        Activity.tenant_id == inputs.tenant_id, Activity.recorded_at <= inputs.cutoff)
        .order_by(Activity.recorded_at.desc(), Activity.id.desc()).limit(1)) or 0


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
    """With `carry` and the previous month closed under the same zone and engine, each user
    starts from the state that close kept, and only the month's events are read; users
    something late was learned about, or with no kept state, are folded from scratch.
    `learned`: the late events since a cut-off, when the caller has read them; `users`:
    the tenant's number of users, when the caller has counted them."""
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


def fold_partition(session: Session, plan: FoldPlan, low: str | None, high: str | None,
                   size: int | None = None, own: bool = False
                   ) -> Iterator[tuple[list[Line], int]]:
    """The decisions of the users with ids in [low, high) (None: open), `size` users at
    a time: (lines, users read). A line is the decision, the user's name as of the
    month's end and its state then (kept for the next close). Users with no account
    during the month have none. Reads sorted streams (billing.reader), in the caller's
    transaction (`own`: on a connection of their own, so the caller may write and commit
    meanwhile), and merges them user by user."""
    size = size or CHUNK_USERS
    with reader.streaming(session, own) as conn, _collecting_per_chunk():
        facts = reader.Aligned(reader.partition_facts(conn, plan.scope, low, high))
        batch: list[tuple[str, list[Fact] | None, str | None]] = []
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


# Chunks between collections of the young generations while a partition folds. Each
# collection walks what is still alive (the chunks queued for the closing process):
# 4-5 ms, and in a cold partition of 500,000 users it found nothing after the first.
COLLECT_EVERY = 20


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


def _fold_users(session: Session, plan: FoldPlan,
                batch: list[tuple[str, list[Fact] | None, str | None]]) -> list[Line]:
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
    """[low, high) id ranges of about `size` users each, covering every id."""
    bounds = reader.partition_bounds(session, tenant_id, size)
    if not bounds:
        return []
    return list(zip([None, *bounds[1:]], [*bounds[1:], None], strict=True))


def fold_tenant(session: Session, inputs: CloseInputs, progress: Progress | None = None,
                carry: bool = True) -> Iterator[list[Line]]:
    """Every user's decision for the month, a chunk at a time, in this process
    (previews, re-verification, small tenants)."""
    plan = plan_fold(session, inputs, carry)
    total = _user_count(session, inputs.tenant_id) if progress else 0
    done = 0
    for low, high in partitions(session, inputs.tenant_id, LOCAL_PARTITION_USERS):
        for lines, users in fold_partition(session, plan, low, high):
            yield lines
            done += users
            if progress:
                progress(done, total)


def _user_count(session: Session, tenant_id: str) -> int:
    return session.scalar(select(func.count()).select_from(User).where(
        User.tenant_id == tenant_id)) or 0


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


def _build(maker: sessionmaker[Session], attempt_id: int, inputs: CloseInputs,
           settings: BillingSettings, now: dt.datetime, replaced: BillingClose | None,
           progress: Progress | None) -> Outcome:
    lines = LineTally()
    with maker() as s:
        attempt = s.get(BillingClose, attempt_id)
        assert attempt is not None
        digest = snapshot_digest(inputs, attempt)
        # What was learned late since the last close (of the month before): read once,
        # for the users folded from scratch and for the adjustments of closed months.
        earlier = _closed_before(s, inputs)
        learned = None
        if earlier:
            since = earlier[0].cutoff
            learned = (since, reader.late_events(s, inputs.tenant_id, since, inputs.cutoff,
                                                 inputs.window.start))
        total = _user_count(s, inputs.tenant_id)
        plan = plan_fold(s, inputs, learned=learned, users=total)
        workers = _workers(settings, total)
        # One partition per worker: each scans the month's events once.
        size = -(-total // workers) if workers > 1 else LOCAL_PARTITION_USERS
        parts = partitions(s, inputs.tenant_id, max(size, 1))
        s.commit()
        if workers > 1:
            _fold_in_processes(s, plan, attempt_id, parts, workers, lines, total, progress)
        else:
            for low, high in parts:
                for chunk, users in fold_partition(s, plan, low, high, own=True):
                    _insert_lines(s, [_line_row(attempt_id, *line) for line in chunk])
                    s.commit()
                    lines.add(tally(chunk))
                    if progress:
                        progress(lines.folded(users), total)
        totals, counted, billable = lines.totals, lines.counted, lines.billable
        digest.add_text(lines.digest())
        adjustments, adjustment_lines, report = _late_adjustments(
            s, inputs, settings, attempt_id, now, earlier, learned[1] if learned else [])
        month_invoice = inv.make_invoice(totals, inputs.prices, inputs.non_profit,
                                         inputs.po_number, adjustment_lines)
        totals_json = totals_as_json(totals)
        digest.add(totals_json)
        try:
            # The unique index on (tenant, month, version) over closed rows decides
            # which of two concurrent closes of a month stands.
            if replaced is not None:  # a reissue: the old version stays readable
                s.execute(update(BillingClose).where(BillingClose.id == replaced.id)
                          .values(state="superseded"))
            s.execute(update(BillingClose).where(BillingClose.id == attempt_id).values(
                state="closed", closed_at=now, content_hash=digest.hexdigest(),
                users_counted=counted, users_billable=billable, totals=totals_json,
                invoice=month_invoice.as_json(), report=report))
            if adjustments:
                s.execute(BillingAdjustment.__table__.insert(), adjustments)
            # The monthly e-mail report (billing/mail.py), queued with the flip: sent
            # later by the scheduler, so SMTP never holds up or fails a close.
            enqueue_for(s, settings, attempt_id, now)
            s.commit()
        except IntegrityError:
            s.rollback()
            winner = latest_close(s, inputs.tenant_id, inputs.month)
            s.execute(delete(BillingClose).where(BillingClose.id == attempt_id))
            s.commit()
            if winner is None:
                raise
            return Outcome(winner, created=False)
        closed = s.get(BillingClose, attempt_id)
        assert closed is not None
        return Outcome(closed, True, len(adjustments),
                       {"users": counted, "billable": billable})


def snapshot_digest(inputs: CloseInputs, close: BillingClose) -> ContentHash:
    """The hash of a month's snapshot, fed its inputs; lines and totals follow."""
    digest = ContentHash()
    digest.add(inputs.as_json())
    digest.add({"events": close.event_high_water, "activity": close.activity_high_water})
    return digest


def line_hash(decision: Decision, user_name: str) -> int:
    """One line's SHA-256 as a number. A close's lines are hashed as the sum of these
    modulo 2**256 (an incremental multiset hash, AdHash): independent of the order chunks
    finish in, so worker processes can fold chunks side by side. Fields in a fixed
    order, tab-separated, cheaper than JSON a million times over."""
    text = "\t".join((decision.user_id, user_name, "1" if decision.billable else "0",
                      decision.reason, decision.plan, decision.audience,
                      SEP.join(decision.modules), SEP.join(decision.units)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")


class LineTally:
    """Totals, counts and the lines' hash of a close, added up chunk by chunk."""

    MODULUS = 1 << 256

    def __init__(self) -> None:
        self.totals: Counter[inv.Key] = Counter()
        self.counted = self.billable = self.sum = self.done = 0

    def add(self, part: tuple[dict[inv.Key, int], int, int, int]) -> None:
        totals, counted, billable, line_sum = part
        self.totals.update(totals)
        self.counted += counted
        self.billable += billable
        self.sum = (self.sum + line_sum) % self.MODULUS

    def folded(self, users: int) -> int:
        self.done += users
        return self.done

    def digest(self) -> str:
        return f"lines:{self.counted}:{self.sum:064x}"


def tally(chunk: list[tuple[Decision, str, str]]) -> tuple[dict[inv.Key, int], int, int, int]:
    totals = inv.count(decision for decision, _, _ in chunk)
    line_sum = sum(line_hash(decision, name) for decision, name, _ in chunk) % LineTally.MODULUS
    return dict(totals), len(chunk), sum(d.billable for d, _, _ in chunk), line_sum


# -- folding in worker processes ------------------------------------------------------

PARALLEL_FROM_USERS = 50_000  # below this, starting processes costs more than it saves
_WORKER: dict[str, Any] = {}


def _workers(settings: BillingSettings, users: int) -> int:
    if settings.close_workers == 1 or users < PARALLEL_FROM_USERS:
        return 1
    return settings.close_workers or min(os.cpu_count() or 1, 4)


def _worker_start(url: str, out: Any, stop: Any) -> None:
    engine = db.make_engine(DatabaseSettings(url=url, pool_size=1))
    _WORKER.update(maker=db.make_sessionmaker(engine), out=out, stop=stop)


def _worker_partition(plan: FoldPlan, close_id: int, index: int, low: str | None,
                      high: str | None) -> None:
    """Fold one partition in one transaction and send the closing process each chunk's
    tally. On SQLite the lines go with it and that process writes them, so the workers
    never queue on SQLite's single writer lock. On PostgreSQL the worker writes them
    itself (COPY, in the transaction that reads the partition, committed at its end):
    handing a million lines to one process cost more than writing them. The last
    message is always (index, None), whether the partition finished or failed."""
    out, stop = _WORKER["out"], _WORKER["stop"]
    try:
        if stop.is_set():
            return
        with _WORKER["maker"]() as s:
            writes = s.get_bind().dialect.name == "postgresql"
            for chunk, users in fold_partition(s, plan, low, high):
                if stop.is_set():
                    return
                rows = [_line_row(close_id, *line) for line in chunk]
                if writes:
                    _insert_lines(s, rows)
                    rows = []
                out.put((index, (rows, tally(chunk), users)))
            s.commit()
    finally:
        out.put((index, None))


def _fold_in_processes(s: Session, plan: FoldPlan, close_id: int,
                       parts: list[tuple[str | None, str | None]], workers: int,
                       lines: LineTally, total: int, progress: Progress | None) -> None:
    """Fold the partitions in `workers` processes (spawned: nothing of this process,
    its threads or its connections, is inherited), one each; the lines are written
    under the attempt (here on SQLite, by the workers on PostgreSQL) and this process
    flips the attempt afterwards, as always. The queue between them holds a few
    chunks, so memory stays bounded: a worker waits while this process writes."""
    url = s.get_bind().url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    out, stop = context.Queue(maxsize=workers * 2), context.Event()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                             initargs=(url, out, stop)) as pool:
        futures = [pool.submit(_worker_partition, plan, close_id, i, low, high)
                   for i, (low, high) in enumerate(parts)]
        try:
            finished = 0
            while finished < len(futures):
                try:
                    index, message = out.get(timeout=1)
                except queue.Empty:
                    for future in futures:  # a worker that died sends nothing more
                        if future.done() and not future.cancelled():
                            future.result()
                    continue
                if message is None:
                    finished += 1
                    futures[index].result()  # a failed partition fails the close
                    continue
                rows, part, users = message
                if rows:
                    _insert_lines(s, rows)
                    s.commit()
                lines.add(part)
                if progress:
                    progress(lines.folded(users), total)
        except BaseException:
            stop.set()  # workers stop at their next chunk; unblock any waiting to put
            for future in futures:
                future.cancel()  # those not started yet
            while not all(f.done() for f in futures):
                with contextlib.suppress(queue.Empty):
                    out.get(timeout=0.1)
            raise


def totals_as_json(totals: Mapping[inv.Key, int]) -> list[dict[str, Any]]:
    return [{"unit": u, "audience": a, "plan": p, "count": n}
            for (u, a, p), n in sorted(totals.items())]


def recompute_hash(session: Session, close: BillingClose, carry: bool = False) -> str:
    """Fold the closed month again from its frozen inputs (from the beginning of the
    log, unless `carry`): the hash it had, if nothing it was computed from changed."""
    inputs = inputs_of(close)
    digest = snapshot_digest(inputs, close)
    lines = LineTally()
    for chunk in fold_tenant(session, inputs, carry=carry):
        lines.add(tally(chunk))
    digest.add_text(lines.digest())
    digest.add(totals_as_json(lines.totals))
    return digest.hexdigest()


def _line_row(close_id: int, d: Decision, user_name: str, state: str) -> tuple[Any, ...]:
    """A line's column values in the order `_INSERT_LINE` names them (tuples: a million
    of them pass from the workers to the closing process)."""
    return (close_id, d.user_id, user_name, d.billable, d.reason, d.plan, d.audience,
            SEP.join(d.modules), SEP.join(d.units), state)


_INSERT_LINE = ("INSERT INTO billing_lines (close_id, user_id, user_name, billable, reason, "
                "plan, audience, modules, units, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_COPY_LINES = ("COPY billing_lines (close_id, user_id, user_name, billable, reason, plan, "
               "audience, modules, units, state) FROM STDIN")


def _insert_lines(s: Session, rows: list[tuple[Any, ...]]) -> None:
    """A chunk of lines, straight to the driver (no column here needs SQLAlchemy's
    parameter processing): COPY on PostgreSQL, executemany on SQLite."""
    raw = s.connection().connection.driver_connection
    if s.get_bind().dialect.name == "postgresql":
        with raw.cursor() as cursor, cursor.copy(_COPY_LINES) as copy:
            for row in rows:
                copy.write_row(row)
        return
    cursor = raw.cursor()
    cursor.executemany(_INSERT_LINE, rows)
    cursor.close()


def line_decision(line: BillingLine) -> Decision:
    return Decision(line.user_id, line.billable, line.reason, line.plan, line.audience,
                    tuple(filter(None, line.modules.split(SEP))),
                    tuple(filter(None, line.units.split(SEP))))


# -- late events ------------------------------------------------------------------


def _closed_before(s: Session, inputs: CloseInputs) -> list[BillingClose]:
    """The tenant's closed months before this one, latest first."""
    return list(s.scalars(
        select(BillingClose).where(BillingClose.tenant_id == inputs.tenant_id,
                                   BillingClose.state == "closed",
                                   BillingClose.month < str(inputs.month))
        .order_by(BillingClose.month.desc())))


def _late_adjustments(s: Session, inputs: CloseInputs, settings: BillingSettings,
                      close_id: int, now: dt.datetime, earlier: list[BillingClose],
                      learned: list[reader.LateEvent]
                      ) -> tuple[list[dict[str, Any]], list[inv.Line], dict[str, Any]]:
    """Adjustment lines for what was learned, since they closed, about the last
    `adjustment_months` closed months before this one; older months' late events are
    only reported.

    `learned` holds what was recorded since the last close (`earlier[0]`): whatever
    came before it, that close (and those before it) already adjusted or reported, and
    a month never comes back into the look-back once it left it."""
    rows: list[dict[str, Any]] = []
    lines: list[inv.Line] = []
    report: dict[str, Any] = {"notes": list(inputs.notes), "lateUnadjusted": [],
                              "lateUnadjustedUsers": 0}
    since = earlier[0].cutoff if earlier else None
    for index, past in enumerate(earlier):
        late = _late_users(s, past, inputs.cutoff, since, learned)
        if not late:
            continue
        if index >= settings.adjustment_months:
            report["lateUnadjustedUsers"] += len(late)
            room = 100 - len(report["lateUnadjusted"])
            for uid, kinds in sorted(late.items())[:max(room, 0)]:
                report["lateUnadjusted"].append({"month": past.month, "userId": uid,
                                                 "kinds": sorted(kinds)})
            continue
        month_rows, month_lines = _correct_month(s, past, late, inputs.cutoff, close_id, now)
        rows += month_rows
        lines += month_lines
    return rows, lines, report


def _late_users(s: Session, past: BillingClose, cutoff: dt.datetime,
                since: dt.datetime | None, learned: list[reader.LateEvent]
                ) -> dict[str, set[str]]:
    """Users with something recorded after `past` closed (its cut-off) and since the
    last close, before this close's cut-off, that happened before `past` ended: what
    they are, per user."""
    late: dict[str, set[str]] = {}
    group_changed = False
    for event in learned:
        if event.recorded_at <= past.cutoff or event.effective_at >= past.window_end:
            continue
        if event.user_id is None:
            group_changed = True
        else:
            late.setdefault(event.user_id, set()).add(event.kind)
    if group_changed:
        # A group's modules changed late: every member of the month may be affected.
        for uid in s.scalars(select(BillingLine.user_id).where(
                BillingLine.close_id == past.id)):
            late.setdefault(uid, set()).add("group.modules")
    if past.inputs.get("policy") == "monthly_active":
        after = max(past.cutoff, since) if since is not None else past.cutoff
        for (uid,) in s.execute(select(Activity.user_id).where(
                Activity.tenant_id == past.tenant_id, Activity.recorded_at > after,
                Activity.recorded_at <= cutoff, Activity.occurred_at >= past.window_start,
                Activity.occurred_at < past.window_end).distinct()):
            late.setdefault(uid, set()).add("activity")
    return late


def _correct_month(s: Session, past: BillingClose, late: Mapping[str, set[str]],
                   cutoff: dt.datetime, close_id: int, now: dt.datetime
                   ) -> tuple[list[dict[str, Any]], list[inv.Line]]:
    """Refold `past` for the late users with what is known now; where that bills
    differently from what was billed so far, a reversal and the corrected line, and
    their invoice lines at that month's prices."""
    inputs = inputs_of(past)
    scope = inputs.scope(cutoff)
    groups = reader.group_modules(s, scope)
    ids = sorted(late)
    facts = reader.facts_of(s, scope, ids)
    billed = _billed_so_far(s, past, ids, now)
    rows = []
    quantities: Counter[inv.Key] = Counter()
    first_day = inputs.month.first_day()
    window = reader.comparable(s.get_bind().dialect.name, inputs.window)
    for uid in ids:
        month = fold_month(uid, facts.get(uid, []), window, groups)
        corrected = decide_user(inputs.policy, month, first_day, inputs.trial_ends_on)
        before, name = billed.get(uid, (None, month.end.user_name))
        reason = (f"late: {', '.join(sorted(late[uid]))} recorded after {past.month} closed")
        for adj in inv.adjustments_for(past.month, before, corrected, reason):
            amount = Decimal("0.00")
            for unit in adj.units:
                key = (unit, adj.audience, adj.plan)
                quantities[key] += adj.sign
                amount += inv.price_line(key, adj.sign, inputs.prices, inputs.non_profit).amount
            rows.append({"close_id": close_id, "tenant_id": past.tenant_id,
                         "month": past.month, "user_id": uid,
                         "user_name": name or month.end.user_name, "sign": adj.sign,
                         "units": SEP.join(adj.units), "audience": adj.audience,
                         "plan": adj.plan, "reason": adj.reason, "amount": str(amount)})
    lines = []
    for key, quantity in sorted(quantities.items()):
        if quantity:
            line = inv.price_line(key, quantity, inputs.prices, inputs.non_profit, past.month)
            lines.append(inv.Line(f"Adjustment {past.month}: {line.description}", line.unit,
                                  line.audience, line.plan, quantity, line.unit_price,
                                  line.amount, line.priced, past.month))
    return rows, lines


def _billed_so_far(s: Session, past: BillingClose, ids: list[str], now: dt.datetime
                   ) -> dict[str, tuple[Decision | None, str]]:
    """What each user is billed for `past` now: its line, or the latest adjustment a
    close after it issued (a +1 line, or nothing after a lone reversal)."""
    billed: dict[str, tuple[Decision | None, str]] = {}
    issued_after = select(BillingClose.id).where(
        BillingClose.tenant_id == past.tenant_id, BillingClose.state != "building",
        BillingClose.closed_at > past.closed_at, BillingClose.closed_at <= now)
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        for line in s.scalars(select(BillingLine).where(BillingLine.close_id == past.id,
                                                        BillingLine.user_id.in_(part))):
            billed[line.user_id] = (line_decision(line), line.user_name)
        for adj in s.scalars(select(BillingAdjustment).where(
                BillingAdjustment.tenant_id == past.tenant_id,
                BillingAdjustment.month == past.month, BillingAdjustment.user_id.in_(part),
                BillingAdjustment.close_id.in_(issued_after))
                .order_by(BillingAdjustment.id)):
            units = tuple(filter(None, adj.units.split(SEP)))
            billed[adj.user_id] = (
                Decision(adj.user_id, True, "adjusted", adj.plan, adj.audience, units, units)
                if adj.sign > 0 else None, adj.user_name)
    return billed


def inputs_of(close: BillingClose) -> CloseInputs:
    """The inputs a close froze, to refold its month exactly as it was closed."""
    data = close.inputs
    month = Month.parse(data["month"])
    window = month.window(data["timeZone"])
    trial = data.get("trialEndsOn")
    return CloseInputs(
        close.tenant_id, month, window, close.cutoff, POLICIES[data["policy"]],
        inv.parse_prices(data.get("prices", [])),
        dt.date.fromisoformat(trial) if trial else None, bool(data.get("nonProfit")),
        data.get("poNumber", ""), data.get("billingInfo", {}), tuple(data.get("notes", ())))


# -- catch-up and preview ------------------------------------------------------------


def first_month(tenant: Tenant) -> Month:
    """The first month a tenant can be billed for: the one it was created in."""
    return Month.containing(tenant.created_at, tenant.time_zone)


def due_months(session: Session, tenant: Tenant, settings: BillingSettings,
               now: dt.datetime) -> list[Month]:
    """Months of the tenant whose collection window is over and that are not closed, in
    order: after downtime, every missed month."""
    closed = set(session.scalars(select(BillingClose.month).where(
        BillingClose.tenant_id == tenant.id, BillingClose.state == "closed")))
    grace = dt.timedelta(minutes=settings.grace_minutes)
    months, month = [], first_month(tenant)
    while month.end(tenant.time_zone) + grace <= now:
        if str(month) not in closed:
            months.append(month)
        month = month.next()
    return months


@dataclass
class DueResult:
    closed: list[tuple[str, str, Outcome]] = field(default_factory=list)
    waiting: list[tuple[str, str, str]] = field(default_factory=list)  # tenant, month, why
    failed: list[tuple[str, str, str]] = field(default_factory=list)


def close_due(maker: sessionmaker[Session], settings: BillingSettings, now: dt.datetime,
              tenant_ids: list[str] | None = None, actor: str = "scheduler",
              progress: Callable[[str, str, int, int], None] | None = None) -> DueResult:
    """Close every due month of every tenant, oldest first; a tenant's later months wait
    while an earlier one is not due (its Entra round is pending), so months always close
    in order and adjustments land where an on-time close would have put them."""
    result = DueResult()
    with maker() as s:
        tenants = [t for t in s.scalars(select(Tenant).order_by(Tenant.created_at, Tenant.id))
                   if tenant_ids is None or t.id in tenant_ids]
        plan: list[tuple[str, list[Month]]] = []
        for tenant in tenants:
            try:
                plan.append((tenant.id, due_months(s, tenant, settings, now)))
            except Exception as exc:  # noqa: BLE001 - e.g. a zone the system lacks
                result.failed.append((tenant.id, "", f"{type(exc).__name__}: {exc}"))
    for tenant_id, months in plan:
        for month in months:
            report = (lambda done, total, t=tenant_id, m=str(month):
                      progress(t, m, done, total)) if progress else None
            try:
                outcome = close_month(maker, tenant_id, month, settings, now, actor,
                                      progress=report)
            except NotDue as exc:
                result.waiting.append((tenant_id, str(month), str(exc)))
                break
            except Exception as exc:  # noqa: BLE001 - one tenant's failure stops only it
                result.failed.append((tenant_id, str(month), f"{type(exc).__name__}: {exc}"))
                break
            result.closed.append((tenant_id, str(month), outcome))
    return result


def preview(session: Session, tenant: Tenant, now: dt.datetime) -> dict[str, Any]:
    """The running month so far, as if it ended now: counts, totals, an invoice estimate.
    Not stored."""
    month = Month.containing(now, tenant.time_zone)
    inputs = plan_close(session, tenant, month, BillingSettings(), now, cutoff=now)
    totals: Counter[inv.Key] = Counter()
    counted = billable = 0
    reasons: Counter[str] = Counter()
    for chunk in fold_tenant(session, inputs):
        for decision, _, _ in chunk:
            inv.count([decision], totals)
            counted += 1
            billable += decision.billable
            reasons[decision.reason] += 1
    estimate = inv.make_invoice(totals, inputs.prices, inputs.non_profit, inputs.po_number)
    return {"tenantId": tenant.id, "month": str(month), "asOf": now.isoformat(),
            "policy": inputs.policy.name, "usersCounted": counted, "usersBillable": billable,
            "reasons": dict(sorted(reasons.items())), "totals": totals_as_json(totals),
            "invoice": estimate.as_json()}
