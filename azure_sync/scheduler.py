"""APScheduler jobs: one interval job per registered tenant, kept in step with the
database.

Every job is `max_instances=1` and coalesced (a late process runs a missed round once,
not once per missed interval) with jitter (tenants do not all start on the minute). Which
process actually runs a tenant's round is decided by the database lease in
`azure_sync.lease`, so any number of processes may run this scheduler. A quarantined
tenant runs once a day until a round succeeds; a paused tenant's round does nothing.

Every process running the scheduler has a job for every tenant, each firing once per
interval: with several `connector worker` processes, each would sync every tenant once
per interval, one after the other (the lease only keeps them from running at once). So a
scheduled round starts only if the tenant's last round started at least
`DUE_SHARE` of its interval ago, or one is open (interrupted: its process died, and this
one resumes it). The jitter is at most a tenth of the interval, so one process's own
rounds are never skipped.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import select

from azure_sync.service import SyncService
from connector import clock, logs
from connector.models import EntraRegistration, SyncState, Tenant

log = logging.getLogger("connector.sync")
REFRESH_SECONDS = 60
DUE_SHARE = 0.8


def job_id(tenant_id: str) -> str:
    return f"sync:{tenant_id}"


def run_tenant(service: SyncService, tenant_id: str) -> None:
    """One scheduled round; never raises (a job that raises is only logged by APScheduler)."""
    try:
        if _quarantined(service, tenant_id) or not _due(service, tenant_id):
            return
        result = service.run(tenant_id, "schedule")
        logs.log(log, logging.INFO, "scheduled sync round", tenant=tenant_id,
                 run=result.run_id, status=result.status, counts=result.counts,
                 error=result.error)
    except Exception:  # noqa: BLE001 - a job must survive to run again
        log.exception("sync round crashed for tenant %s", tenant_id)


def _quarantined(service: SyncService, tenant_id: str) -> bool:
    with service.maker() as s:
        state = s.get(SyncState, tenant_id)
        if state is None or state.quarantined_until is None:
            return False
        now = clock.now()
        last = state.last_started_at
        return state.quarantined_until > now and last is not None and (
            now - last < dt.timedelta(days=1))


def _due(service: SyncService, tenant_id: str) -> bool:
    """Whether a scheduled round should start now: none started in the last
    DUE_SHARE of the tenant's interval (another process ran it), or one is open."""
    with service.maker() as s:
        state = s.get(SyncState, tenant_id)
        registration = s.get(EntraRegistration, tenant_id)
        if state is None or registration is None or state.last_started_at is None:
            return True
        if state.run_id is not None:  # open: running elsewhere (busy), or to resume
            return True
        interval = dt.timedelta(minutes=registration.interval_minutes) * DUE_SHARE
        return clock.now() - state.last_started_at >= interval


def sync_jobs(scheduler: BaseScheduler, service: SyncService) -> None:
    """Add, change or drop tenant jobs to match the registrations in the database."""
    with service.maker() as s:
        wanted = {r.tenant_id: r.interval_minutes for r in s.scalars(
            select(EntraRegistration)
            .join(Tenant, Tenant.id == EntraRegistration.tenant_id)
            .where(EntraRegistration.enabled.is_(True), Tenant.closed_at.is_(None)))}
    for job in scheduler.get_jobs():
        if job.id.startswith("sync:") and job.id[5:] not in wanted:
            job.remove()
    for tenant_id, minutes in wanted.items():
        existing = scheduler.get_job(job_id(tenant_id))
        seconds = minutes * 60
        if existing is not None and getattr(existing.trigger, "interval", None) == \
                dt.timedelta(seconds=seconds):
            continue
        scheduler.add_job(run_tenant, "interval", seconds=seconds, args=(service, tenant_id),
                          id=job_id(tenant_id), replace_existing=True, max_instances=1,
                          coalesce=True, jitter=min(60, seconds // 10),
                          next_run_time=clock.now() + dt.timedelta(seconds=5))


def start(service: SyncService, **scheduler_options: Any) -> BackgroundScheduler:
    """Start a background scheduler for this process (the caller stops it)."""
    scheduler = BackgroundScheduler(timezone=dt.UTC, **scheduler_options)
    scheduler.add_job(sync_jobs, "interval", seconds=REFRESH_SECONDS,
                      args=(scheduler, service), id="sync:refresh", max_instances=1,
                      coalesce=True, next_run_time=clock.now())
    scheduler.start()
    return scheduler
