"""Several connector processes on one PostgreSQL database, through PgBouncer (issue 19,
point 3, scaled down; bench/fleet_bench.py runs it at full size).

Two `connector serve` (schedulers external) and two `connector worker` processes, all
through a pgbouncer in transaction pooling mode, with 16 tenants registered for Entra
sync against the loopback fake Graph (1-minute interval, the shortest there is) and 3
tenants fed over SCIM, every tenant created in an earlier month. While the first
rounds run, one worker is killed with SIGKILL mid-round and a new one started (what
the supervisor of `connector serve` does). Read from the database at the end:

- every synced tenant ran exactly two rounds (the first interval's and the second's),
  consecutive rounds due at least DUE_SHARE of the interval apart (never twice in one
  interval: a round that started late counts from when its job was due, which the
  workers log), the last one succeeded (none starved);
- no two runs of a tenant overlap (one process at a time);
- each round the kill interrupted is marked failed ("stopped before it finished")
  and was resumed in a new run of the same round, by another process, which succeeded;
- every due month of every tenant is closed exactly once (one closed row, one
  billing.month_closed event), the synced tenants' after their first round.

SQLite is one process's database (one writer, no PgBouncer): this is PostgreSQL only.
Its wall time is bound by the two 1-minute intervals and the processes' start: about
2 minutes on a loaded 2-core machine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine, func, select, update

from azure_sync import secrets
from azure_sync.scheduler import DUE_SHARE
from azure_sync.service import register
from billing.catch_up import due_months, first_month
from connector import events, migrate
from connector.config import AzureSyncSettings, BillingSettings, DatabaseSettings
from connector.db import make_engine, make_sessionmaker
from connector.events import WriteContext
from connector.models import BillingClose, Event, SyncRun, SyncState, Tenant
from connector.status import Source
from tests.fakes.entra_token import FakeTokenEndpoint
from tests.fakes.fixtures import fake_entra, fake_graph, fake_tls  # noqa: F401
from tests.fakes.graph import FakeGraph
from tests.fakes.tls import LoopbackTLS
from tests.support.clients import make_tenant
from tests.support.pgbouncer import bounced_database
from tests.support.served import served

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

SYNCED, SCIM_FED = 16, 3
USERS = 30  # per Entra directory: 3 pages of 10
INTERVAL = dt.timedelta(minutes=1)
LEASE_SECONDS = 8  # takeover after a kill; well above a page's time under load
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def wait_for(what: str, check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


class Fleet:
    """The processes of the test, their environment and their logs."""

    def __init__(self, url: str, tmp_path: Path, env: dict[str, str]) -> None:
        self.url, self.tmp_path, self.env = url, tmp_path, env
        self.workers: dict[int, subprocess.Popen[bytes]] = {}

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "CONNECTOR_CONFIG": str(self.tmp_path / "none.toml"),
               "CONNECTOR_DATABASE__URL": self.url, **self.env}
        with (self.tmp_path / f"{name}.log").open("w") as out:
            worker = subprocess.Popen([sys.executable, "-m", "connector.cli", "worker"],
                                      env=env, cwd=self.tmp_path, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.workers[worker.pid] = worker
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers.values():
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers.values():
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.tmp_path.glob("*.log")))


@pytest.fixture
def bounced() -> Iterator[str]:
    with bounced_database(pool_size=6) as url:
        yield url


def seed(engine: Engine, graph: FakeGraph, entra: FakeTokenEndpoint,
         settings: AzureSyncSettings) -> tuple[list[str], list[tuple[str, str]]]:
    """The synced tenants (each its own Entra directory and app) and the SCIM-fed ones
    (id, token), all created 40 days ago: their first months are due to close."""
    maker = make_sessionmaker(engine)
    synced, fed = [], []
    for n in range(SYNCED):
        tenant_id, _ = make_tenant(engine, f"Synced {n}")
        directory_id, client_id, secret = f"dir-{n:04d}-{tenant_id[:8]}", f"app-{n}", "s3cret"
        entra.add_app(directory_id, client_id, secret=secret)
        graph.directory(directory_id).seed_users(USERS)
        with maker() as s:
            register(s, settings, WriteContext(tenant_id, Source.ADMIN, "test", "test",
                                               dt.datetime.now(dt.UTC)),
                     directory_id=directory_id, client_id=client_id, secret=secret,
                     authority_host=entra.url, graph_base_url=graph.url, interval_minutes=1)
            s.commit()
        synced.append(tenant_id)
    for n in range(SCIM_FED):
        fed.append(make_tenant(engine, f"Fed {n}"))
    with maker() as s:
        s.execute(update(Tenant).values(
            created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=40)))
        s.commit()
    return synced, fed


def test_two_servers_and_two_workers_share_one_database(
        bounced: str, tmp_path: Path, fake_tls: LoopbackTLS,  # noqa: F811
        fake_entra: FakeTokenEndpoint, fake_graph: FakeGraph) -> None:  # noqa: F811
    key = secrets.new_key()
    env = {"CONNECTOR_DATABASE__PGBOUNCER": "true", "CONNECTOR_DATABASE__POOL_SIZE": "3",
           "CONNECTOR_AZURE_SYNC__ENCRYPTION_KEY": key,
           "CONNECTOR_AZURE_SYNC__ALLOW_PRIVATE_HOSTS": "true",
           "CONNECTOR_AZURE_SYNC__CA_BUNDLE": str(fake_tls.ca_path),
           "CONNECTOR_AZURE_SYNC__GRAPH_SCOPE": "https://graph.microsoft.com/.default",
           "CONNECTOR_AZURE_SYNC__LEASE_SECONDS": str(LEASE_SECONDS),
           "CONNECTOR_BILLING__CLOSE_CHECK_MINUTES": "1",
           "CONNECTOR_BILLING__CLOSE_PARALLEL_TENANTS": "1",
           "CONNECTOR_SERVER__SCHEDULERS": "external", "CONNECTOR_SERVER__THREADS": "2"}
    engine = make_engine(DatabaseSettings(url=bounced, pgbouncer=True, pool_size=2))
    fleet = Fleet(bounced, tmp_path, env)
    try:
        migrate.upgrade(engine)
        settings = AzureSyncSettings(encryption_key=key, allow_private_hosts=True)
        synced, fed = seed(engine, fake_graph, fake_entra, settings)
        fake_graph.knobs.page_size = fake_graph.knobs.max_page_size = 10
        fake_graph.knobs.latency = 0.25  # a round takes a few seconds: there is a "mid"
        first = [fleet.start_worker("worker-a"), fleet.start_worker("worker-b")]
        killed = kill_mid_round(engine, fleet, first)
        fleet.start_worker("worker-c")  # as the server's supervisor would
        with ExitStack() as stack:
            bases = [stack.enter_context(served(bounced, tmp_path, "--workers", "1",
                                                log_name=f"serve-{n}.log", **env))
                     for n in range(2)]
            scim_traffic(bases, fed)
            fake_graph.knobs.latency = 0.05
            wait_for("the killed rounds to be resumed",
                     lambda: all(resumed(engine, run_id) for run_id in killed.values()), 60)
            wait_for("two rounds of every tenant and every due month closed",
                     lambda: two_rounds_each(engine, synced) and closes_done(engine), 150)
        fleet.stop_workers()
        check_rounds(engine, synced, killed, fleet)
        check_closes(engine, [*synced, *(t for t, _ in fed)])
        assert "Traceback" not in fleet.logs()
    finally:
        fleet.stop_workers()
        engine.dispose()


def kill_mid_round(engine: Engine, fleet: Fleet, workers: list[subprocess.Popen[bytes]]
                   ) -> dict[str, int]:
    """SIGKILL the first of `workers` seen holding a round's lease; return the rounds it
    held open when it died (tenant: run id)."""
    pids = {w.pid for w in workers}
    victim: list[int] = []

    def holding() -> bool:
        with make_sessionmaker(engine)() as s:
            for owner in s.scalars(select(SyncState.lease_owner).where(
                    SyncState.run_id.is_not(None), SyncState.lease_owner.is_not(None))):
                pid = int(str(owner).split(":")[1])
                if pid in pids:
                    os.kill(pid, signal.SIGKILL)
                    fleet.workers[pid].wait()
                    victim.append(pid)
                    return True
        return False

    wait_for("a worker to hold a round", holding, 60)
    with make_sessionmaker(engine)() as s:
        open_rounds = {tenant_id: run_id for tenant_id, run_id, owner in s.execute(
            select(SyncState.tenant_id, SyncState.run_id, SyncState.lease_owner).where(
                SyncState.run_id.is_not(None), SyncState.lease_owner.is_not(None)))
            if f":{victim[0]}:" in str(owner)}
    assert open_rounds, "the killed worker held no round open (it finished in between)"
    return open_rounds


def resumed(engine: Engine, run_id: int) -> bool:
    with make_sessionmaker(engine)() as s:
        return bool(s.scalar(select(func.count()).where(
            SyncRun.round_id == run_id, SyncRun.status == "succeeded")))


def scim_traffic(bases: list[str], fed: list[tuple[str, str]]) -> None:
    """SCIM writes through one server, read back through the other, meanwhile."""
    for n, (_, token) in enumerate(fed):
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
        made = requests.post(f"{bases[0]}/scim/v2/Users", headers=auth, timeout=30,
                             json={"schemas": [USER], "userName": f"fed{n}@example.com"})
        assert made.status_code == 201, made.text
        got = requests.get(f"{bases[1]}/scim/v2/Users/{made.json()['id']}", headers=auth,
                           timeout=30)
        assert got.status_code == 200 and got.json()["userName"] == f"fed{n}@example.com"


def rounds_by_tenant(engine: Engine, tenants: list[str]) -> dict[str, list[list[SyncRun]]]:
    """Each tenant's rounds in order, each round its runs in order."""
    with make_sessionmaker(engine)() as s:
        runs = list(s.scalars(select(SyncRun).where(SyncRun.tenant_id.in_(tenants))
                              .order_by(SyncRun.id)))
    out: dict[str, dict[int, list[SyncRun]]] = {t: {} for t in tenants}
    for run in runs:
        out[run.tenant_id].setdefault(run.round_key, []).append(run)
    return {t: list(rounds.values()) for t, rounds in out.items()}


