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

import datetime as dt
import hashlib
import itertools
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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
from billing.fold import fold_month
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
CHUNK_USERS = 5000
STALE_ATTEMPT = dt.timedelta(hours=6)
Progress = Callable[[int, int], None]  # (users folded, of about this many)


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


def plan_fold(session: Session, inputs: CloseInputs, carry: bool = True) -> FoldPlan:
    """With `carry` and the previous month closed under the same zone and engine, each user
    starts from the state that close kept, and only the month's events are read; users
    something late was learned about, or with no kept state, are folded from scratch."""
    scope = inputs.scope()
    previous = _carry_source(session, inputs) if carry else None
    late: set[str] = set()
    if previous is not None:
        late = reader.learned_late(session, inputs.tenant_id, previous.cutoff, inputs.cutoff,
                                   inputs.window.start)
    return FoldPlan(inputs, replace(scope, from_start=previous is not None), scope,
                    reader.group_modules(session, scope),
                    previous.id if previous is not None else None, frozenset(late))


def fold_chunk(session: Session, plan: FoldPlan, ids: list[str]
               ) -> list[tuple[Decision, str, str]]:
    """The decisions of users `ids` (consecutive ids, sorted), each with the user's name
    as of the month's end and its state then (kept for the next close). Users with no
    account during the month have none."""
    inputs = plan.inputs
    facts = reader.facts_by_user(session, plan.scope, ids)
    states: dict[str, str] = {}
    if plan.previous_id is not None:
        states = reader.carried_states(session, plan.previous_id, ids)
        scratch = [u for u in ids if u in plan.late or (u in facts and u not in states)]
        facts.update(reader.facts_of(session, plan.full_scope, scratch))
        for uid in scratch:
            states.pop(uid, None)
    window = reader.comparable(session.get_bind().dialect.name, inputs.window)
    first_day = inputs.month.first_day()
    chunk = []
    for uid in ids:
        kept = states.get(uid)
        state = carry_codec.decode(kept) if kept is not None else None
        if state is None and uid not in facts:
            continue
        month = fold_month(uid, facts.get(uid, ()), window, plan.groups, state)
        decision = decide_user(inputs.policy, month, first_day, inputs.trial_ends_on)
        if decision is not None:
            # Nothing happened to the user this month: its state is the kept one.
            end = kept if kept is not None and uid not in facts else carry_codec.encode(
                month.end)
            chunk.append((decision, month.end.user_name, end))
    return chunk


def fold_tenant(session: Session, inputs: CloseInputs, progress: Progress | None = None,
                carry: bool = True) -> Iterator[list[tuple[Decision, str, str]]]:
    """Every user's decision for the month, a chunk at a time, in user id order, in this
    process (previews, re-verification, small tenants)."""
    plan = plan_fold(session, inputs, carry)
    total = _user_count(session, inputs.tenant_id) if progress else 0
    done = 0
    for ids in reader.user_id_chunks(session, inputs.tenant_id, CHUNK_USERS):
        yield fold_chunk(session, plan, ids)
        done += len(ids)
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
        plan = plan_fold(s, inputs)
        total = _user_count(s, inputs.tenant_id)
        ranges = _id_ranges(s, inputs.tenant_id)
        workers = _workers(settings, total)
        s.commit()
        if workers > 1:
            _fold_in_processes(s, plan, attempt_id, ranges, workers, lines, total, progress)
        else:
            for low, high in ranges:
                ids = reader.ids_between(s, inputs.tenant_id, low, high)
                lines.add(_write_chunk(s, attempt_id, fold_chunk(s, plan, ids)))
                s.commit()
                if progress:
                    progress(lines.folded(len(ids)), total)
        totals, counted, billable = lines.totals, lines.counted, lines.billable
        digest.add_text(lines.digest())
        adjustments, adjustment_lines, report = _late_adjustments(s, inputs, settings,
                                                                  attempt_id, now)
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


def _write_chunk(s: Session, close_id: int, chunk: list[tuple[Decision, str, str]]
                 ) -> tuple[dict[inv.Key, int], int, int, int]:
    _insert_lines(s, [_line_row(close_id, d, name, state) for d, name, state in chunk])
    return tally(chunk)


# -- folding in worker processes ------------------------------------------------------

PARALLEL_FROM_USERS = 50_000  # below this, starting processes costs more than it saves
_WORKER: dict[str, Any] = {}


def _workers(settings: BillingSettings, users: int) -> int:
    if settings.close_workers == 1 or users < PARALLEL_FROM_USERS:
        return 1
    return settings.close_workers or min(os.cpu_count() or 1, 4)


def _id_ranges(s: Session, tenant_id: str) -> list[tuple[str, str]]:
    """(first, last) user id of each chunk: the chunks are fixed by the ids, so whatever
    process folds a chunk reads exactly its users."""
    return [(ids[0], ids[-1]) for ids in reader.user_id_chunks(s, tenant_id, CHUNK_USERS)]


def _worker_start(url: str) -> None:
    engine = db.make_engine(DatabaseSettings(url=url, pool_size=1))
    _WORKER["maker"] = db.make_sessionmaker(engine, autocommit=True)


