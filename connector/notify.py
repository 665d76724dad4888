"""Notifications: tell the admins of a tenant, and the partner admins, when something
needs them (PRODUCT.md; issue 16), by e-mail and as a notice in the admin UI.

    a job or an admin action ── raise_condition / clear_condition    (the caller's
                                  └─ first raise: one outbox row per   transaction)
                                     admin who has not opted out
    scheduler (run_pass) ──> conditions read from the sync state and the SCIM counts
                         ──> daily reminders ──> send_due ──> SMTP (connector/mail.py)
                                                  ├─ accepted ──> sent
                                                  └─ refused, unreachable ──> retry with
                                                     backoff; after max attempts: failed

A condition is a row keyed (tenant, kind, key); raising one that stands already does
nothing, so each condition is e-mailed once until it clears (plus a reminder every
`reminder_hours`). Raising never talks to the SMTP server: a job that raises is never
held up nor failed by the mail. Sending is at least once, as billing's report is.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from connector import logs, mail, scim_health, sync_status
from connector.clock import now as wall_clock
from connector.config import Settings
from connector.models import AdminAccount, NotifyCondition, NotifyOptOut, NotifyOutbox, Tenant
from connector.notify_messages import KINDS, compose, partner_wide

log = logging.getLogger("connector.notify")
BATCH = 50
ALL = "*"  # an opt-out of every kind
KEEP = dt.timedelta(days=90)  # sent e-mails and cleared conditions, then pruned

__all__ = ["ALL", "KINDS", "clear_condition", "raise_condition", "run_pass", "send_due"]


# -- conditions ---------------------------------------------------------------------------


def raise_condition(session: Session, tenant_id: str, kind: str, detail: str,
                    now: dt.datetime, key: str = "") -> bool:
    """Raise a condition in the caller's transaction; True when it was not raised yet
    (its e-mails are queued then). Raising a standing condition only updates its detail."""
    assert kind in KINDS, kind
    row = _find(session, tenant_id, kind, key)
    if row is not None and row.cleared_at is None:
        row.detail = detail[:2000]
        return False
    if row is None:
        row = _insert(session, tenant_id, kind, key, detail, now)
        if row is None:  # another process raised it at the same instant
            return False
    else:
        row.detail, row.raised_at, row.cleared_at = detail[:2000], now, None
    _enqueue(session, row, "raised", now)
    logs.log(log, logging.WARNING, "condition raised", tenant=tenant_id, kind=kind, key=key,
             detail=detail[:200])
    return True


def clear_condition(session: Session, tenant_id: str, kind: str, now: dt.datetime,
                    key: str | None = "", keep: str | None = None) -> int:
    """Clear a condition (key None: every one of that kind, but `keep`); how many."""
    query = update(NotifyCondition).where(
        NotifyCondition.tenant_id == tenant_id, NotifyCondition.kind == kind,
        NotifyCondition.cleared_at.is_(None))
    if key is not None:
        query = query.where(NotifyCondition.key == key)
    if keep is not None:
        query = query.where(NotifyCondition.key != keep)
    cleared = session.execute(query.values(cleared_at=now)).rowcount  # type: ignore[attr-defined]
    if cleared:
        logs.log(log, logging.INFO, "condition cleared", tenant=tenant_id, kind=kind, key=key)
    return int(cleared)


def _find(session: Session, tenant_id: str, kind: str, key: str) -> NotifyCondition | None:
    return session.scalar(select(NotifyCondition).where(
        NotifyCondition.tenant_id == tenant_id, NotifyCondition.kind == kind,
        NotifyCondition.key == key))


def _insert(session: Session, tenant_id: str, kind: str, key: str, detail: str,
            now: dt.datetime) -> NotifyCondition | None:
    row = NotifyCondition(tenant_id=tenant_id, kind=kind, key=key, detail=detail[:2000],
                          raised_at=now, cleared_at=None, last_sent_at=None)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return None
    return row


def standing(session: Session, tenant_ids: Iterable[str] | None, since: dt.datetime
             ) -> list[NotifyCondition]:
    """The raised conditions of these tenants (None: all), and those cleared after
    `since`; raised first, newest first."""
    query = select(NotifyCondition).where(or_(NotifyCondition.cleared_at.is_(None),
                                              NotifyCondition.cleared_at >= since))
    if tenant_ids is not None:
        query = query.where(NotifyCondition.tenant_id.in_(list(tenant_ids)))
    rows = list(session.scalars(query))
    rows.sort(key=lambda c: (c.cleared_at is not None, -c.raised_at.timestamp()))
    return rows


# -- who is told ----------------------------------------------------------------------------


def recipients(session: Session, tenant_id: str, kind: str) -> list[AdminAccount]:
    """The tenant's admins and the partner admins, enabled, less those who opted out of
    this kind or of all. Tenant "" (a partner-wide condition): the partner admins."""
    opted_out = select(NotifyOptOut.admin_id).where(NotifyOptOut.kind.in_((kind, ALL)))
    return list(session.scalars(select(AdminAccount).where(
        AdminAccount.disabled_at.is_(None),
        or_(AdminAccount.role == "partner", AdminAccount.tenant_id == tenant_id),
        AdminAccount.id.not_in(opted_out)).order_by(AdminAccount.email_norm)))


def opt_outs(session: Session, admin_id: str) -> set[str]:
    return set(session.scalars(select(NotifyOptOut.kind).where(
        NotifyOptOut.admin_id == admin_id)))


def set_opt_outs(session: Session, admin_id: str, kinds: Iterable[str]) -> set[str]:
    """Replace the admin's opt-outs (kinds of KINDS, or ALL)."""
    wanted = set(kinds)
    unknown = wanted - set(KINDS) - {ALL}
    if unknown:
        from connector.errors import InvalidSetting

        raise InvalidSetting(f"Unknown notification kind(s): {', '.join(sorted(unknown))}; "
                             f"use {', '.join([ALL, *KINDS])}.")
    session.execute(delete(NotifyOptOut).where(NotifyOptOut.admin_id == admin_id))
    session.add_all(NotifyOptOut(admin_id=admin_id, kind=k) for k in sorted(wanted))
    session.flush()
    return wanted


