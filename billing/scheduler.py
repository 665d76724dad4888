"""The month-close job: every few minutes, close whatever months are due.

Any number of processes may run it: a close is exactly-once by the unique key on
(tenant, month, version), so two processes that start the same close at once make one
close (the loser's attempt is dropped). After downtime the first run closes every missed
month, oldest first.

Besides the interval, a one-off job runs a pass right when the next collection window
ends (the earliest of the tenants' zones: their month boundary plus the grace), then
plans the next one, so a fleet's months close at the window's end and not up to
close_check_minutes later.

A second job sends the monthly e-mail reports the closes queued (billing/mail.py),
retrying with backoff; it also runs right after a pass that closed something.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from billing import mail
from billing.calendar import Month
from billing.catch_up import close_due
from connector import logs, notify
from connector.clock import now as wall_clock
from connector.config import BillingSettings
from connector.models import Tenant

log = logging.getLogger("connector.billing")
WINDOW_JOB = "billing:close-at-window-end"
WINDOW_SLACK = dt.timedelta(seconds=5)  # the pass starts just after the window's end
REPLAN_AT_LEAST = dt.timedelta(hours=1)  # new tenants may bring zones with earlier ends


def run_due(maker: sessionmaker[Session], settings: BillingSettings,
            clock: Callable[[], dt.datetime] = wall_clock) -> None:
    """One pass; never raises (a job that raises is only logged by APScheduler)."""
    now = clock()
    try:
        result = close_due(maker, settings, now)
    except Exception:  # noqa: BLE001 - the job must survive to run again
        log.exception("billing close pass crashed")
        return
    for tenant_id, month, outcome in result.closed:
        logs.log(log, logging.INFO, "month closed", tenant=tenant_id, month=month,
                 created=outcome.created, hash=outcome.close.content_hash,
                 billable=outcome.close.users_billable)
    for tenant_id, month, error in result.failed:
        logs.log(log, logging.ERROR, "month close failed", tenant=tenant_id, month=month,
                 error=error)
    notify.month_closes_ended(maker, [(t, m) for t, m, _ in result.closed], result.failed, now)
    if any(outcome.created for _, _, outcome in result.closed):
        send_reports(maker, settings, clock)


def next_window_end(maker: sessionmaker[Session], settings: BillingSettings,
                    now: dt.datetime) -> dt.datetime | None:
    """The next instant after `now` at which some tenant's collection window ends: a
    month boundary in one of the tenants' zones plus billing.grace_minutes (None: no
    tenant, or no zone this system knows)."""
    with maker() as s:
        zones = set(s.scalars(select(Tenant.time_zone).distinct()))
    grace = dt.timedelta(minutes=settings.grace_minutes)
    ends = []
    for zone in zones:
        try:
            month = Month.containing(now, zone)
            ends += [t for t in (month.start(zone) + grace, month.end(zone) + grace)
                     if t > now][:1]
        except Exception:  # noqa: BLE001, S112 - a zone the system lacks: the pass says so
            continue
    return min(ends, default=None)


def plan_window_pass(scheduler: Any, maker: sessionmaker[Session], settings: BillingSettings,
                     clock: Callable[[], dt.datetime] = wall_clock) -> dt.datetime:
    """(Re)schedule the one-off pass at the next collection window's end (at the latest
    in an hour, to see new tenants' zones); return when it runs. Never raises."""
    now = clock()
    try:
        when = next_window_end(maker, settings, now)
    except Exception:  # noqa: BLE001 - the interval job still closes, later
        log.exception("billing: the next collection window's end could not be planned")
        when = None
    run_at = min(when + WINDOW_SLACK if when else now + REPLAN_AT_LEAST,
                 now + REPLAN_AT_LEAST)
    scheduler.add_job(run_at_window_end, "date", run_date=run_at,
                      args=(scheduler, maker, settings), id=WINDOW_JOB,
                      replace_existing=True, misfire_grace_time=None)
    return run_at


def run_at_window_end(scheduler: Any, maker: sessionmaker[Session],
                      settings: BillingSettings,
                      clock: Callable[[], dt.datetime] = wall_clock) -> None:
    """A pass at a window's end (if one ended), then the next one planned."""
    now = clock()
    ended = next_window_end(maker, settings, now - REPLAN_AT_LEAST - WINDOW_SLACK)
    if ended is not None and ended <= now:
        run_due(maker, settings, clock)
    plan_window_pass(scheduler, maker, settings, clock)


def send_reports(maker: sessionmaker[Session], settings: BillingSettings,
                 clock: Callable[[], dt.datetime] = wall_clock) -> None:
    """Send the e-mail reports that are due; never raises (a failed send is retried
    on a later pass, see billing/mail.py)."""
    if not mail.enabled(settings):
        return
    try:
        mail.send_due(maker, settings, clock())
    except mail.MailSettingsError as exc:
        logs.log(log, logging.ERROR, "billing reports not sent: settings", error=str(exc))
    except Exception:  # noqa: BLE001 - the job must survive to run again
        log.exception("billing report pass crashed")


def add_job(scheduler: Any, maker: sessionmaker[Session], settings: BillingSettings) -> None:
    scheduler.add_job(run_due, "interval", minutes=settings.close_check_minutes,
                      args=(maker, settings), id="billing:close-due", max_instances=1,
                      coalesce=True, replace_existing=True,
                      next_run_time=wall_clock() + dt.timedelta(seconds=10))
    plan_window_pass(scheduler, maker, settings)
    if mail.enabled(settings):
        # Retries wait at least mail_retry_minutes; checking every minute keeps them on time.
        scheduler.add_job(send_reports, "interval", minutes=1, args=(maker, settings),
                          id="billing:send-reports", max_instances=1, coalesce=True,
                          replace_existing=True,
                          next_run_time=wall_clock() + dt.timedelta(seconds=20))


def start(maker: sessionmaker[Session], settings: BillingSettings) -> BackgroundScheduler:
    """Start a background scheduler with the close and report jobs (the caller stops it)."""
    scheduler = BackgroundScheduler(timezone=dt.UTC)
    add_job(scheduler, maker, settings)
    scheduler.start()
    return scheduler
