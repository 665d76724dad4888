"""`connector serve` worker classes: gevent's conditions, its turn-taking, its pool, and a
real gevent server answering concurrent SCIM traffic on both databases."""

from __future__ import annotations

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


def test_gevent_refuses_schedulers_in_the_web_process() -> None:
    problem = serving.worker_class_problem(settings(), "gevent")
    assert problem is not None
    assert "[azure_sync] and [billing]" in problem
    assert "CONNECTOR_AZURE_SYNC__SCHEDULER_IN_WEB=false" in problem
    assert "CONNECTOR_BILLING__SCHEDULER_IN_WEB=false" in problem
    assert "connector worker" in problem

    one_left = settings(CONNECTOR_AZURE_SYNC__SCHEDULER_IN_WEB="false")
    problem = serving.worker_class_problem(one_left, "gevent")
    assert problem is not None and "[billing]" in problem and "azure_sync" not in problem

    both_off = settings(CONNECTOR_AZURE_SYNC__SCHEDULER_IN_WEB="false",
                        CONNECTOR_BILLING__SCHEDULER_IN_WEB="false")
    assert serving.worker_class_problem(both_off, "gevent") is None


def test_threads_and_sync_run_the_schedulers_and_unknown_classes_are_named() -> None:
    assert serving.worker_class_problem(settings(), "gthread") is None
    assert serving.worker_class_problem(settings(), "sync") is None
    problem = serving.worker_class_problem(settings(), "eventlet")
    assert problem is not None and "gthread, gevent, sync" in problem


@pytest.mark.slow  # the command in a new interpreter
def test_serve_says_what_to_do_instead_of_starting(tmp_path: Path) -> None:
    env = {**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
           "CONNECTOR_DATABASE__URL": f"sqlite:///{tmp_path / 'c.sqlite3'}"}
    done = subprocess.run([sys.executable, "-m", "connector.cli", "serve", "--worker-class",
                           "gevent", "--port", "1"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "scheduler_in_web = false" in done.stderr
    assert "Traceback" not in done.stderr
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
    assert "with 1 gevent worker(s)" in log
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
