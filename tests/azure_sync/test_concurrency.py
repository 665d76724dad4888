"""Two connector processes' schedulers on one database, firing the same tenant's round
at the same instant: the lease in sync_state lets exactly one of them run it, and the
result is the same as one process running alone.

Each "process" is a SyncService with its own engine (its own connections, as a second
`connector worker` would have) and its own APScheduler BackgroundScheduler running the
production job (`scheduler.sync_jobs` / `run_tenant`); Graph answers with some latency,
so the two rounds would overlap if the lease let them.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, func, select

from azure_sync import scheduler as jobs
from azure_sync.service import SyncService
from connector.config import DatabaseSettings
from connector.db import make_engine, make_sessionmaker
from connector.models import (
    EntraRegistration,
    Event,
    Group,
    Membership,
    SyncRun,
    SyncState,
    User,
)
from tests.azure_sync.harness import Sync

# Two schedulers' rounds against a Graph that answers with latency.
pytestmark = pytest.mark.slow

PAGE_LATENCY = 0.04  # seconds per Graph request: a round of ~10 pages takes ~0.5 s


@dataclass
class Worker:
    """One connector process: its engine, its sync service, its scheduler."""

    name: str
    engine: Engine
    service: SyncService
    scheduler: BackgroundScheduler
    executed: threading.Event


@pytest.fixture
def workers(sync: Sync, database_url: str) -> Iterator[list[Worker]]:
    made = []
    for name in ("worker-a", "worker-b"):
        engine = make_engine(DatabaseSettings(url=database_url, pool_size=3))
        service = SyncService(sync.service.settings, make_sessionmaker(engine),
                              make_sessionmaker(engine, writes=True),
                              verify=sync.service.ca_bundle)
        scheduler = BackgroundScheduler(
            timezone=dt.UTC, executors={"default": jobs.DueTimeExecutor(jobs.THREADS)})
        executed = threading.Event()

        def done(event: JobExecutionEvent, executed: threading.Event = executed) -> None:
            if event.job_id.startswith(("sync:", "sync-takeover:")) and \
                    event.job_id != jobs.REFRESH_JOB:
                executed.set()

        scheduler.add_listener(done, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        scheduler.start()
        made.append(Worker(name, engine, service, scheduler, executed))
    try:
        yield made
    finally:
        for worker in made:
            worker.scheduler.shutdown(wait=True)
            worker.service.http.close()
            worker.engine.dispose()


def fire_together(workers: list[Worker], tenant_id: str) -> None:
    """Schedule the tenant's production job in every worker for the same instant, and
    wait until each has run it."""
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.3)
    for worker in workers:
        worker.executed.clear()
        jobs.sync_jobs(worker.scheduler, worker.service)
        for job in worker.scheduler.get_jobs():  # the reference tenant runs by hand
            if job.id != jobs.job_id(tenant_id):
                job.remove()
        worker.scheduler.get_job(jobs.job_id(tenant_id)).modify(next_run_time=at)
    for worker in workers:  # a round of 9 slow pages took 15 s on a loaded machine
        assert worker.executed.wait(60), f"{worker.name} never ran the job"


def state_of(sync: Sync, tenant_id: str) -> dict[str, Any]:
    """What a tenant holds after sync, by Graph object id (connector ids differ between
    tenants), with its events counted by kind."""
    with sync.session() as s:
        users = {u.external_id: (u.user_name, u.display_name, u.active, u.in_deleted_list,
                                 u.guest, u.removed_at is None, repr(sorted(u.data.items())))
                 for u in s.scalars(select(User).where(User.tenant_id == tenant_id))}
        by_id = dict(s.execute(select(User.id, User.external_id).where(
            User.tenant_id == tenant_id)).all())
        groups = dict(s.execute(select(Group.id, Group.external_id).where(
            Group.tenant_id == tenant_id)).all())
        members = sorted((groups[g], by_id.get(m, groups.get(m))) for g, m in s.execute(
            select(Membership.group_id, Membership.member_id).where(
                Membership.tenant_id == tenant_id)).all())
        events = Counter(dict(s.execute(select(Event.kind, func.count()).where(
            Event.tenant_id == tenant_id, Event.kind.like("user.%"))
            .group_by(Event.kind)).all()))
    return {"users": users, "groups": sorted(groups.values()), "members": members,
            "events": events}


def an_interval_later(sync: Sync, tenant_id: str) -> None:
    """As if the tenant's interval had passed since its last round started (a scheduled
    round is skipped within DUE_SHARE of it: another process ran it)."""
    with sync.session() as s:
        state = s.get(SyncState, tenant_id)
        registration = s.get(EntraRegistration, tenant_id)
        assert state is not None and registration is not None and state.last_started_at
        state.last_started_at -= dt.timedelta(minutes=registration.interval_minutes)
        s.commit()


def rounds_of(runs: list[SyncRun]) -> list[tuple[str, str]]:
    """(kind, final status) per round. On a loaded machine a page may outlast the
    lease: the other process then takes the round over in a new run row (the first
    marked failed); the round is still run once."""
    last: dict[int, SyncRun] = {}
    for run in sorted(runs, key=lambda r: r.id):
        last[run.round_key] = run
    return [(run.kind, run.status) for run in last.values()]


def test_two_schedulers_run_each_round_exactly_once(sync: Sync, workers: list[Worker]
                                                    ) -> None:
    entra = sync.entra
    seeded = entra.seed_users(1800)  # 9 pages of 200
    team = entra.create_group("Team", members=seeded[:30])
    # The same directory synced by one process alone, round for round, into a second
    # tenant: the reference for "the same as one uninterrupted run".
    alone = sync.clone_tenant("Alone")

    sync.graph.knobs.latency = PAGE_LATENCY
    fire_together(workers, sync.tenant_id)
    with sync.session() as s:
        runs = list(s.scalars(select(SyncRun).where(SyncRun.tenant_id == sync.tenant_id)))
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None and state.lease_owner is None and state.run_id is None
    assert rounds_of(runs) == [("full", "succeeded")]
    assert sync.graph.counters["pages:users"] == 9  # one process read the 9 pages
    sync.graph.knobs.latency = 0
    assert alone.run().status == "succeeded"
    assert state_of(sync, sync.tenant_id) == state_of(alone, alone.tenant_id)

    # Changes, then both fire again: one incremental round, the same as alone.
    entra.disable_user(seeded[5])
    entra.update_user(seeded[6], displayName="Renamed")
    entra.add_user("new@contoso.example")
    entra.remove_members(team, seeded[:3])
    sync.graph.knobs.latency = PAGE_LATENCY
    users_pages = sync.graph.counters["pages:users"]
    an_interval_later(sync, sync.tenant_id)
    fire_together(workers, sync.tenant_id)
    assert sync.graph.counters["pages:users"] == users_pages + 1
    with sync.session() as s:
        kinds = rounds_of(list(s.scalars(
            select(SyncRun).where(SyncRun.tenant_id == sync.tenant_id).order_by(SyncRun.id))))
    assert kinds == [("full", "succeeded"), ("incremental", "succeeded")]
    sync.graph.knobs.latency = 0
    assert alone.run().status == "succeeded"
    got = state_of(sync, sync.tenant_id)
    assert got == state_of(alone, alone.tenant_id)
    assert got["events"]["user.created"] == 1801 and got["events"]["user.status"] == 1
    assert sync.users()[seeded[5]].active is False
    assert len(got["members"]) == 27


def test_each_tenant_syncs_once_per_interval_whatever_the_processes(
        sync: Sync, workers: list[Worker]) -> None:
    """Every worker process has a job per tenant firing once per interval: the second
    process to fire in an interval (the first one's round over) starts no round; in the
    next interval one of them does. A round left open (its process died) is resumed
    whenever a job fires."""
    sync.entra.seed_users(300)
    first, second = workers
    fire_together([first], sync.tenant_id)
    fire_together([second], sync.tenant_id)  # the same interval: nothing to do
    with sync.session() as s:
        runs = list(s.scalars(select(SyncRun).where(SyncRun.tenant_id == sync.tenant_id)))
    assert rounds_of(runs) == [("full", "succeeded")]

    an_interval_later(sync, sync.tenant_id)
    fire_together([second], sync.tenant_id)
    fire_together([first], sync.tenant_id)
    with sync.session() as s:
        runs = list(s.scalars(select(SyncRun).where(SyncRun.tenant_id == sync.tenant_id)))
    assert rounds_of(runs) == [("full", "succeeded"), ("incremental", "succeeded")]

    # A round whose process died (open, its lease expired) is resumed at once.
    with sync.session() as s:
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None
        dead = SyncRun(tenant_id=sync.tenant_id, kind="incremental", status="running",
                       trigger="schedule", started_at=dt.datetime.now(dt.UTC), pages=0,
                       counts={})
        s.add(dead)
        s.flush()
        state.run_id, state.phase = dead.id, "users"
        state.next_link = state.users_delta_link
        state.last_started_at = dt.datetime.now(dt.UTC)
        state.lease_owner, state.lease_until = "dead-process", dt.datetime.now(dt.UTC)
        s.commit()
    fire_together([first], sync.tenant_id)
    with sync.session() as s:
        runs = list(s.scalars(select(SyncRun).where(SyncRun.tenant_id == sync.tenant_id)
                              .order_by(SyncRun.id)))
    assert runs[-2].status == "failed" and "stopped before it finished" in (runs[-2].error or "")
    assert runs[-1].status == "succeeded"


def test_a_round_run_elsewhere_between_the_look_and_the_lease_is_not_run_again(
        sync: Sync, workers: list[Worker]) -> None:
    """The due check reads the tenant's last round, then the round takes the lease: a
    rival process may run the whole round in between (a small directory takes less
    time than this process needs to build its Graph client under load). The check is
    made again under the lease, so the tenant is still synced once."""
    sync.entra.seed_users(50)
    first, second = workers

    class Slower(SyncService):
        def client_for(self, registration: EntraRegistration, **overrides: Any) -> Any:
            assert first.service.run(sync.tenant_id, "schedule").status == "succeeded"
            return super().client_for(registration, **overrides)

    late = Slower(second.service.settings, second.service.maker,
                  second.service.write_maker, verify=second.service.ca_bundle)
    try:
        jobs.run_tenant(late, sync.tenant_id)
    finally:
        late.http.close()
    with sync.session() as s:
        runs = list(s.scalars(select(SyncRun).where(SyncRun.tenant_id == sync.tenant_id)))
    assert rounds_of(runs) == [("full", "succeeded")]


def test_rounds_that_start_late_still_run(sync: Sync) -> None:
    """A process with many tenants has its threads busy: a round that starts seconds
    after its time (APScheduler's default grace is one second) still runs, rather than
    being dropped until the next interval."""
    sync.entra.seed_users(400)  # two pages
    others = [sync.clone_tenant(f"Late {n}") for n in range(2)]
    sync.graph.knobs.latency = 0.4  # each round takes more than a second
    scheduler = BackgroundScheduler(timezone=dt.UTC,
                                    executors={"default": {"type": "threadpool",
                                                           "max_workers": 1}})
    ended: list[tuple[str, int]] = []
    done = threading.Event()

    def count(event: JobExecutionEvent) -> None:
        if event.job_id.startswith("sync:") and event.job_id != jobs.REFRESH_JOB:
            ended.append((event.job_id, event.code))
            if len(ended) == 3:
                done.set()

    scheduler.add_listener(count, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    scheduler.start()
    try:
        jobs.sync_jobs(scheduler, sync.service)
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.3)
        for job in scheduler.get_jobs():
            assert job.misfire_grace_time is None
            job.modify(next_run_time=at)
        assert done.wait(60), ended
    finally:
        scheduler.shutdown(wait=True)
    assert sorted(code for _, code in ended) == [EVENT_JOB_EXECUTED] * 3
    with sync.session() as s:
        statuses = Counter(s.scalars(select(SyncRun.status).where(SyncRun.tenant_id.in_(
            [sync.tenant_id, *(o.tenant_id for o in others)]))))
    assert statuses == {"succeeded": 3}


def test_a_round_that_ran_late_does_not_push_the_next_one_back(
        sync: Sync, workers: list[Worker]) -> None:
    """A worker whose threads are all busy runs a tenant's round late (at start-up, with
    many tenants, nearly an interval late). The tenant's next firing, one interval after
    the late one was due, still starts a round: the once-per-interval check compares
    the times the jobs were due, not the late round's start (which is seconds before
    that next firing, and made it skip: the tenant then waited up to two intervals).
    Another process's job due in that same interval still starts none."""
    sync.entra.seed_users(50)
    with sync.session() as s:
        registration = s.get(EntraRegistration, sync.tenant_id)
        assert registration is not None
        interval = dt.timedelta(minutes=registration.interval_minutes)
    busy = BackgroundScheduler(timezone=dt.UTC,
                               executors={"default": jobs.DueTimeExecutor(1)})
    ran = threading.Event()
    busy.add_listener(lambda e: ran.set() if e.job_id == jobs.job_id(sync.tenant_id)
                      else None, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    busy.start()
    try:
        jobs.sync_jobs(busy, sync.service)
        for job in busy.get_jobs():
            if job.id != jobs.job_id(sync.tenant_id):
                job.remove()
        # The pool's one thread is busy (another tenant's long round) while the job is
        # due, and it was due nearly an interval ago: its round runs late.
        now = dt.datetime.now(dt.UTC)
        busy.add_job(threading.Event().wait, args=(1.5,), next_run_time=now)
        due = now - interval + dt.timedelta(seconds=4)
        busy.get_job(jobs.job_id(sync.tenant_id)).modify(next_run_time=due)
        assert ran.wait(30), "the late round never ran"
    finally:
        busy.shutdown(wait=True)
    with sync.session() as s:
        runs = list(s.scalars(select(SyncRun).where(SyncRun.tenant_id == sync.tenant_id)))
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None and state.last_started_at == due  # counts from when due
    assert rounds_of(runs) == [("full", "succeeded")]
    assert runs[0].started_at - due > interval * 0.9  # it did run late

    # One interval after the late job was due (a few seconds after the late round
    # began), the tenant's job fires again: its round runs.
    first, second = workers
    fire_together([first], sync.tenant_id)
    with sync.session() as s:
        runs = list(s.scalars(select(SyncRun).where(SyncRun.tenant_id == sync.tenant_id)))
    assert runs[1].started_at - runs[0].started_at < interval * (1 - jobs.DUE_SHARE)
    assert rounds_of(runs) == [("full", "succeeded"), ("incremental", "succeeded")]
    # Another process's job due in the same interval: nothing to do.
    fire_together([second], sync.tenant_id)
    with sync.session() as s:
        assert s.scalar(select(func.count()).select_from(SyncRun).where(
            SyncRun.tenant_id == sync.tenant_id)) == 2


def test_the_scheduler_keeps_refreshing_its_tenant_jobs(sync: Sync) -> None:
    """The job that adds the jobs of tenants registered later is itself named sync:…;
    it must not remove itself as a tenant without a registration."""
    scheduler = jobs.start(sync.service)
    try:
        for _ in range(100):
            if scheduler.get_job(jobs.job_id(sync.tenant_id)) is not None:
                break
            threading.Event().wait(0.1)
        assert scheduler.get_job(jobs.job_id(sync.tenant_id)) is not None
        assert scheduler.get_job(jobs.REFRESH_JOB) is not None
    finally:
        scheduler.shutdown(wait=True)


def test_a_round_whose_process_died_is_taken_over_when_its_lease_ends(
        sync: Sync, workers: list[Worker]) -> None:
    """A process finds the round busy (a process that has since died holds its lease):
    it looks again right after the lease ends and resumes the round then, not an
    interval later; the tenant's next round stays due an interval after the round
    began (the takeover does not push it back by an interval)."""
    sync.entra.seed_users(400)  # two pages: the process dies after the first

    class Killed(BaseException):
        pass

    def die(index: int, phase: str) -> None:
        raise Killed

    with pytest.raises(Killed):
        sync.run(after_page=die)
    first, _ = workers
    with sync.session() as s:
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None and state.run_id is not None
        started = state.last_started_at
        state.lease_owner = "gone-host:4242:0123456789abcdef"
        state.lease_until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
        s.commit()
    jobs.run_tenant(first.service, sync.tenant_id, first.scheduler)
    assert first.scheduler.get_job(jobs.takeover_job_id(sync.tenant_id)) is not None
    assert first.executed.wait(30), "the takeover never ran"
    with sync.session() as s:
        runs = list(s.scalars(select(SyncRun).where(SyncRun.tenant_id == sync.tenant_id)
                              .order_by(SyncRun.id)))
    assert [r.status for r in runs] == ["failed", "succeeded"]
    assert "stopped before it finished" in (runs[0].error or "")
    assert runs[1].round_id == runs[0].id and runs[1].trigger == "schedule"
    assert len(sync.users()) == 400
    with sync.session() as s:  # the next round is due an interval after the round began
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None and state.last_started_at == started
