"""`connector serve` worker classes: gevent's conditions, its turn-taking, its pool, and a
real gevent server answering concurrent SCIM traffic on both databases."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gevent
import pytest
from sqlalchemy import Engine

from connector import db, serving
from connector.config import DatabaseSettings, load_settings
from tests.support.clients import make_tenant

SCIM_JSON = "application/scim+json"


def settings(**env: str) -> Any:
    return load_settings(environ={"CONNECTOR_CONFIG": "/nonexistent", **env})


def test_web_processes_by_default_follow_the_database_and_the_cores(tmp_path: Path) -> None:
    assert serving.web_processes(3) == 3  # as configured
    assert serving.web_processes(0) == min(serving.cpu_cores(), serving.MAX_AUTO_WORKERS)
    # Without a cgroup quota, the cores this process may run on.
    assert serving.cpu_cores(tmp_path / "absent") == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cores", "processes"), [(1, 1), (2, 2), (4, 4), (64, 4)])
def test_a_process_per_core_up_to_four(monkeypatch: pytest.MonkeyPatch, cores: int,
                                       processes: int) -> None:
    monkeypatch.setattr(serving, "cpu_cores", lambda: cores)
    assert serving.web_processes(0) == processes


@pytest.mark.parametrize(("cpu_max", "cores"), [
    ("max 100000\n", 64), ("200000 100000\n", 2), ("150000 100000\n", 2),
    ("50000 100000\n", 1), ("0 100000\n", 1), ("garbage\n", 64), ("", 64)])
def test_a_containers_cpu_quota_bounds_the_cores(tmp_path: Path, monkeypatch: Any,
                                                 cpu_max: str, cores: int) -> None:
    """cgroup v2's cpu.max ("QUOTA PERIOD"; "max": none) as a container runtime sets it
    for `--cpus`, on a host with 64 cores this process may run on."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert serving.cpu_cores(tmp_path / "cpu.max") == cores


def test_gevent_refuses_schedulers_in_the_web_process() -> None:
    # By default the schedulers run in the server's own `connector worker`: nothing to
    # refuse. Asked to run them in the web process, gevent says what to do instead.
    assert serving.worker_class_problem(settings(), "gevent") is None
    web = {"CONNECTOR_SERVER__SCHEDULERS": "web"}
    problem = serving.worker_class_problem(settings(**web), "gevent")
    assert problem is not None
    assert "[azure_sync] and [billing]" in problem
    assert "CONNECTOR_AZURE_SYNC__SCHEDULER_IN_WEB=false" in problem
    assert "CONNECTOR_BILLING__SCHEDULER_IN_WEB=false" in problem
    assert "connector worker" in problem

    one_left = settings(**web, CONNECTOR_AZURE_SYNC__SCHEDULER_IN_WEB="false")
    problem = serving.worker_class_problem(one_left, "gevent")
    assert problem is not None and "[billing]" in problem and "azure_sync" not in problem

    both_off = settings(**web, CONNECTOR_AZURE_SYNC__SCHEDULER_IN_WEB="false",
                        CONNECTOR_BILLING__SCHEDULER_IN_WEB="false")
    assert serving.worker_class_problem(both_off, "gevent") is None


def test_gevent_is_the_default_worker_class() -> None:
    assert settings().server.worker_class == "gevent"


def test_threads_and_sync_run_the_schedulers_and_unknown_classes_are_named() -> None:
    assert serving.worker_class_problem(settings(), "gthread") is None
    assert serving.worker_class_problem(settings(), "sync") is None
    problem = serving.worker_class_problem(settings(), "eventlet")
    assert problem is not None and "gthread, gevent, sync" in problem