def _enqueue(session: Session, condition: NotifyCondition, reason: str,
             now: dt.datetime) -> None:
    condition.last_sent_at = now
    session.flush()
    for admin in recipients(session, condition.tenant_id, condition.kind):
        session.add(NotifyOutbox(condition_id=condition.id, admin_id=admin.id,
                                 address=admin.email, reason=reason, state="pending",
                                 created_at=now, next_attempt_at=now, attempts=0))


def queue_reminders(session: Session, hours: int, now: dt.datetime) -> int:
    """Queue a reminder of every condition still raised `hours` after its last e-mail."""
    if hours <= 0:
        return 0
    due = list(session.scalars(select(NotifyCondition).where(
        NotifyCondition.cleared_at.is_(None),
        NotifyCondition.last_sent_at <= now - dt.timedelta(hours=hours))))
    for condition in due:
        _enqueue(session, condition, "reminder", now)
    return len(due)


# -- what the jobs raise and clear ------------------------------------------------------------


def sync_round_ended(maker: sessionmaker[Session], tenant_id: str, failing_after: int,
                     now: dt.datetime | None = None) -> None:
    """After a round (any outcome): raise or clear the tenant's sync conditions, in a
    transaction of their own. Never raises: the round's outcome stands regardless."""
    try:
        with maker() as s:
            reconcile_sync(s, tenant_id, failing_after, now or wall_clock())
            s.commit()
    except Exception:  # noqa: BLE001 - a notification never fails the job that raised it
        log.exception("sync notifications not recorded for %s", tenant_id)


def reconcile_sync(session: Session, tenant_id: str, failing_after: int,
                   now: dt.datetime) -> None:
    """Make the sync conditions of a tenant match its sync state: held round,
    quarantine, rounds failing in a row."""
    health = sync_status.health(session, tenant_id)
    open_kinds = set(session.scalars(select(NotifyCondition.kind).where(
        NotifyCondition.tenant_id == tenant_id, NotifyCondition.cleared_at.is_(None))))

    def clear(kind: str, key: str | None = "", keep: str | None = None) -> None:
        if kind in open_kinds:  # an UPDATE only when there is something to clear
            clear_condition(session, tenant_id, kind, now, key, keep)

    if health.held_run_id is not None:
        key = str(health.held_run_id)
        raise_condition(session, tenant_id, "round_held",
                        f"Round {key} would disable or delete more users than the "
                        "deletion threshold allows.", now, key)
        clear("round_held", key=None, keep=key)
    else:
        clear("round_held", key=None)
    if health.quarantined_until is not None:
        raise_condition(session, tenant_id, "quarantined",
                        f"{health.failures} rounds failed in a row. Last error: "
                        f"{health.last_error or 'unknown'}", now)
    else:
        clear("quarantined")
    if health.failures >= max(failing_after, 1):
        raise_condition(session, tenant_id, "rounds_failing",
                        f"{health.failures} rounds failed in a row. Last error: "
                        f"{health.last_error or 'unknown'}", now)
    else:
        clear("rounds_failing")


