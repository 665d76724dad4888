"""/metrics through the real app on both databases: off by default, the token, the
listener of its own, requests and SCIM errors counted, no tenant id in any label, and
several processes adding up in one scrape."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine

from connector import metrics
from connector.app import create_app
from connector.config import MetricsSettings, Settings
from connector.db import make_sessionmaker
from connector.metrics_export import DatabaseFigures
from tests.support.clients import ScimClient, make_tenant
from tests.support.metrics import TOKEN, parse, scrape, value

ROOT = Path(__file__).resolve().parents[2]
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with the metrics token set (cache off: every scrape reads)."""
    return dataclasses.replace(settings, metrics=MetricsSettings(token=TOKEN, cache_seconds=0))


def with_metrics(settings: Settings, **changes: object) -> Settings:
    return dataclasses.replace(settings, metrics=dataclasses.replace(settings.metrics,
                                                                     **changes))


def test_metrics_are_off_by_default_and_say_how_to_turn_them_on(settings: Settings,
                                                                engine: object) -> None:
    app = create_app(dataclasses.replace(settings, metrics=MetricsSettings()), engine=engine)
    response = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404
    assert "[metrics] token or bind" in response.get_data(as_text=True)


def test_the_token_is_required_and_a_wrong_one_refused(app: Flask) -> None:
    client = app.test_client()
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    for header in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer "):
        assert client.get("/metrics", headers={"Authorization": header}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.headers["Content-Type"].startswith("text/plain; version=")
    assert "connector_http_requests_total" in ok.get_data(as_text=True)


def test_scim_requests_latency_and_errors_are_counted(app: Flask, scim: ScimClient) -> None:
    before = scrape(app.test_client())
    created = scim.post("/Users", {"schemas": [USER], "userName": "ann@example.com"})
    assert created.status_code == 201
    assert scim.get(f"/Users/{created.json['id']}").status_code == 200
    duplicate = scim.post("/Users", {"schemas": [USER], "userName": "ann@example.com"})
    assert duplicate.status_code == 409
    assert scim.get("/Users", query_string={"filter": "userName zz 1"}).status_code == 400
    assert app.test_client().get("/scim/v2/Users").status_code == 401
    after = scrape(app.test_client())

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "connector_http_requests_total"
    assert moved(requests, surface="scim", method="POST", status="201", tenant_class="scim") == 1
    assert moved(requests, surface="scim", method="POST", status="409", tenant_class="scim") == 1
    assert moved(requests, surface="scim", method="GET", status="200", tenant_class="scim") == 1
    assert moved(requests, surface="scim", method="GET", status="401", tenant_class="none") == 1
    assert moved("connector_http_request_duration_seconds_count", surface="scim",
                 method="POST", tenant_class="scim") == 2
    assert moved("connector_http_request_duration_seconds_sum", surface="scim") > 0
    assert moved("connector_scim_errors_total", status="409", scim_type="uniqueness") == 1
    assert moved("connector_scim_errors_total", status="400", scim_type="invalidFilter") == 1
    assert moved("connector_scim_errors_total", status="401", scim_type="none") == 1
    # The scrape before this one was counted too, as a health request.
    assert moved(requests, surface="health", method="GET", status="200") >= 1


def test_the_admin_surfaces_are_told_apart(app: Flask) -> None:
    client = app.test_client()
    before = scrape(client)
    client.get("/api/v1/tenants")
    client.get("/admin/")
    client.get("/healthz")
    after = scrape(client)
    for surface in ("api", "ui", "health"):
        assert value(after, "connector_http_requests_total", surface=surface) > value(
            before, "connector_http_requests_total", surface=surface), surface


def test_no_label_value_names_a_tenant_or_anything_a_client_sent(
        app: Flask, scim: ScimClient, other_scim: ScimClient) -> None:
    for client in (scim, other_scim):
        made = client.post("/Users", {"schemas": [USER], "userName": "bob@example.com"})
        client.get(f"/Users/{made.json['id']}")
        client.get("/Users/no-such-id")
        client.request("BREW", "/Users")
    app.test_client().get(f"/scim/v2/{scim.tenant_id}/Users")
    samples = scrape(app.test_client())
    labels = {(k, v) for (_name, have) in samples for k, v in have}
    values = {v for _k, v in labels}
    assert not values & {scim.tenant_id, other_scim.tenant_id}
    assert not [v for v in values if UUID.search(v) or "@" in v or "/" in v or "BREW" in v]
    allowed = {"surface": {"scim", "api", "ui", "health"}, "tenant_class": set(
        metrics.TENANT_CLASSES), "method": set(metrics.METHODS) | {"OTHER"}}
    for key, known in allowed.items():
        assert {v for k, v in labels if k == key} <= known, key
    assert ("method", "OTHER") in labels


def test_a_listener_of_its_own_answers_metrics_and_nothing_else(settings: Settings,
                                                                engine: object) -> None:
    """[metrics] bind: the port the request came in on decides, never a proxy header."""
    bound = dataclasses.replace(with_metrics(settings, token="", bind="127.0.0.1:9464"),
                                server=dataclasses.replace(settings.server, proxy_hops=1))
    client = create_app(bound, engine=engine).test_client()
    on_metrics = {"SERVER_PORT": "9464"}
    assert client.get("/metrics", environ_overrides=on_metrics).status_code == 200
    other = client.get("/scim/v2/Users", environ_overrides=on_metrics)
    assert other.status_code == 404 and b"/metrics only" in other.data
    main = client.get("/metrics", environ_overrides={"SERVER_PORT": "8080"})
    assert main.status_code == 404 and b"127.0.0.1:9464" in main.data
    spoofed = client.get("/metrics", environ_overrides={"SERVER_PORT": "8080"},
                         headers={"X-Forwarded-Host": "127.0.0.1:9464",
                                  "X-Forwarded-Port": "9464"})
    assert spoofed.status_code == 404
    # With a token as well, the metrics listener asks for it too.
    both = create_app(with_metrics(settings, bind="127.0.0.1:9464"), engine=engine)
    assert both.test_client().get("/metrics", environ_overrides=on_metrics).status_code == 401


def test_database_figures_are_cached_and_a_dead_database_is_reported(
        settings: Settings, engine: object) -> None:
    ticks = [0.0]
    figures = DatabaseFigures(make_sessionmaker(engine), with_metrics(  # type: ignore[arg-type]
        settings, cache_seconds=5).metrics, monotonic=lambda: ticks[0])
    first = figures.collect()
    assert figures.collect() is first
    ticks[0] = 6.0
    assert figures.collect() is not first
    names = {f.name for f in first}
    assert {"connector_metrics_database_up", "connector_sync_max_lag_seconds",
            "connector_sync_held_tenants", "connector_sync_quarantined_tenants",
            "connector_outbox_pending"} <= names
    gone = create_engine("sqlite:////nonexistent-dir/connector.sqlite3")
    dead = DatabaseFigures(make_sessionmaker(gone), settings.metrics).collect()
    assert [(f.name, f.samples[0].value) for f in dead] == [
        ("connector_metrics_database_up", 0)]


# -- several processes -----------------------------------------------------------------------


def child(database_url: str, directory: Path, *args: str, **kw: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), metrics.ENV: str(directory)}
    return subprocess.Popen([sys.executable, "-m", "tests.connector.metrics_child",
                             database_url, *args], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, **kw)  # type: ignore[call-overload]