def two_rounds_each(engine: Engine, tenants: list[str]) -> bool:
    return all(len(rounds) >= 2 and rounds[-1][-1].status == "succeeded"
               for rounds in rounds_by_tenant(engine, tenants).values())


def closes_done(engine: Engine) -> bool:
    with make_sessionmaker(engine)() as s:
        tenants = list(s.scalars(select(Tenant)))
        return all(not due_months(s, t, BillingSettings(), dt.datetime.now(dt.UTC))
                   for t in tenants)


def due_times(fleet: Fleet) -> dict[int, dt.datetime]:
    """When each scheduled round's job was due, by run id, from the workers' logs."""
    due = {}
    for line in fleet.logs().splitlines():
        if '"scheduled sync round"' in line:
            entry = json.loads(line)
            if entry.get("run") is not None:
                due[entry["run"]] = dt.datetime.fromisoformat(entry["due"])
    return due


def check_rounds(engine: Engine, synced: list[str], killed: dict[str, int],
                 fleet: Fleet) -> None:
    by_tenant = rounds_by_tenant(engine, synced)
    counts = Counter(len(rounds) for rounds in by_tenant.values())
    assert counts == {2: len(synced)}, counts  # once per interval, none starved
    due = due_times(fleet)
    for tenant_id, rounds in by_tenant.items():
        starts = [runs[0].started_at for runs in rounds]
        # A first round that ran late counts from when it was due (the killed one's
        # worker logged nothing: its start, as it was not late but killed).
        counted = min(starts[0], due.get(rounds[0][0].id, starts[0]))
        assert starts[1] - counted >= INTERVAL * DUE_SHARE, (tenant_id, starts, counted)
        runs = sorted((r for runs in rounds for r in runs), key=lambda r: r.started_at)
        for before, after in zip(runs, runs[1:], strict=False):
            assert before.finished_at is not None and before.finished_at <= after.started_at, \
                f"runs {before.id} and {after.id} of {tenant_id} overlap"
        assert all(runs[-1].status == "succeeded" for runs in rounds), rounds
        for runs in rounds:  # a round is interrupted only by the kill
            assert [r.status for r in runs[:-1]] == ["failed"] * (len(runs) - 1)
            if runs[0].id == killed.get(tenant_id):
                assert "stopped before it finished" in (runs[0].error or "")
                assert len(runs) == 2
            else:
                assert len(runs) == 1, (tenant_id, [(r.status, r.error) for r in runs])


def ended_months(tenant: Tenant, now: dt.datetime) -> list[str]:
    """Every month of the tenant whose collection window is over, closed or not."""
    grace = dt.timedelta(minutes=BillingSettings().grace_minutes)
    months, month = [], first_month(tenant)
    while month.end(tenant.time_zone) + grace <= now:
        months.append(str(month))
        month = month.next()
    return months


def check_closes(engine: Engine, tenants: list[str]) -> None:
    with make_sessionmaker(engine)() as s:
        closed = Counter(s.execute(select(BillingClose.tenant_id, BillingClose.month).where(
            BillingClose.state == "closed")).all())
        announced = Counter((e.tenant_id, e.new_value["month"]) for e in s.scalars(
            select(Event).where(Event.kind == events.MONTH_CLOSED)))
        now = dt.datetime.now(dt.UTC)
        wanted = {(t.id, m) for t in s.scalars(select(Tenant)) for m in ended_months(t, now)}
    assert len({t for t, _ in wanted}) == len(tenants) and len(wanted) >= len(tenants)
    assert set(closed) == wanted and set(closed.values()) == {1}, closed
    assert announced == closed
