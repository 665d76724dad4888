""""Run now" and "Restart provisioning" with the schedulers in `connector worker` (the
default): the web process records a request and a worker runs the round, exactly once
however many workers there are; with no worker alive, the admin is told so at once.
With server.schedulers = "web" the round runs in the web process, as before.
(SQLite and PostgreSQL, against the fake Entra ID and Graph.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from azure_sync import scheduler
from connector import heartbeat
from connector.app import create_app
from connector.db import make_sessionmaker
from connector.models import SyncRequest, SyncRun, SyncState, WorkerBeat
from tests.azure_sync.harness import request_taker
from tests.azure_sync.test_api import register, sync_settings, wait_for_run_after
from tests.azure_sync.test_pages import flash_of
from tests.conftest import ApiClient, make_admin, make_tenant
from tests.fakes.fixtures import FakeApp
from tests.fakes.graph import FakeGraph
from tests.web.conftest import signed_in
from tests.web.test_pages import text


def api_for(settings: Any, engine: Engine) -> ApiClient:
    admin_id, token = make_admin(engine, "partner@example.com")
    return ApiClient(create_app(settings, engine=engine).test_client(), token, admin_id,
                     "partner@example.com")


def runs_of(engine: Engine, tenant_id: str) -> list[SyncRun]:
    with make_sessionmaker(engine)() as s:
        return list(s.scalars(select(SyncRun).where(SyncRun.tenant_id == tenant_id)
                              .order_by(SyncRun.id)))


def requests_left(engine: Engine) -> int:
    with make_sessionmaker(engine)() as s:
        return s.scalar(select(func.count()).select_from(SyncRequest)) or 0


def wait_until_settled(engine: Engine, tenant_ids: list[str], rounds: int,
                       seconds: float = 30) -> None:
    """Until every tenant has `rounds` finished rounds, no request is left and no lease
    is held; then two more polls of every worker, so that a second run would show."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with make_sessionmaker(engine)() as s:
            finished = [s.scalar(select(func.count()).select_from(SyncRun).where(
                SyncRun.tenant_id == t, SyncRun.status != "running")) for t in tenant_ids]
            held = s.scalar(select(func.count()).select_from(SyncState)
                            .where(SyncState.lease_owner.is_not(None)))
        if all(n is not None and n >= rounds for n in finished) and not held \
                and not requests_left(engine):
            time.sleep(2 * scheduler.REQUEST_POLL_SECONDS + 0.5)
            return
        time.sleep(0.05)
    raise AssertionError("the requested rounds did not finish")