@pytest.mark.slow  # the command in a new interpreter
@pytest.mark.parametrize("chosen", [[], ["--worker-class", "gevent"]], ids=["default", "named"])
def test_serve_says_what_to_do_instead_of_starting(tmp_path: Path, chosen: list[str]) -> None:
    """gevent is the default worker class: schedulers = "web" with it (named or not) is
    refused before anything starts, saying what to change."""
    env = {**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
           "CONNECTOR_DATABASE__URL": f"sqlite:///{tmp_path / 'c.sqlite3'}",
           "CONNECTOR_SERVER__SCHEDULERS": "web"}
    done = subprocess.run([sys.executable, "-m", "connector.cli", "serve", *chosen,
                           "--port", "1"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "The gevent worker (server.worker_class, the default)" in done.stderr
    assert "scheduler_in_web = false" in done.stderr
    assert "--worker-class gthread" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "c.sqlite3").exists()  # refused before touching the database


@pytest.mark.slow  # the command in a new interpreter
@pytest.mark.parametrize(("args", "env", "message"), [
    (["--port", "70000"], {}, "the port must be 1-65535 (--port, [server] port); got 70000."),
    ([], {"CONNECTOR_SERVER__PORT": "-1"}, "the port must be 1-65535"),
    (["--workers", "-1"], {}, "the workers must be 1 or more, or 0 for one per CPU core "
     "(--workers, [server] workers); got -1."),
    # docs/operations.md sizes the web server by [server] workers: a setting, as threads
    # and worker_connections are (an unknown one would fail naming the variable).
    ([], {"CONNECTOR_SERVER__WORKERS": "-2"}, "the workers must be 1 or more"),
    (["--workers", "-1"], {"CONNECTOR_SERVER__WORKERS": "2"}, "the workers must be 1"),
    (["--worker-class", "gevent"], {"CONNECTOR_SERVER__WORKER_CONNECTIONS": "0"},
     "the worker connections must be 1 or more"),
], ids=["port", "port-setting", "workers", "workers-setting", "workers-option-wins",
        "connections"])
def test_serve_refuses_numbers_it_cannot_serve_with(tmp_path: Path, args: list[str],
                                                    env: dict[str, str], message: str) -> None:
    """A port out of range ended in gunicorn's traceback after "Serving on …"; no worker
    (or no connection per worker) listened and never answered. Refused before anything
    starts, naming the option and the setting."""
    env = {**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
           "CONNECTOR_DATABASE__URL": f"sqlite:///{tmp_path / 'c.sqlite3'}", **env}
    done = subprocess.run([sys.executable, "-m", "connector.cli", "serve", *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"error: {message}"), done.stderr
    # A settings file named and missing is said (it is skipped, as config.toml is).
    assert done.stderr.startswith(f"Note: CONNECTOR_CONFIG names {tmp_path / 'none.toml'}, "
                                  "which does not exist: using the built-in defaults")
    assert "Serving on" not in done.stdout
    assert not (tmp_path / "c.sqlite3").exists()  # refused before touching the database


def test_without_gevent_the_app_is_left_as_it_is() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return [b""]

    assert serving.cooperative(app) is app


def test_under_gevent_each_request_lets_the_others_run_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serving, "gevent_patched", lambda: True)
    order: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        order.append(environ["name"])
        return [b""]

    taking_turns = serving.cooperative(app)
    first = gevent.spawn(taking_turns, {"name": "request"}, None)
    other = gevent.spawn(order.append, "another connection")
    gevent.joinall([first, other], raise_error=True)
    # Without the yield the request's greenlet would have run to its end first.
    assert order == ["another connection", "request"]


def test_under_gevent_the_pool_keeps_what_threads_would_open_beyond_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert db.pool_shape(DatabaseSettings(pool_size=5)) == (5, 10)
    assert db.pool_shape(DatabaseSettings(pool_size=5, max_overflow=3)) == (5, 3)
    monkeypatch.setattr(serving, "gevent_patched", lambda: True)
    assert db.pool_shape(DatabaseSettings(pool_size=5)) == (15, 0)
    assert db.pool_shape(DatabaseSettings(pool_size=5, max_overflow=3)) == (5, 3)
    engine = db.make_engine(DatabaseSettings(url="postgresql+psycopg://nobody@127.0.0.1/x",
                                             pool_size=5))
    assert (engine.pool.size(), engine.pool._max_overflow) == (15, 0)  # type: ignore[attr-defined]
    engine.dispose()


# -- a real gevent server ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(base: str, method: str, path: str, token: str, body: Any = None
          ) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.mark.slow  # a gunicorn server in a subprocess
