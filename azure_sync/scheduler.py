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

The scheduler also runs the rounds admins ask for ("Run now", "Restart provisioning")
when the web process hands them over (azure_sync/on_demand.py): every
`REQUEST_POLL_SECONDS` it takes the waiting requests, and says it is alive
(connector/heartbeat.py), so the web process can tell an admin when no worker runs.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import select

from azure_sync import on_demand
from azure_sync.service import SyncService
from connector import clock, heartbeat, logs
from connector.errors import NotFound
from connector.models import EntraRegistration, SyncState, Tenant

log = logging.getLogger("connector.sync")
REFRESH_SECONDS = 60
DUE_SHARE = 0.8
REQUEST_POLL_SECONDS = 1.0
OWN_JOBS = ("sync:refresh", "sync:requests")  # the scheduler's own, not a tenant's


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
        if job.id.startswith("sync:") and job.id not in OWN_JOBS and job.id[5:] not in wanted:
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


def take_requests(scheduler: BaseScheduler, service: SyncService,
                  heart: heartbeat.Heart) -> None:
    """Say this process is alive, and start the rounds admins asked for (each taken by
    one process only). Never raises: the job must run again in a second."""
    try:
        now = clock.now()
        heart.beat(now)
        with service.maker() as s:
            waiting = on_demand.waiting(s, now)
        for tenant_id, trigger in waiting:
            if on_demand.take(service.write_maker, tenant_id, trigger):
                scheduler.add_job(run_requested, args=(service, tenant_id, trigger),
                                  misfire_grace_time=None)
    except Exception:  # noqa: BLE001 - logged; the next poll tries again
        log.exception("could not take the requested sync rounds")


def run_requested(service: SyncService, tenant_id: str, trigger: str) -> None:
    """A round an admin asked for. Never raises (as `run_tenant`)."""
    try:
        result = service.run(tenant_id, trigger)
        if result.status == "busy" and result.run_id is None:
            # Another process started the tenant's round just before: this one runs
            # when that has ended (asked again, it waits while the lease is held).
            with service.write_maker() as s:
                on_demand.ask(s, tenant_id, trigger, clock.now())
                s.commit()
        logs.log(log, logging.INFO, "requested sync round", tenant=tenant_id,
                 trigger=trigger, run=result.run_id, status=result.status,
                 counts=result.counts, error=result.error)
    except NotFound as gone:  # the registration was removed since the request
        logs.log(log, logging.WARNING, "requested sync round not run", tenant=tenant_id,
                 trigger=trigger, error=gone.message)
    except Exception:  # noqa: BLE001 - the run log shows a failed round
        log.exception("requested sync round crashed for tenant %s", tenant_id)


def start(service: SyncService, **scheduler_options: Any) -> BackgroundScheduler:
    """Start a background scheduler for this process (the caller stops it, with `stop`
    to say at once that it takes no more requests)."""
    scheduler = BackgroundScheduler(timezone=dt.UTC, **scheduler_options)
    scheduler.add_job(sync_jobs, "interval", seconds=REFRESH_SECONDS,
                      args=(scheduler, service), id="sync:refresh", max_instances=1,
                      coalesce=True, next_run_time=clock.now())
    add_request_job(scheduler, service)
    scheduler.start()
    return scheduler


def add_request_job(scheduler: BaseScheduler, service: SyncService) -> None:
    """The job that beats and takes requests, every REQUEST_POLL_SECONDS, on a thread of
    its own: with every pool thread in a long round, the worker still beats and takes
    requests (their rounds wait for a pool thread)."""
    heart = heartbeat.Heart(service.write_maker)
    scheduler.connector_heart = heart
    scheduler.add_executor(ThreadPoolExecutor(1), "requests")
    scheduler.add_job(take_requests, "interval", seconds=REQUEST_POLL_SECONDS,
                      args=(scheduler, service, heart), id="sync:requests",
                      executor="requests", max_instances=1, coalesce=True,
                      next_run_time=clock.now())


def stop(scheduler: BaseScheduler) -> None:
    """Stop taking requests (the heartbeat goes first, so the web process stops handing
    rounds to this process), then wait for the rounds running to end."""
    scheduler.remove_job("sync:requests")
    heart = getattr(scheduler, "connector_heart", None)
    if heart is not None:
        try:
            heart.stop()
        except Exception:  # noqa: BLE001 - the beat goes stale in STALE_SECONDS anyway
            log.exception("could not remove this worker's heartbeat")
    scheduler.shutdown(wait=True)