def scrape_in_child(database_url: str, directory: Path) -> dict:
    scraper = child(database_url, directory, "scrape")
    out, _ = scraper.communicate(timeout=120)
    assert scraper.returncode == 0
    return parse(out)


def test_several_processes_add_up_in_one_scrape(database_url: str, engine: object,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two web processes and a worker count into one directory; a third process's
    scrape sees them all; a process marked gone leaves its live gauges, not its counts."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    _, token = make_tenant(engine)  # type: ignore[arg-type]
    writers = [child(database_url, directory, "web", token) for _ in range(2)]
    for writer in writers:
        writer.communicate(timeout=120)
        assert writer.returncode == 0
    worker = child(database_url, directory, "worker", stdin=subprocess.PIPE)
    try:
        assert worker.stdout.readline().strip() == "ready"
        seen = scrape_in_child(database_url, directory)
    finally:
        worker.communicate("\n", timeout=60)
    assert worker.returncode == 0
    requests = "connector_http_requests_total"
    assert value(seen, requests, surface="scim", status="401") == 6
    assert value(seen, requests, surface="scim", status="201", tenant_class="scim") == 2
    assert value(seen, "connector_month_closes_total", result="closed") == 1
    assert value(seen, "connector_sync_rounds_total", result="succeeded") == 1
    assert value(seen, "connector_sync_round_duration_seconds_sum") == 3.0
    held = dict(process="worker", pool="billing")
    assert value(seen, "connector_db_pool_checked_out", **held) == 1
    assert value(seen, "connector_db_pool_size", **held) >= 1

    after = scrape_in_child(database_url, directory)  # the worker has marked itself gone
    assert value(after, "connector_db_pool_checked_out", **held) == 0
    assert value(after, "connector_month_closes_total", result="closed") == 1
    assert value(after, requests, surface="scim", status="401") == 6

    # `connector worker` starting (or restarted) removes only the live gauges of the
    # processes that are gone; `connector serve` starting removes everything they left.
    monkeypatch.setenv(metrics.ENV, "")  # restored after the test
    left = {p.name for p in directory.iterdir()}
    assert any(name.startswith("gauge_livesum_") for name in left)
    metrics.prepare_directory(str(directory), keep_counts=True)
    assert {p.name for p in directory.iterdir()} == {
        name for name in left if not name.startswith("gauge_livesum_")}
    assert value(scrape_in_child(database_url, directory), requests, surface="scim",
                 status="401") == 6
    metrics.prepare_directory(str(directory))
    assert list(directory.iterdir()) == []
    assert os.environ[metrics.ENV] == str(directory.resolve())


# -- `connector serve` as an operator runs it ------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={
        "Authorization": f"Bearer {token}", "Connection": "close"} if token else {
        "Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_serve_with_two_workers_reports_both_on_the_metrics_listener(
        database_url: str, engine: object, tmp_path: Path, worker_class: str) -> None:
    """Every scrape, whichever worker answers it, sees the requests of both and the
    pools of `connector worker`; a process that stops or dies leaves its counts and takes
    its live gauges away (child_exit for gunicorn's workers)."""
    import signal
    import time

    port, metrics_port = free_port(), free_port()
    directory = tmp_path / "metrics"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONNECTOR_DATABASE__URL": database_url,
           "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
           "CONNECTOR_LOGGING__ACCESS_LOG": "false",
           # The scheduler process started by hand, to see it stop.
           "CONNECTOR_SERVER__SCHEDULERS": "external",
           "CONNECTOR_METRICS__TOKEN": TOKEN,
           "CONNECTOR_METRICS__BIND": f"127.0.0.1:{metrics_port}",
           "CONNECTOR_METRICS__MULTIPROCESS_DIR": str(directory)}
    env.pop(metrics.ENV, None)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "serve", "--port", str(port),
             "--workers", "2", "--worker-class", worker_class], env=env, cwd=tmp_path,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60

        def workers() -> set[int]:
            """The pids of gunicorn's workers that have built their app (their files)."""
            return {pid for f in directory.glob("gauge_livesum_*.db")
                    if (pid := metrics._pid_of(f)) is not None and parent(pid) == server.pid}

        while len(workers()) < 2 or http_get(port, "/healthz")[0] != 200:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        # `connector worker` beside it, counting into the same directory.
        worker_log = tmp_path / "worker.log"
        with worker_log.open("w") as out:
            worker = subprocess.Popen([sys.executable, "-m", "connector.cli", "worker"],
                                      env=env, cwd=tmp_path, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        while "Worker running" not in worker_log.read_text():
            assert worker.poll() is None, worker_log.read_text()
            assert time.monotonic() < deadline, worker_log.read_text()
            time.sleep(0.2)
        for _ in range(20):  # a new connection each: both workers take some
            assert http_get(port, "/scim/v2/Users")[0] == 401
        assert http_get(port, "/metrics", TOKEN)[0] == 404  # not on the main address
        assert http_get(metrics_port, "/metrics")[0] == 401
        assert http_get(metrics_port, "/scim/v2/Users", TOKEN)[0] == 404
        for _ in range(6):  # whichever worker answers, it reports both
            status, text = http_get(metrics_port, "/metrics", TOKEN)
            assert status == 200
            seen = parse(text)
            assert value(seen, "connector_http_requests_total", surface="scim",
                         status="401") == 20
            assert value(seen, "connector_db_pool_size", process="web", pool="app") > 0
            for pool in ("sync", "billing"):
                assert value(seen, "connector_db_pool_size", process="worker", pool=pool) > 0
        worker.send_signal(signal.SIGTERM)  # its live gauges leave with it
        assert worker.wait(timeout=60) == 0, worker_log.read_text()
        status, text = http_get(metrics_port, "/metrics", TOKEN)
        assert value(parse(text), "connector_db_pool_size", process="worker") == 0
        victim = min(workers())
        counted = (directory / f"counter_{victim}.db").exists()
        os.kill(victim, signal.SIGKILL)
        while (directory / f"gauge_livesum_{victim}.db").exists():
            assert time.monotonic() < deadline + 60, log.read_text()
            time.sleep(0.2)
        assert (directory / f"counter_{victim}.db").exists() == counted
        status, text = http_get(metrics_port, "/metrics", TOKEN)
        assert status == 200
        assert value(parse(text), "connector_http_requests_total", surface="scim",
                     status="401") == 20
        while len(workers()) < 2:  # its replacement is up (stopping a booting one is slow)
            assert time.monotonic() < deadline + 120, log.read_text()
            time.sleep(0.2)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
            raise AssertionError("serve did not stop on SIGTERM:\n" + log.read_text()) from None