def _worker_chunk(plan: FoldPlan, close_id: int, low: str, high: str
                  ) -> tuple[list[dict[str, Any]], tuple[dict[inv.Key, int], int, int, int],
                             int]:
    """Fold one chunk (read only) and hand back its line rows and their tally: the
    closing process writes them, so on SQLite the workers never queue on its single
    writer's lock."""
    with _WORKER["maker"]() as s:
        ids = reader.ids_between(s, plan.inputs.tenant_id, low, high)
        chunk = fold_chunk(s, plan, ids)
        rows = [_line_row(close_id, d, name, state) for d, name, state in chunk]
        return rows, tally(chunk), len(ids)


def _fold_in_processes(s: Session, plan: FoldPlan, close_id: int,
                       ranges: list[tuple[str, str]], workers: int, lines: LineTally,
                       total: int, progress: Progress | None) -> None:
    """Fold the chunks in `workers` processes (spawned: nothing of this process, its
    threads or its connections, is inherited), reading only; this process writes each
    chunk's lines under the attempt as it comes back, and flips the attempt afterwards,
    as always. At most two chunks per worker are in flight, so memory stays bounded."""
    url = s.get_bind().url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    todo = iter(ranges)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                             initargs=(url,)) as pool:
        pending = {pool.submit(_worker_chunk, plan, close_id, *r)
                   for r in itertools.islice(todo, workers * 2)}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                rows, part, users = future.result()
                following = next(todo, None)
                if following is not None:
                    pending.add(pool.submit(_worker_chunk, plan, close_id, *following))
                _insert_lines(s, rows)
                s.commit()
                lines.add(part)
                if progress:
                    progress(lines.folded(users), total)


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


def _line_row(close_id: int, d: Decision, user_name: str, state: str) -> dict[str, Any]:
    return {"close_id": close_id, "user_id": d.user_id, "user_name": user_name,
            "billable": d.billable, "reason": d.reason, "plan": d.plan,
            "audience": d.audience, "modules": SEP.join(d.modules), "units": SEP.join(d.units),
            "state": state}


_LINE_COLUMNS = ("close_id", "user_id", "user_name", "billable", "reason", "plan", "audience",
                 "modules", "units", "state")
_INSERT_LINE = ("INSERT INTO billing_lines (close_id, user_id, user_name, billable, reason, "
                "plan, audience, modules, units, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _insert_lines(s: Session, rows: list[dict[str, Any]]) -> None:
    """A chunk of lines: COPY on PostgreSQL (db.insert_many); on SQLite the driver's
    executemany, without SQLAlchemy's per-row parameter processing (plain values)."""
    if s.get_bind().dialect.name != "sqlite":
        db.insert_many(s, BillingLine.__table__, rows)
        return
    cursor = s.connection().connection.driver_connection.cursor()
    cursor.executemany(_INSERT_LINE, [tuple(row[c] for c in _LINE_COLUMNS) for row in rows])
    cursor.close()


def line_decision(line: BillingLine) -> Decision:
    return Decision(line.user_id, line.billable, line.reason, line.plan, line.audience,
                    tuple(filter(None, line.modules.split(SEP))),
                    tuple(filter(None, line.units.split(SEP))))


# -- late events ------------------------------------------------------------------


def _late_adjustments(s: Session, inputs: CloseInputs, settings: BillingSettings,
                      close_id: int, now: dt.datetime
                      ) -> tuple[list[dict[str, Any]], list[inv.Line], dict[str, Any]]:
    """Adjustment lines for what was learned, since they closed, about the last
    `adjustment_months` closed months before this one; older months' late events are
    only reported."""
    earlier = list(s.scalars(
        select(BillingClose).where(BillingClose.tenant_id == inputs.tenant_id,
                                   BillingClose.state == "closed",
                                   BillingClose.month < str(inputs.month))
        .order_by(BillingClose.month.desc())))
    rows: list[dict[str, Any]] = []
    lines: list[inv.Line] = []
    report: dict[str, Any] = {"notes": list(inputs.notes), "lateUnadjusted": [],
                              "lateUnadjustedUsers": 0}
    for index, past in enumerate(earlier):
        late = _late_users(s, past, inputs.cutoff)
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


def _late_users(s: Session, past: BillingClose, cutoff: dt.datetime) -> dict[str, set[str]]:
    """Users with something recorded after `past` closed (its cut-off) and before this
    close's, that happened before `past` ended: what they are, per user."""
    late: dict[str, set[str]] = {}
    window = (Event.tenant_id == past.tenant_id, Event.recorded_at > past.cutoff,
              Event.recorded_at <= cutoff, Event.effective_at < past.window_end)
    for uid, kind in s.execute(select(Event.subject_id, Event.kind).where(
            *window, Event.subject_type == "user", Event.kind.in_(reader.USER_KINDS))
            .distinct()):
        late.setdefault(uid, set()).add(kind)
    for uid, kind in s.execute(select(Event.object_id, Event.kind).where(
            *window, Event.kind.in_(reader.MEMBER_KINDS)).distinct()):
        late.setdefault(uid, set()).add(kind)
    if s.scalar(select(Event.id).where(*window, Event.subject_type == "group",
                                       Event.kind.in_(reader.GROUP_KINDS)).limit(1)):
        # A group's modules changed late: every member of the month may be affected.
        for uid in s.scalars(select(BillingLine.user_id).where(
                BillingLine.close_id == past.id)):
            late.setdefault(uid, set()).add("group.modules")
    if past.inputs.get("policy") == "monthly_active":
        for (uid,) in s.execute(select(Activity.user_id).where(
                Activity.tenant_id == past.tenant_id, Activity.recorded_at > past.cutoff,
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
