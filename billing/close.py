"""Close a tenant's month: fold every user's history, store the lines, total, invoice.

    plan_close ──> inputs (billing.planning; or NotDue with the reason)
    close_month ─> attempt row (building) ─> lines, chunk by chunk (billing.tenant_fold,
                   │                         in worker processes: billing.workers)
                   ├─ late events of earlier closed months ─> adjustment lines
                   │  (billing.adjustments)
                   └─ hash (billing.snapshot), invoice ─> flip to closed

Exactly once per (tenant, month, version): the flip from `building` to `closed` is
checked by a unique index, so two processes closing the same month both compute, one
wins, the other deletes its attempt and returns the winner's close. A crash leaves only
an attempt nobody reads; the next close starts over and, from the same inputs, gets the
same hash. A closed month never changes: a partner's reissue is a new version.

A process killed mid-close (SIGKILL, the OOM killer) leaves its `building` attempt and
the lines it committed. The attempt says it is alive (`alive_at`) with every chunk of
lines; one silent for [billing] close_lease_seconds is a dead process's, and every close
pass deletes those first (`sweep_dead_attempts`), whether or not the month has been
closed since. An attempt that was only slow, swept all the same, finds out at its next
chunk or at its flip (AttemptLost) and fails; the next pass closes the month.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from billing import invoice as inv
from billing import reader
from billing.adjustments import closed_before, late_adjustments
from billing.archive import archived_before
from billing.calendar import Month
from billing.lines import AttemptLost, insert_lines, line_row, mark_alive
from billing.mail import enqueue_for
from billing.planning import CloseInputs, NotDue, latest_close, plan_close
from billing.snapshot import LineTally, digest_of, snapshot_digest, tally, totals_as_json
from billing.tenant_fold import Progress, fold_partition, partitions_for, plan_fold, user_count
from billing.workers import fold_in_processes, worker_count
from connector import clock, events, metrics
from connector.config import BillingSettings
from connector.events import WriteContext
from connector.models import Activity, BillingAdjustment, BillingClose, Event, Tenant
from connector.status import Source

STALE_ATTEMPT = dt.timedelta(hours=6)  # an attempt written before alive_at existed
Learned = tuple[dt.datetime, list[reader.LateEvent]]  # late events since a cut-off


@dataclass
class Outcome:
    close: BillingClose
    created: bool  # False: the month was already closed (by this call's rival, or before)
    adjustments: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def close_month(maker: sessionmaker[Session], tenant_id: str, month: Month,
                settings: BillingSettings, now: dt.datetime, actor: str = "system",
                reissue_reason: str | None = None, progress: Progress | None = None,
                cutoff: dt.datetime | None = None) -> Outcome:
    """Close `month` for the tenant (idempotent), or reissue it with a reason."""
    started = time.perf_counter()
    result = "failed"
    try:
        outcome = _close_month(maker, tenant_id, month, settings, now, actor, reissue_reason,
                               progress, cutoff)
        result = ("already_closed" if not outcome.created
                  else "reissued" if reissue_reason is not None else "closed")
        return outcome
    except NotDue:
        result = "not_due"
        raise
    finally:
        metrics.month_close(result, time.perf_counter() - started)


def _close_month(maker: sessionmaker[Session], tenant_id: str, month: Month,
                 settings: BillingSettings, now: dt.datetime, actor: str,
                 reissue_reason: str | None, progress: Progress | None,
                 cutoff: dt.datetime | None) -> Outcome:
    with maker() as s:
        tenant = s.get(Tenant, tenant_id)
        if tenant is None:
            raise LookupError(f"No tenant {tenant_id}.")
        current = latest_close(s, tenant_id, month)
        if current is not None and reissue_reason is None:
            return Outcome(current, created=False)
        if current is None and reissue_reason is not None:
            raise NotDue(f"{month} is not closed yet: close it before reissuing it.")
        through = archived_before(s, tenant_id) if reissue_reason is not None else None
        if through is not None and current is not None and current.window_start < through:
            raise NotDue(f"{month} began before the tenant's purged users' events were "
                         f"archived (events before {through:%Y-%m}, `connector events "
                         "archive`): it can no longer be folded again from the log.")
        # A reissue recomputes from everything known now, under today's billing info.
        inputs = plan_close(s, tenant, month, settings, now,
                            cutoff=now if reissue_reason is not None else cutoff)
        version = current.version + 1 if current is not None else 1
        _drop_stale_attempts(s, tenant_id, month, now, settings)
        attempt = BillingClose(
            tenant_id=tenant_id, month=str(month), version=version, state="building",
            started_at=now, alive_at=clock.now(), closed_by=actor, reason=reissue_reason,
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


def _drop_stale_attempts(s: Session, tenant_id: str, month: Month, now: dt.datetime,
                         settings: BillingSettings) -> None:
    # Attempts of a process that died mid-close (a live rival's attempt is recent).
    s.execute(delete(BillingClose).where(
        BillingClose.tenant_id == tenant_id, BillingClose.month == str(month),
        dead_attempts(now, settings)))


def dead_attempts(now: dt.datetime, settings: BillingSettings) -> Any:
    """Building attempts of processes that died mid-close: silent for the lease (by the
    wall clock: `now` may be a pass's frozen instant), or, written before attempts said
    they were alive, started STALE_ATTEMPT before."""
    silent = clock.now() - dt.timedelta(seconds=settings.close_lease_seconds)
    return (BillingClose.state == "building") & (
        (BillingClose.alive_at < silent)
        | (BillingClose.alive_at.is_(None) & (BillingClose.started_at < now - STALE_ATTEMPT)))


def sweep_dead_attempts(maker: sessionmaker[Session], settings: BillingSettings,
                        now: dt.datetime) -> int:
    """Delete every close attempt of a process that died mid-close, with its lines (the
    foreign key cascades): the month closes again, from scratch. Return how many."""
    with maker() as s:
        gone = s.execute(delete(BillingClose).where(dead_attempts(now, settings)))
        s.commit()
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]


def _event_high_water(s: Session, inputs: CloseInputs) -> int:
    return s.scalar(select(Event.id).where(
        Event.tenant_id == inputs.tenant_id, Event.recorded_at <= inputs.cutoff)
        .order_by(Event.recorded_at.desc(), Event.id.desc()).limit(1)) or 0


def _activity_high_water(s: Session, inputs: CloseInputs) -> int:
    return s.scalar(select(Activity.id).where(
        Activity.tenant_id == inputs.tenant_id, Activity.recorded_at <= inputs.cutoff)
        .order_by(Activity.recorded_at.desc(), Activity.id.desc()).limit(1)) or 0


def _build(maker: sessionmaker[Session], attempt_id: int, inputs: CloseInputs,
           settings: BillingSettings, now: dt.datetime, replaced: BillingClose | None,
           progress: Progress | None) -> Outcome:
    """Fill the attempt: its lines, its adjustments of earlier months, its hash and
    invoice; then flip it to closed."""
    with maker() as s:
        attempt = s.get(BillingClose, attempt_id)
        assert attempt is not None
        digest = snapshot_digest(inputs, attempt)
        earlier = closed_before(s, inputs)
        learned = _learned_since_last_close(s, inputs, earlier)
        lines = _fold_lines(s, inputs, settings, attempt_id, learned, progress)
        mark_alive(s, attempt_id)
        s.commit()
        adjustments, adjustment_lines, report = late_adjustments(
            s, inputs, settings, attempt_id, now, earlier, learned[1] if learned else [])
        month_invoice = inv.make_invoice(lines.totals, inputs.prices, inputs.non_profit,
                                         inputs.po_number, adjustment_lines)
        closed = {"state": "closed", "closed_at": now,
                  "content_hash": digest_of(digest, lines), "users_counted": lines.counted,
                  "users_billable": lines.billable, "totals": totals_as_json(lines.totals),
                  "invoice": month_invoice.as_json(), "report": report}
        return _flip(s, inputs, settings, attempt_id, now, replaced, closed, adjustments)


def _learned_since_last_close(s: Session, inputs: CloseInputs,
                              earlier: list[BillingClose]) -> Learned | None:
    """What was learned late since the last close (of the month before): read once, for
    the users folded from scratch and for the adjustments of closed months."""
    if not earlier:
        return None
    since = earlier[0].cutoff
    return since, reader.late_events(s, inputs.tenant_id, since, inputs.cutoff,
                                     inputs.window.start)


def _fold_lines(s: Session, inputs: CloseInputs, settings: BillingSettings,
                attempt_id: int, learned: Learned | None, progress: Progress | None
                ) -> LineTally:
    """Fold every user and write the lines under the attempt, committed chunk by chunk
    (in worker processes for a large tenant); return their tally."""
    lines = LineTally()
    total = user_count(s, inputs.tenant_id)
    plan = plan_fold(s, inputs, learned=learned, users=total)
    workers = worker_count(settings, total)
    parts = partitions_for(s, inputs.tenant_id, total, workers)
    s.commit()
    if workers > 1:
        fold_in_processes(s, plan, attempt_id, parts, workers, lines, total, progress)
        return lines
    for low, high in parts:
        for chunk, users in fold_partition(s, plan, low, high, own=True):
            insert_lines(s, [line_row(attempt_id, *line) for line in chunk])
            mark_alive(s, attempt_id)
            s.commit()
            lines.add(tally(chunk))
            if progress:
                progress(lines.folded(users), total)
    return lines


def _flip(s: Session, inputs: CloseInputs, settings: BillingSettings, attempt_id: int,
          now: dt.datetime, replaced: BillingClose | None, closed: dict[str, Any],
          adjustments: list[dict[str, Any]]) -> Outcome:
    """Flip the attempt to closed with its `closed` values and adjustments, or, if a
    rival closed the month first, drop it and return the rival's close."""
    try:
        # The unique index on (tenant, month, version) over closed rows decides
        # which of two concurrent closes of a month stands.
        if replaced is not None:  # a reissue: the old version stays readable
            s.execute(update(BillingClose).where(BillingClose.id == replaced.id)
                      .values(state="superseded"))
        flipped = s.execute(update(BillingClose).where(
            BillingClose.id == attempt_id, BillingClose.state == "building").values(**closed))
        if flipped.rowcount != 1:  # type: ignore[attr-defined]
            # Swept as a dead process's (this one stalled past the lease): nothing of
            # this close is written; the winner's close, if any, stands.
            s.rollback()
            winner = latest_close(s, inputs.tenant_id, inputs.month)
            if winner is None or replaced is not None:
                raise AttemptLost("This close stalled past [billing] close_lease_seconds "
                                  "and was taken for a dead process's; the next pass "
                                  "closes the month.")
            return Outcome(winner, created=False)
        if adjustments:
            s.execute(BillingAdjustment.__table__.insert(), adjustments)
        # The monthly e-mail report (billing/mail.py), queued with the flip: sent
        # later by the scheduler, so SMTP never holds up or fails a close.
        enqueue_for(s, settings, attempt_id, now)
        _record_close(s, inputs, attempt_id, now, replaced, closed)
        s.commit()
    except IntegrityError:
        s.rollback()
        winner = latest_close(s, inputs.tenant_id, inputs.month)
        s.execute(delete(BillingClose).where(BillingClose.id == attempt_id))
        s.commit()
        if winner is None:
            raise
        return Outcome(winner, created=False)
    stored = s.get(BillingClose, attempt_id)
    assert stored is not None
    return Outcome(stored, True, len(adjustments),
                   {"users": closed["users_counted"], "billable": closed["users_billable"]})


def _record_close(s: Session, inputs: CloseInputs, attempt_id: int, now: dt.datetime,
                  replaced: BillingClose | None, closed: dict[str, Any]) -> None:
    """The close as an event (the event feed's billing.month_closed), committed with the
    flip: a rival's close that wins instead rolls it back with the flip."""
    by = s.scalar(select(BillingClose.closed_by).where(BillingClose.id == attempt_id))
    ctx = WriteContext(inputs.tenant_id, Source.SYSTEM if by in (None, "system") else Source.ADMIN,
                       by or "system", f"billing-close:{attempt_id}", now)
    events.record(s, ctx, "tenant", inputs.tenant_id, events.MONTH_CLOSED, None,
                  {"month": str(inputs.month), "closeId": attempt_id,
                   "version": replaced.version + 1 if replaced is not None else 1,
                   "reissued": replaced is not None, "usersCounted": closed["users_counted"],
                   "usersBillable": closed["users_billable"]})