def month_closes_ended(maker: sessionmaker[Session], closed: Iterable[tuple[str, str]],
                       failed: Iterable[tuple[str, str, str]], now: dt.datetime) -> None:
    """After a close pass: a failed (tenant, month) raises, a closed one clears. Never
    raises."""
    try:
        with maker() as s:
            for tenant_id, month, error in failed:
                what = f"Closing {month}" if month else "Closing the due months"
                raise_condition(s, tenant_id, "month_close_failed",
                                f"{what} failed: {error}", now, month)
            s.flush()
            # Only those raised are cleared: one read, not two writes per closed month
            # (10,000 tenants closing at a month boundary made 20,000 UPDATEs).
            raised = {(t, k) for t, k in s.execute(
                select(NotifyCondition.tenant_id, NotifyCondition.key).where(
                    NotifyCondition.kind == "month_close_failed",
                    NotifyCondition.cleared_at.is_(None)))}
            for tenant_id, month in closed:  # "": a failure before any month was known
                for key in {month, ""}:
                    if (tenant_id, key) in raised:
                        clear_condition(s, tenant_id, "month_close_failed", now, key)
            s.commit()
    except Exception:  # noqa: BLE001 - a notification never fails the job that raised it
        log.exception("month close notifications not recorded")


def reconcile_scim(session: Session, settings: Settings, now: dt.datetime) -> None:
    """Raise "scim_errors" for tenants whose SCIM error share over the window is above
    the setting (with enough requests to judge), clear it for the others."""
    cfg = settings.notify
    shares = scim_health.window_counts(session, now - dt.timedelta(
        minutes=cfg.scim_window_minutes), now)
    raised = set(session.scalars(select(NotifyCondition.tenant_id).where(
        NotifyCondition.kind == "scim_errors", NotifyCondition.cleared_at.is_(None))))
    for tenant_id, (requests, errors) in shares.items():
        if requests >= cfg.scim_min_requests and errors * 100 > cfg.scim_error_percent * requests:
            raise_condition(session, tenant_id, "scim_errors",
                            f"{errors} of {requests} SCIM requests in the last "
                            f"{cfg.scim_window_minutes} minutes were answered with an error "
                            f"({errors * 100 // requests} %).", now)
            raised.discard(tenant_id)
    for tenant_id in raised:  # quiet or healthy again
        requests, errors = shares.get(tenant_id, (0, 0))
        if requests == 0 or errors * 100 <= cfg.scim_error_percent * requests:
            clear_condition(session, tenant_id, "scim_errors", now)


# -- the scheduler's pass ---------------------------------------------------------------------


def run_pass(maker: sessionmaker[Session], settings: Settings,
             clock: Callable[[], dt.datetime] = wall_clock) -> None:
    """Evaluate, remind, send, prune; never raises (a job that raises is only logged).
    Notifications off: only drop the e-mails the jobs queued."""
    now = clock()
    if not settings.notify.enabled:
        _drop_pending(maker, now, SendResult())
        return
    steps: list[tuple[str, Callable[[], object]]] = [
        ("sync conditions", lambda: _reconcile_all_sync(maker, settings, now)),
        ("scim conditions", lambda: _in_transaction(maker, lambda s: reconcile_scim(
            s, settings, now))),
        ("reminders", lambda: _in_transaction(maker, lambda s: queue_reminders(
            s, settings.notify.reminder_hours, now))),
        ("sending", lambda: send_due(maker, settings, now)),
        ("pruning", lambda: _in_transaction(maker, lambda s: _prune(s, now))),
    ]
    for name, step in steps:
        try:
            step()
        except mail.MailSettingsError as exc:
            logs.log(log, logging.ERROR, "notifications not sent: settings", error=str(exc))
        except Exception:  # noqa: BLE001 - one step failing never stops the others
            log.exception("notification pass: %s failed", name)


def _prune(session: Session, now: dt.datetime) -> None:
    """Drop SCIM counts older than a day, and e-mails and cleared conditions older than
    KEEP (the notifications page shows a few days of cleared ones)."""
    scim_health.prune(session, now)
    old = now - KEEP
    gone = select(NotifyCondition.id).where(NotifyCondition.cleared_at < old)
    session.execute(delete(NotifyOutbox).where(or_(
        NotifyOutbox.condition_id.in_(gone),
        (NotifyOutbox.state != "pending") & (NotifyOutbox.created_at < old))))
    session.execute(delete(NotifyCondition).where(NotifyCondition.cleared_at < old))


