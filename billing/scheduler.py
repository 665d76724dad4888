"""The month-close job: every few minutes, close whatever months are due.

Any number of processes may run it: a close is exactly-once by the unique key on
(tenant, month, version), so two processes that start the same close at once make one
close (the loser's attempt is dropped). After downtime the first run closes every missed
month, oldest first.

A second job sends the monthly e-mail reports the closes queued (billing/mail.py),
retrying with backoff; it also runs right after a pass that closed something.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from billing import mail
from billing.catch_up import close_due
from connector import logs, notify
from connector.clock import now as wall_clock
from connector.config import BillingSettings

log = logging.getLogger("connector.billing")


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