def test_run_now_is_run_once_by_one_of_two_workers(
        database_url: str, engine: Engine, fake_tls: Any, tmp_path: Path,
        fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    settings = sync_settings(database_url, fake_tls, tmp_path)
    fake_graph.directory(fake_app.tenant_id).seed_users(5)
    api = api_for(settings, engine)
    tenants = [make_tenant(engine, f"Twice {i}")[0] for i in range(4)]
    with ExitStack() as stack:
        # Two workers, paused until the requests are in, so that both find them.
        workers = [stack.enter_context(request_taker(settings, engine, paused=True))
                   for _ in range(2)]
        _beat_as(engine, "another worker")  # their beats are paused too
        for tenant_id in tenants:
            assert register(api, tenant_id, fake_app).status_code == 200
        asked = [api.post(f"/tenants/{t}/entra/runs") for t in tenants]
        # Asked again before a worker took it: still the one round.
        again = api.post(f"/tenants/{tenants[0]}/entra/runs")
        assert all(a.status_code == 202 for a in asked), [a.json for a in asked]
        assert asked[0].json["status"] == "requested" and again.status_code == 202
        assert requests_left(engine) == len(tenants)
        for worker in workers:
            worker.resume()
        wait_until_settled(engine, tenants, 1)
    for tenant_id in tenants:
        runs = runs_of(engine, tenant_id)
        assert [(r.trigger, r.status) for r in runs] == [("manual", "succeeded")], runs
        assert runs[0].counts["created"] == 5
    # Both workers stopped cleanly: none is left to take a request.
    with make_sessionmaker(engine)() as s:
        assert s.scalar(select(func.count()).select_from(WorkerBeat)
                        .where(WorkerBeat.host != "another worker")) == 0


def _beat_as(engine: Engine, host: str) -> None:
    import datetime as dt

    with make_sessionmaker(engine)() as s:
        now = dt.datetime.now(dt.UTC)
        s.add(WorkerBeat(id=f"{host}:1:x", host=host, pid=1, started_at=now, beat_at=now))
        s.commit()


def test_of_two_workers_that_saw_a_request_one_takes_it(
        database_url: str, engine: Engine, fake_tls: Any, tmp_path: Path) -> None:
    import datetime as dt

    from azure_sync import on_demand

    tenant_id, _ = make_tenant(engine, "Claimed")
    maker = make_sessionmaker(engine, writes=True)
    now = dt.datetime.now(dt.UTC)
    with maker() as s:
        on_demand.ask(s, tenant_id, "manual", now)
        s.commit()
    with maker() as s:  # asked again, for a restart: the one request, now a restart
        on_demand.ask(s, tenant_id, "restart", now)
        on_demand.ask(s, tenant_id, "manual", now)
        s.commit()
    with make_sessionmaker(engine)() as first, make_sessionmaker(engine)() as second:
        seen = on_demand.waiting(first, now), on_demand.waiting(second, now)
    assert seen == ([(tenant_id, "restart")], [(tenant_id, "restart")])
    assert [on_demand.take(maker, tenant_id, "restart") for _ in range(2)] == [True, False]
    assert requests_left(engine) == 0


def test_restart_goes_to_the_worker(database_url: str, engine: Engine, fake_tls: Any,
                                    tmp_path: Path, fake_app: FakeApp,
                                    fake_graph: FakeGraph) -> None:
    settings = sync_settings(database_url, fake_tls, tmp_path)
    fake_graph.directory(fake_app.tenant_id).seed_users(3)
    api = api_for(settings, engine)
    tenant_id, _ = make_tenant(engine, "Restarted by a worker")
    with request_taker(settings, engine):
        register(api, tenant_id, fake_app)
        restarted = api.post(f"/tenants/{tenant_id}/entra/restart")
        assert restarted.status_code == 202, restarted.json
        assert restarted.json["status"] == "requested"
        run = wait_for_run_after(api, tenant_id, 0)
    assert (run["trigger"], run["kind"], run["status"]) == ("restart", "full", "succeeded")


def test_without_a_worker_the_admin_is_told_at_once(
        database_url: str, engine: Engine, fake_tls: Any, tmp_path: Path,
        fake_app: FakeApp) -> None:
    settings = sync_settings(database_url, fake_tls, tmp_path)
    api = api_for(settings, engine)
    tenant_id, _ = make_tenant(engine, "Nobody home")
    register(api, tenant_id, fake_app)
    # A worker ran, and stopped: its heartbeat left with it.
    with request_taker(settings, engine):
        deadline = time.monotonic() + 10
        while not _workers_alive(engine):
            assert time.monotonic() < deadline, "the worker never beat"
            time.sleep(0.05)
    for path in ("runs", "restart"):
        refused = api.post(f"/tenants/{tenant_id}/entra/{path}")
        assert refused.status_code == 409, refused.json
        assert "No worker process is running" in refused.json["detail"]
        assert "Start `connector worker`" in refused.json["detail"]
    assert requests_left(engine) == 0 and runs_of(engine, tenant_id) == []
    audit = [a["action"] for a in api.get(f"/tenants/{tenant_id}/audit").json["items"]]
    assert "entra.run_requested" not in audit and "entra.restarted" not in audit
    # The web UI says the same on its problem page.
    web = signed_in(create_app(settings, engine=engine), engine, "ui@example.com")
    for path in ("run", "restart"):
        page = web.follow(web.post(f"/admin/tenants/{tenant_id}/entra/{path}"))
        assert "No worker process is running" in flash_of(page), text(page)
    # A worker whose beat went stale (killed, not stopped) counts for none.
    import datetime as dt

    with make_sessionmaker(engine)() as s:
        s.add(WorkerBeat(id="gone:1:x", host="gone", pid=1,
                         started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                         beat_at=dt.datetime.now(dt.UTC) - dt.timedelta(
                             seconds=heartbeat.STALE_SECONDS + 5)))
        s.commit()
    assert api.post(f"/tenants/{tenant_id}/entra/runs").status_code == 409


def _workers_alive(engine: Engine) -> int:
    import datetime as dt

    with make_sessionmaker(engine)() as s:
        return heartbeat.alive(s, dt.datetime.now(dt.UTC))


def test_with_schedulers_in_the_web_process_the_round_runs_there(
        database_url: str, engine: Engine, fake_tls: Any, tmp_path: Path,
        fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    settings = sync_settings(database_url, fake_tls, tmp_path, schedulers="web")
    fake_graph.directory(fake_app.tenant_id).seed_users(2)
    api = api_for(settings, engine)
    tenant_id, _ = make_tenant(engine, "In the web process")
    register(api, tenant_id, fake_app)
    started = api.post(f"/tenants/{tenant_id}/entra/runs")  # no worker anywhere
    assert started.status_code == 202 and started.json["status"] == "started"
    run = wait_for_run_after(api, tenant_id, 0)
    assert (run["trigger"], run["status"]) == ("manual", "succeeded")
    assert requests_left(engine) == 0


def test_a_connector_worker_process_runs_the_request(
        database_url: str, engine: Engine, fake_tls: Any, tmp_path: Path,
        fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    """The real thing: `connector worker` in a process of its own takes the request."""
    settings = sync_settings(database_url, fake_tls, tmp_path)
    fake_graph.directory(fake_app.tenant_id).seed_users(4)
    api = api_for(settings, engine)
    tenant_id, _ = make_tenant(engine, "Worker process")
    register(api, tenant_id, fake_app)
    key = settings.azure_sync.encryption_key
    env = {**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
           "CONNECTOR_DATABASE__URL": database_url,
           "CONNECTOR_AZURE_SYNC__ENCRYPTION_KEY": key,
           "CONNECTOR_AZURE_SYNC__CA_BUNDLE": str(fake_tls.ca_path),
           "CONNECTOR_AZURE_SYNC__ALLOW_PRIVATE_HOSTS": "true",
           "CONNECTOR_AZURE_SYNC__GRAPH_SCOPE": "https://graph.microsoft.com/.default",
           "CONNECTOR_WEBHOOKS__ENABLED": "false"}
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "connector.cli", "worker"], env=env,
                                  cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _workers_alive(engine):
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        asked = api.post(f"/tenants/{tenant_id}/entra/runs")
        assert asked.status_code == 202, asked.json
        run = wait_for_run_after(api, tenant_id, 0, seconds=30)
        assert (run["trigger"], run["status"], run["counts"]["created"]) == (
            "manual", "succeeded", 4), log.read_text()
    finally:
        worker.terminate()
        assert worker.wait(timeout=30) == 0, log.read_text()
    assert "Sync worker stopped." in log.read_text()
    assert _workers_alive(engine) == 0  # stopped cleanly: it said so at once


def test_the_refresh_job_outlives_its_own_pass(engine: Engine, fake_tls: Any,
                                               database_url: str, tmp_path: Path) -> None:
    """The job that keeps the tenants' jobs in step with the registrations is not one of
    them: a pass leaves it (and the request job) in place."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from azure_sync.service import SyncService

    settings = sync_settings(database_url, fake_tls, tmp_path)
    service = SyncService(settings.azure_sync, make_sessionmaker(engine))
    jobs = BackgroundScheduler()
    jobs.start(paused=True)
    try:
        jobs.add_job(print, "interval", seconds=60, id="sync:refresh")
        scheduler.add_request_job(jobs, service)
        scheduler.sync_jobs(jobs, service)
        assert {j.id for j in jobs.get_jobs()} == {"sync:refresh", "sync:requests"}
    finally:
        jobs.shutdown(wait=False)


def test_the_default_server_hands_run_now_to_its_own_worker(
        database_url: str, engine: Engine, fake_tls: Any, tmp_path: Path,
        fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    """`connector serve` as it comes (gevent, schedulers in its supervised `connector
    worker`): "Run now" over HTTP is answered at once, and its worker runs the round."""
    import requests

    from tests.support.served import served

    settings = sync_settings(database_url, fake_tls, tmp_path)
    fake_graph.directory(fake_app.tenant_id).seed_users(3)
    tenant_id, _ = make_tenant(engine, "Served")
    _admin, token = make_admin(engine, "partner@example.com")
    env = {"CONNECTOR_SERVER__SCHEDULERS": "worker",
           "CONNECTOR_AZURE_SYNC__ENCRYPTION_KEY": settings.azure_sync.encryption_key,
           "CONNECTOR_AZURE_SYNC__CA_BUNDLE": str(fake_tls.ca_path),
           "CONNECTOR_AZURE_SYNC__ALLOW_PRIVATE_HOSTS": "true",
           "CONNECTOR_AZURE_SYNC__GRAPH_SCOPE": "https://graph.microsoft.com/.default",
           "CONNECTOR_WEBHOOKS__ENABLED": "false"}
    with served(database_url, tmp_path, **env) as base:
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {token}"
        entra = f"{base}/api/v1/tenants/{tenant_id}/entra"
        made = api.put(entra, json={
            "directoryId": fake_app.tenant_id, "clientId": fake_app.client_id,
            "clientSecret": fake_app.client_secret, "authorityHost": fake_app.authority_host,
            "graphBaseUrl": fake_app.graph_base_url}, timeout=30)
        assert made.status_code == 200, made.text
        deadline = time.monotonic() + 60
        while not _workers_alive(engine):  # the server's worker is starting
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        asked = api.post(f"{entra}/runs", timeout=30)
        assert asked.status_code == 202 and asked.json()["status"] == "requested", asked.text
        while True:
            runs = api.get(f"{entra}/runs", timeout=30).json()["items"]
            if runs and runs[0]["status"] != "running":
                break
            assert time.monotonic() < deadline + 60, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
    assert [(r["trigger"], r["status"], r["counts"]["created"]) for r in runs] == [
        ("manual", "succeeded", 3)]
    log = (tmp_path / "serve.log").read_text()
    assert " gevent worker(s)" in log, log
