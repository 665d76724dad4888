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
scheduled round starts only if the tenant's last round was due at least `DUE_SHARE` of
its interval before this job was, or one is open (interrupted: its process died, and
this one resumes it). The jitter is at most a tenth of the interval, so one process's
own rounds are never skipped. That check is made again once the lease is taken
(`RoundOptions.started_before`): between a first look and the lease, another process
may have run the whole round.

Both sides of that check are the times the jobs were due (APScheduler's scheduled run
time, which `DueTimeExecutor` hands to the job), not the times the rounds began: a
round that waited for a free thread counts from when it was due
(`RoundOptions.due_at` sets the tenant's `last_started_at` to it), so its tenant's next
firing, one interval after the late one's, still runs. Comparing with the late round's
start instead skipped that firing, and the tenant waited up to two intervals (the
start-up catch-up's tail at 1,000 tenants). Two rounds of one tenant are still never
due less than `DUE_SHARE` of an interval apart, whatever process's job fires.

A job that runs late still runs (no misfire grace): with many tenants a process's
threads are busy for a while, and a round skipped for being late would wait a whole
interval. When a round is busy (another process holds its lease), the job looks again
right after that lease ends: if the holder died, this process takes the round over
then, not an interval later.

The scheduler also runs the rounds admins ask for ("Run now", "Restart provisioning")
when the web process hands them over (azure_sync/on_demand.py): every
`REQUEST_POLL_SECONDS` it takes the waiting requests, and says it is alive
(connector/heartbeat.py), so the web process can tell an admin when no worker runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
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
REFRESH_JOB = "sync:refresh"
DUE_SHARE = 0.8
REQUEST_POLL_SECONDS = 1.0
THREADS = 10  # APScheduler's default pool: rounds one process runs at once
OWN_JOBS = ("sync:refresh", "sync:requests")  # the scheduler's own, not a tenant's


def job_id(tenant_id: str) -> str:
    return f"sync:{tenant_id}"


def takeover_job_id(tenant_id: str) -> str:
    return f"sync-takeover:{tenant_id}"


class DueTimeExecutor(ThreadPoolExecutor):
    """APScheduler's thread pool, telling a tenant's job (`run_tenant`) the time it was
    due: a job that waited for a free thread starts later than that."""

    def _do_submit_job(self, job: Job, run_times: list[dt.datetime]) -> None:
        if job.func is run_tenant and run_times:
            job = _DueJob(job, run_times[-1])
        super()._do_submit_job(job, run_times)


class _DueJob:
    """A job as one firing runs it: the job, with the time it was due as `due_at`."""

    def __init__(self, job: Job, due_at: dt.datetime) -> None:
        self._job = job
        self.kwargs = {**job.kwargs, "due_at": due_at}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def __str__(self) -> str:
        return str(self._job)


def run_tenant(service: SyncService, tenant_id: str,
               scheduler: BaseScheduler | None = None,
               due_at: dt.datetime | None = None) -> None:
    """One scheduled round; never raises (a job that raises is only logged by APScheduler).
    With `scheduler`, a busy round is looked at again when its lease ends. `due_at`: when
    the job was due (`DueTimeExecutor`; now if not told)."""
    try:
        if _quarantined(service, tenant_id):
            return
        due = min(due_at, clock.now()) if due_at is not None else clock.now()
        started_before = _due(service, tenant_id, due)
        if started_before is None:
            return
        result = service.run(tenant_id, "schedule", started_before=started_before,
                             due_at=due)
        logs.log(log, logging.INFO, "scheduled sync round", tenant=tenant_id,
                 run=result.run_id, status=result.status, counts=result.counts,
                 error=result.error, due=due.isoformat())
        if result.status == "busy" and scheduler is not None:
            _look_again_at_lease_end(scheduler, service, tenant_id)
    except Exception:  # noqa: BLE001 - a job must survive to run again
        log.exception("sync round crashed for tenant %s", tenant_id)


def _look_again_at_lease_end(scheduler: BaseScheduler, service: SyncService,
                             tenant_id: str) -> None:
    """Run the tenant's job once more just after the lease another process holds ends:
    if that process died, its round is resumed here then; if it is alive, it renewed the
    lease (and this looks again later) or finished (and the round is not due)."""
    with service.maker() as s:
        state = s.get(SyncState, tenant_id)
        until = state.lease_until if state is not None else None
    if until is None:
        return
    scheduler.add_job(run_tenant, "date", run_date=until + dt.timedelta(seconds=1),
                      args=(service, tenant_id, scheduler), id=takeover_job_id(tenant_id),
                      replace_existing=True, misfire_grace_time=None)


def _quarantined(service: SyncService, tenant_id: str) -> bool:
    with service.maker() as s:
        state = s.get(SyncState, tenant_id)
        if state is None or state.quarantined_until is None:
            return False
        now = clock.now()
        last = state.last_started_at
        return state.quarantined_until > now and last is not None and (
            now - last < dt.timedelta(days=1))


def _due(service: SyncService, tenant_id: str, due: dt.datetime) -> dt.datetime | None:
    """Whether a scheduled round due at `due` should start: None if not (no
    registration, or another process started one due within DUE_SHARE of the interval
    before); else the instant the tenant's last round must count from before
    (`last_started_at`), for the round to check again under the lease. A round left
    open (running elsewhere, or to resume) is due."""
    with service.maker() as s:
        state = s.get(SyncState, tenant_id)
        registration = s.get(EntraRegistration, tenant_id)
        if registration is None:
            return None
        cutoff = due - dt.timedelta(minutes=registration.interval_minutes) * DUE_SHARE
        if state is None or state.last_started_at is None or state.run_id is not None:
            return cutoff
        return cutoff if state.last_started_at <= cutoff else None


def sync_jobs(scheduler: BaseScheduler, service: SyncService) -> None:
    """Add, change or drop tenant jobs to match the registrations in the database."""
    with service.maker() as s:
        wanted = {r.tenant_id: r.interval_minutes for r in s.scalars(
            select(EntraRegistration)
            .join(Tenant, Tenant.id == EntraRegistration.tenant_id)
            .where(EntraRegistration.enabled.is_(True), Tenant.closed_at.is_(None)))}
    for job in scheduler.get_jobs():
        # Not the scheduler's own jobs ("sync:refresh" is no tenant): removed, the refresh
        # would have run once, and tenants registered later would never get a job here.
        if job.id.startswith("sync:") and job.id not in OWN_JOBS and job.id[5:] not in wanted:
            job.remove()
    for tenant_id, minutes in wanted.items():
        existing = scheduler.get_job(job_id(tenant_id))
        seconds = minutes * 60
        if existing is not None and getattr(existing.trigger, "interval", None) == \
                dt.timedelta(seconds=seconds):
            continue
        jitter = min(60, seconds // 10)
        # A late run still runs (misfire_grace_time=None): a process with many tenants
        # has its threads busy for a while. The first run is spread over the jitter too,
        # so that a process's tenants do not all start in the same second.
        scheduler.add_job(run_tenant, "interval", seconds=seconds,
                          args=(service, tenant_id, scheduler), id=job_id(tenant_id),
                          replace_existing=True, max_instances=1, coalesce=True,
                          jitter=jitter, misfire_grace_time=None,
                          next_run_time=clock.now() + dt.timedelta(
                              seconds=5 + random.uniform(0, jitter)))  # noqa: S311


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
    scheduler_options.setdefault("executors", {"default": DueTimeExecutor(THREADS)})
    scheduler = BackgroundScheduler(timezone=dt.UTC, **scheduler_options)
    scheduler.add_job(sync_jobs, "interval", seconds=REFRESH_SECONDS,
                      args=(scheduler, service), id=REFRESH_JOB, max_instances=1,
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