def _in_transaction(maker: sessionmaker[Session], work: Callable[[Session], object]) -> None:
    with maker() as s:
        work(s)
        s.commit()


def _reconcile_all_sync(maker: sessionmaker[Session], settings: Settings,
                        now: dt.datetime) -> None:
    with maker() as s:
        tenants = sync_status.tenants_with_sync(s)
    for tenant_id in tenants:  # one tenant's failure never stops the others
        sync_round_ended(maker, tenant_id, settings.azure_sync.notify_after_failures, now)


def add_jobs(scheduler: object, maker: sessionmaker[Session], settings: Settings) -> None:
    """The notification pass, every minute (APScheduler)."""
    scheduler.add_job(run_pass, "interval", minutes=1,  # type: ignore[attr-defined]
                      args=(maker, settings), id="notify:pass", max_instances=1,
                      coalesce=True, replace_existing=True,
                      next_run_time=wall_clock() + dt.timedelta(seconds=30))


# -- sending ------------------------------------------------------------------------------


@dataclass
class SendResult:
    sent: list[int] = field(default_factory=list)  # outbox ids
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)


def send_due(maker: sessionmaker[Session], settings: Settings, now: dt.datetime) -> SendResult:
    """Send every e-mail that is due, oldest first; safe in several processes at once
    (each is claimed first). Without an SMTP server or with notifications off, the
    queued e-mails are dropped (the notices in the UI still show)."""
    result = SendResult()
    if not (settings.notify.enabled and mail.configured(settings.billing)):
        _drop_pending(maker, now, result)
        return result
    mail.check_settings(settings.billing)
    while True:
        with maker() as s:
            due = s.execute(select(NotifyOutbox.id, NotifyOutbox.attempts)
                            .where(NotifyOutbox.state == "pending",
                                   NotifyOutbox.next_attempt_at <= now)
                            .order_by(NotifyOutbox.next_attempt_at, NotifyOutbox.id)
                            .limit(BATCH)).all()
        for row_id, attempts in due:
            if mail.claim(maker, NotifyOutbox, row_id, attempts, now):
                _send_one(maker, settings, row_id, now, result)
        if len(due) < BATCH:
            return result


def _drop_pending(maker: sessionmaker[Session], now: dt.datetime, result: SendResult) -> None:
    with maker() as s:
        ids = list(s.scalars(select(NotifyOutbox.id).where(NotifyOutbox.state == "pending")))
        if ids:
            s.execute(update(NotifyOutbox).where(NotifyOutbox.id.in_(ids)).values(
                state="dropped", last_error="no SMTP server configured, or notifications "
                "off", next_attempt_at=now))
            s.commit()
        result.dropped.extend(ids)


def _send_one(maker: sessionmaker[Session], settings: Settings, row_id: int,
              now: dt.datetime, result: SendResult) -> None:
    with maker() as s:
        row = s.get(NotifyOutbox, row_id)
        assert row is not None
        condition = s.get(NotifyCondition, row.condition_id)
        tenant = (None if condition is None else partner_wide() if condition.tenant_id == ""
                  else s.get(Tenant, condition.tenant_id))
        if condition is None or tenant is None or (
                condition.cleared_at is not None and condition.cleared_at >= row.created_at):
            row.state, row.last_error = "dropped", "the condition cleared before it was sent"
            result.dropped.append(row_id)
            s.commit()
            return
        try:
            mail.deliver(settings.billing, compose(settings, condition, tenant, row.address,
                                                   row.reason, now))
        except (smtplib.SMTPException, OSError) as exc:
            _failed(row, settings, now, mail.describe(exc), result)
        else:
            row.state, row.sent_at, row.last_error = "sent", now, None
            result.sent.append(row_id)
            logs.log(log, logging.INFO, "notification sent", tenant=condition.tenant_id,
                     kind=condition.kind, reason=row.reason)
        s.commit()


def _failed(row: NotifyOutbox, settings: Settings, now: dt.datetime, error: str,
            result: SendResult) -> None:
    row.last_error = error
    if row.attempts >= settings.notify.max_attempts:
        row.state = "failed"
        result.failed.append(row.id)
        logs.log(log, logging.ERROR, "notification given up", outbox=row.id,
                 attempts=row.attempts, error=error)
        return
    row.next_attempt_at = now + mail.backoff(settings.notify.retry_minutes, row.attempts)
    result.retrying.append(row.id)
    logs.log(log, logging.WARNING, "notification not sent, will retry", outbox=row.id,
             attempts=row.attempts, error=error, retry_at=row.next_attempt_at.isoformat())