def test_gevent_server_answers_concurrent_scim_traffic(database_url: str, engine: Engine,
                                                        tmp_path: Path) -> None:
    tenant_id, token = make_tenant(engine, "Gevent")
    port = _free_port()
    env = {**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
           "CONNECTOR_DATABASE__URL": database_url, "CONNECTOR_LOGGING__ACCESS_LOG": "false",
           "CONNECTOR_AZURE_SYNC__SCHEDULER_IN_WEB": "false",
           "CONNECTOR_BILLING__SCHEDULER_IN_WEB": "false"}
    with (tmp_path / "serve.log").open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "connector.cli", "serve",
                                   "--worker-class", "gevent", "--port", str(port)],
                                  env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as ready:
                    if ready.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the gevent server never became ready"
            time.sleep(0.2)

        def provision(n: int) -> list[int]:
            status, made = _call(base, "POST", "/scim/v2/Users", token, {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": f"gevent{n}@example.com", "active": True})
            statuses = [status]
            statuses.append(_call(base, "PATCH", f"/scim/v2/Users/{made['id']}", token, {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": False}]})[0])
            status, found = _call(base, "GET", "/scim/v2/Users?filter=userName%20eq%20"
                                  f"%22GEVENT{n}@example.com%22", token)
            statuses.append(status)
            assert found["totalResults"] == 1 and found["Resources"][0]["active"] is False
            return statuses

        # More clients than the pool's 5 connections: the rest wait for one.
        with ThreadPoolExecutor(12) as pool:
            statuses = [s for batch in pool.map(provision, range(36)) for s in batch]
        assert statuses == [201, 200, 200] * 36
        status, listed = _call(base, "GET", "/scim/v2/Users?count=1", token)
        assert status == 200 and listed["totalResults"] == 36
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    log = (tmp_path / "serve.log").read_text()
    # By default one web process per core (at most 4), on either database.
    expected = min(serving.cpu_cores(), 4)
    assert f"with {expected} gevent worker(s)" in log
    assert "Using worker: connector.workers.GeventWorker" in log
    if database_url.startswith("postgresql"):
        assert "database waits are cooperative" in log
    assert "Traceback" not in log


def test_a_production_install_brings_what_the_gevent_worker_imports() -> None:
    """The dev tools also install `packaging`; a production install has only the runtime
    requirements, and gunicorn's gevent worker fails to load without it."""
    from importlib import metadata

    from packaging.requirements import Requirement

    def runtime(dist: str, extras: set[str]) -> set[str]:
        found = set()
        for line in metadata.requires(dist) or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
                found.add(req.name.lower())
                found |= runtime(req.name, set(req.extras)) if req.name == "gunicorn" else set()
        return found

    needed = runtime("connector", {""})
    assert {"gunicorn", "gevent", "packaging"} <= needed
    assert "jsonschema" in needed  # the admin API checks bodies against its contract


# -- the scheduler process ------------------------------------------------------------------


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append((int(entry.name), cmdline))
    return found


def _wait_for(what: str, probe: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _handles_sigterm(pid: int) -> bool:
    """The process has set its SIGTERM handler (`connector worker`, once started)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt"))
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """`connector serve` on a SQLite file of `tmp_path`, no access log, its schedulers
    where serve puts them by default (in `connector worker`)."""
    env = {**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
           "CONNECTOR_DATABASE__URL": f"sqlite:///{tmp_path / 'c.sqlite3'}",
           "CONNECTOR_LOGGING__ACCESS_LOG": "false", **extra}
    env.pop("CONNECTOR_SERVER__SCHEDULERS", None)
    return env


def _worker_of(sup: int) -> Any:
    """A probe for the `connector worker` the supervisor `sup` runs (None until then)."""
    return lambda: next((pid for pid, cmd in _children(sup)
                         if cmd.rstrip().endswith(" worker --supervised")), None)


def _started_scheduler(server: subprocess.Popen[Any], log_path: Path | None = None
                       ) -> tuple[int, int]:
    """Wait for serve's supervisor and its worker, started (handling SIGTERM): their
    pids. A server that exits meanwhile fails at once, with its log when there is one."""
    def supervisor() -> int | None:
        assert server.poll() is None, log_path.read_text() if log_path else server.returncode
        return next((pid for pid, cmd in _children(server.pid)
                     if "connector.supervise" in cmd), None)

    sup = _wait_for("the supervisor", supervisor, timeout=60)
    worker = _wait_for("the worker", _worker_of(sup))
    _wait_for("the worker to start", lambda: _handles_sigterm(worker))
    return sup, worker


@pytest.mark.slow  # a gunicorn server and its scheduler process
@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_serve_runs_the_schedulers_in_a_worker_it_restarts_and_stops(
        tmp_path: Path, worker_class: str) -> None:
    """`connector serve` (schedulers = "worker", the default) starts `connector worker`
    under a supervisor: a worker killed with SIGKILL is started again, and a SIGTERM to
    the server alone (as a container runtime sends PID 1) stops all of them."""
    port = _free_port()
    env = _serve_env(tmp_path, CONNECTOR_SERVER__WORKER_STOP_SECONDS="10")
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "connector.cli", "serve",
                                   "--worker-class", worker_class, "--port", str(port)],
                                  env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        sup, first = _started_scheduler(server, log_path)
        os.kill(first, signal.SIGKILL)
        second = _wait_for("a new worker",
                           lambda: (w := _worker_of(sup)()) is not None and w != first and w)
        assert _alive(sup)
        _wait_for("the new worker to start", lambda: _handles_sigterm(second))
        os.kill(server.pid, signal.SIGTERM)  # the server alone, not its process group
        assert server.wait(timeout=40) == 0
        _wait_for("the scheduler process to stop",
                  lambda: not _alive(sup) and not _alive(second), timeout=20)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    log = log_path.read_text()
    assert "stopped unexpectedly (killed by SIGKILL)" in log
    assert "starting it again in 1 s" in log
    assert "Entra sync and month closes in `connector worker`, started with it" in log
    assert log.count("`connector worker` started again") == 1
    assert "Sync worker stopped." in log  # the second one finished as asked
    assert "Traceback" not in log


@pytest.mark.slow  # a gunicorn server and its scheduler process
def test_a_killed_server_leaves_no_scheduler_process_behind(tmp_path: Path) -> None:
    """SIGKILL of the server (no on_exit hook runs): the supervisor sees its parent gone
    and stops `connector worker` itself."""
    port = _free_port()
    env = _serve_env(tmp_path)
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "connector.cli", "serve",
                                   "--port", str(port)], env=env, cwd=tmp_path, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        sup, worker = _started_scheduler(server, log_path)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        _wait_for("the scheduler process to stop",
                  lambda: not _alive(sup) and not _alive(worker), timeout=40)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
    log = log_path.read_text()
    assert "the server stopped: stopping `connector worker`." in log
    assert "Sync worker stopped." in log


@pytest.mark.slow  # a gunicorn server and its scheduler process
def test_a_killed_server_whose_log_reader_is_gone_leaves_no_scheduler_behind(
        tmp_path: Path) -> None:
    """The server killed and its output's reader gone too (a pipe to a log shipper that
    died): the supervisor's message fails to write, and it must still stop `connector
    worker`, not die of the broken pipe and leave it running for good."""
    port = _free_port()
    env = _serve_env(tmp_path)
    server = subprocess.Popen([sys.executable, "-m", "connector.cli", "serve",
                               "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    worker = None
    try:
        sup, worker = _started_scheduler(server)
        assert server.stdout is not None
        server.stdout.close()  # nobody reads the server's output any more
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        _wait_for("the scheduler process to stop",
                  lambda: not _alive(sup) and not _alive(worker), timeout=40)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        if worker is not None and _alive(worker):  # it left the group? never leave it
            os.kill(worker, signal.SIGKILL)


@pytest.mark.slow  # a gunicorn server and its scheduler process
def test_ctrl_c_stops_the_gevent_server_without_a_traceback(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) stops the
    server, its web worker and `connector worker`, and the terminal's last lines are the
    shutdown's, not a traceback (gunicorn's gevent worker quit twice: the terminal's
    SIGINT, then the master's SIGQUIT)."""
    port = _free_port()
    env = _serve_env(tmp_path)
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "connector.cli", "serve",
                                   "--worker-class", "gevent", "--port", str(port)],
                                  env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        sup, worker = _started_scheduler(server, log_path)

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        _wait_for("the server to serve", ready, timeout=60)
        os.killpg(server.pid, signal.SIGINT)
        assert server.wait(timeout=40) == 0
        _wait_for("the scheduler process to stop",
                  lambda: not _alive(sup) and not _alive(worker), timeout=20)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    log = log_path.read_text()
    assert "Handling signal: int" in log and "Shutting down: Master" in log
    assert "Sync worker stopped." in log
    assert "Traceback" not in log and "failed with SystemExit" not in log, log


@pytest.mark.slow  # the command in a new interpreter
def test_serve_says_so_when_its_port_is_taken(tmp_path: Path) -> None:
    """Another server on the port: serve said "Serving on …", gunicorn retried for five
    seconds and ended with "Can't connect to ('127.0.0.1', P)". Now it says the address
    is in use and what to do, before saying it serves or touching the database."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
               "CONNECTOR_DATABASE__URL": f"sqlite:///{tmp_path / 'c.sqlite3'}"}
        done = subprocess.run([sys.executable, "-m", "connector.cli", "serve", "--port",
                               str(port)], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: 127.0.0.1:{port} is in use: another process listens there (another "
        "`connector serve`?). Stop it, or listen elsewhere (--host/--port, [server] "
        "host/port; make run PORT=…).")
    assert "Serving on" not in done.stdout
    assert not (tmp_path / "c.sqlite3").exists()


def test_the_welcome_is_shown_once_every_worker_is_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`make run`'s frame comes after every worker's start-up lines: the worker whose
    start completes the server's `workers` shows it, whichever that is, once; a
    replacement started later shows nothing."""
    from types import SimpleNamespace

    from connector import gunicorn_hooks, supervise

    welcome = tmp_path / "welcome.txt"
    welcome.write_text("+- the frame -+\n")
    monkeypatch.setenv(gunicorn_hooks.ENV_WELCOME, str(welcome))
    cfg = SimpleNamespace(workers=3)
    for age in (3, 1):  # the last forked may be up first
        gunicorn_hooks.post_worker_init(SimpleNamespace(age=age, cfg=cfg))
    assert capsys.readouterr().out == ""
    gunicorn_hooks.post_worker_init(SimpleNamespace(age=2, cfg=cfg))
    assert capsys.readouterr().out == "+- the frame -+\n"
    assert list(tmp_path.iterdir()) == []  # the frame (a one-time password) and the count
    gunicorn_hooks.post_worker_init(SimpleNamespace(age=4, cfg=cfg))  # a replacement
    assert capsys.readouterr().out == "" and list(tmp_path.iterdir()) == []
    monkeypatch.delenv(supervise.ENV_PID, raising=False)  # no scheduler process to stop
    gunicorn_hooks.on_exit(None)  # nothing left to remove: no error
    assert list(tmp_path.iterdir()) == []


def test_a_server_stopped_before_its_workers_are_up_leaves_no_welcome(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The frame holds a one-time password: the server's exit removes it, shown or not."""
    from types import SimpleNamespace

    from connector import gunicorn_hooks, supervise

    welcome = tmp_path / f"{gunicorn_hooks.WELCOME_PREFIX}abc"
    welcome.write_text("+- the frame -+\n")
    monkeypatch.setenv(gunicorn_hooks.ENV_WELCOME, str(welcome))
    monkeypatch.delenv(supervise.ENV_PID, raising=False)  # no scheduler process to stop
    gunicorn_hooks.post_worker_init(SimpleNamespace(age=1, cfg=SimpleNamespace(workers=2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [welcome.name, f"{welcome.name}.up"]
    gunicorn_hooks.on_exit(None)
    assert capsys.readouterr().out == "" and list(tmp_path.iterdir()) == []
    # A variable naming some other file (not one serve made) removes nothing.
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    monkeypatch.setenv(gunicorn_hooks.ENV_WELCOME, str(other))
    gunicorn_hooks.on_exit(None)
    assert other.read_text() == "mine"
