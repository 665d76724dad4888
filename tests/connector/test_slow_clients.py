"""Slow clients against a live `connector serve` (issue 19, point 1): slowloris headers
no longer hold the gthread worker's threads, slow SCIM bodies with a valid token no
longer hold the gevent worker's database connections (the body is read before the
request touches the database, within a deadline, then 408), and /readyz says 503 when
a process's pool has no free connection."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine, create_engine

from connector.app import create_app
from connector.config import load_settings
from tests.support.clients import make_tenant
from tests.support.served import served

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


class Trickle(threading.Thread):
    """A client that sends `head`, then `tail` one byte every `every` seconds, and keeps
    what the server answers (b"" when it closed the connection without a word)."""

    def __init__(self, port: int, head: bytes, tail: bytes, every: float) -> None:
        super().__init__(daemon=True)
        self.port, self.head, self.tail, self.every = port, head, tail, every
        self.answer: bytes | None = None
        self.sent_all = False

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(self.head)
            try:
                for byte in self.tail:
                    time.sleep(self.every)
                    sock.sendall(bytes([byte]))
                self.sent_all = True
            except OSError:
                pass  # the server closed it: what it said (if anything) follows
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except OSError:
                pass
            self.answer = b"".join(chunks)


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


@pytest.mark.slow  # a gunicorn server in a subprocess
def test_slowloris_headers_no_longer_stop_the_threaded_server(
        database_url: str, engine: Engine, tmp_path: Path) -> None:
    with served(database_url, tmp_path, "--worker-class", "gthread", "--threads", "2",
                CONNECTOR_SERVER__HEADER_TIMEOUT_SECONDS="1.5") as base:
        # Three clients, more than the worker's two threads, each sending one header
        # line a second for twenty seconds.
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        tail = b"".join(b"X-Slow-%d: y\r\n" % i for i in range(2)) * 10
        slow = [Trickle(_port(base), head, tail, 1.0) for _ in range(3)]
        for client in slow:
            client.start()
        time.sleep(0.5)
        started = time.monotonic()
        answer = requests.get(base + "/healthz", timeout=15)
        waited = time.monotonic() - started
        assert answer.status_code == 200
        assert waited < 5.0, f"a plain request waited {waited:.1f} s behind slow headers"
        for client in slow:
            client.join(timeout=30)
            assert not client.sent_all and client.answer == b""  # cut off, not served


@pytest.mark.slow  # a gunicorn server in a subprocess
@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_slow_bodies_hold_no_database_connection_and_time_out_in_scim_format(
        database_url: str, engine: Engine, tmp_path: Path, worker_class: str) -> None:
    _tenant, token = make_tenant(engine, f"Slow bodies {worker_class}")
    threads = ["--threads", "8"] if worker_class == "gthread" else []
    with served(database_url, tmp_path, "--worker-class", worker_class, *threads,
                CONNECTOR_SERVER__BODY_TIMEOUT_SECONDS="3",
                CONNECTOR_DATABASE__POOL_SIZE="2", CONNECTOR_DATABASE__MAX_OVERFLOW="0"
                ) as base:
        body = json.dumps({"schemas": [USER], "userName": "slow@example.com"}).encode()
        head = (b"POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + token.encode() + b"\r\nContent-Type: application/scim+json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        # Four valid SCIM POSTs whose bodies trickle in, twice the pool's connections.
        slow = [Trickle(_port(base), head, body, 0.5) for _ in range(4)]
        for client in slow:
            client.start()
        time.sleep(1.0)
        scim = requests.Session()
        scim.headers.update({"Authorization": f"Bearer {token}"})
        started = time.monotonic()
        listed = scim.get(base + "/scim/v2/Users", timeout=15)
        assert listed.status_code == 200
        assert requests.get(base + "/readyz", timeout=15).status_code == 200
        assert time.monotonic() - started < 2.0, "SCIM waited behind slow bodies"
        for client in slow:
            client.join(timeout=30)
            assert client.answer is not None and not client.sent_all
            head_text, _, raw = client.answer.partition(b"\r\n\r\n")
            assert head_text.startswith(b"HTTP/1.1 408"), client.answer[:300]
            error = json.loads(raw)
            assert error["schemas"] == [ERROR] and error["status"] == "408"
            assert "3 seconds" in error["detail"]
        # Nothing of them was created, and the server goes on. (On new connections: the
        # server may close an idle keep-alive one just as the session would reuse it.)
        scim.close()
        found = scim.get(base + "/scim/v2/Users", params={
            "filter": 'userName eq "slow@example.com"'}, timeout=15).json()
        assert found["totalResults"] == 0
        made = scim.post(base + "/scim/v2/Users", data=body, timeout=15,
                         headers={"Content-Type": "application/scim+json"})
        assert made.status_code == 201


def test_a_chunked_body_over_the_limit_is_refused_whole(tmp_path: Path, engine: Engine,
                                                          database_url: str) -> None:
    """Read before the app, a chunked body keeps its 413 (and its first megabyte is
    not taken for the whole)."""
    _tenant, token = make_tenant(engine, "Chunked")
    settings = load_settings(environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
                                      "CONNECTOR_DATABASE__URL": database_url,
                                      "CONNECTOR_SERVER__MAX_BODY_BYTES": "1000"})
    app = create_app(settings, engine=engine)

    body = (b'{"schemas": ["' + USER.encode() + b'"], "userName": "big@example.com", '
            b'"displayName": "' + b"x" * 2000 + b'"}')
    with app.test_client() as client:
        answer = client.post("/scim/v2/Users", input_stream=io.BytesIO(body), headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/scim+json",
            "Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True,
                                                                 "CONTENT_LENGTH": ""})
    assert answer.status_code == 413, answer.get_data(as_text=True)[:300]
    assert answer.get_json()["schemas"] == [ERROR]
    # Read up to the limit only: its size is not known, and not said to be limit + 1.
    assert answer.get_json()["detail"] == (
        "This server takes request bodies of at most 1,000 bytes ([server] max_body_bytes); "
        "this one is larger than that. Send it in smaller requests.")


def test_readyz_says_unavailable_when_every_pooled_connection_is_taken(
        tmp_path: Path, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a bounded connection pool is PostgreSQL's")
    engine = create_engine(database_url, pool_size=2, max_overflow=0)
    settings = load_settings(environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
                                      "CONNECTOR_DATABASE__URL": database_url})
    app = create_app(settings, engine=engine)
    try:
        with app.test_client() as client:
            assert client.get("/readyz").status_code == 200
            held = [engine.connect(), engine.connect()]
            starved = client.get("/readyz")
            assert starved.status_code == 503
            assert "all 2 database connections" in starved.get_json()["detail"]
            held[0].close()
            assert client.get("/readyz").status_code == 200
            held[1].close()
    finally:
        engine.dispose()


WATCHDOGS = r"""
import os, socket, sys
# Imported before gevent's patching, as gunicorn's master imports the worker classes.
from connector.slow_clients import Watchdog, deadlines
if sys.argv[1] == "gevent":
    from gevent import monkey
    monkey.patch_all()

def check(where):
    quiet, quiet_peer = socket.socketpair()
    silent, silent_peer = socket.socketpair()
    silent.settimeout(60)  # a hang fails the test rather than stalling it
    spared = Watchdog(quiet, 0.05)
    spared.cancel()
    cut = Watchdog(silent, 0.2)
    try:  # the read returns once the watchdog fires (gevent: it raises, as for BodyFirst)
        got = silent.recv(1)
    except OSError:
        got = b""
    assert got == b"", where
    assert cut.fired and not spared.fired, where
    quiet_peer.send(b"x")
    assert quiet.recv(1) == b"x", where  # the cancelled one left its socket alone
    print(where, type(deadlines()).__name__)

if sys.argv[1] == "gevent":
    import gevent
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(5)])
    check("gevent")
    ticker.join(timeout=60)
    assert len(ticks) == 5  # the loop kept running while the read waited
else:
    check("parent")
    child = os.fork()
    if child == 0:
        try:
            check("child")
        finally:
            os._exit(0)
    assert os.waitpid(child, 0)[1] == 0
"""


@pytest.mark.parametrize("where", ["threads", "gevent"])
def test_watchdogs_cut_silent_reads_and_spare_cancelled_ones(tmp_path: Path,
                                                             where: str) -> None:
    """One deadline thread per process (a forked child gets its own), or the event loop's
    timers once gevent has patched the process: a watchdog shuts a silent socket's
    reading side down, a cancelled one does nothing, and under gevent the loop goes on
    meanwhile (a lock made before the patching would stall it)."""
    import subprocess
    import sys

    script = tmp_path / "watchdogs.py"
    script.write_text(WATCHDOGS)
    done = subprocess.run([sys.executable, str(script), where], capture_output=True,
                          text=True, timeout=120, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stdout + done.stderr
    if where == "gevent":
        assert done.stdout.split() == ["gevent", "GeventDeadlines"]
    else:
        assert done.stdout.split() == ["parent", "Deadlines", "child", "Deadlines"]


def test_cancelled_watchdogs_do_not_pile_up() -> None:
    """A busy process cancels almost every watchdog long before its deadline: the heap is
    rebuilt without them, instead of holding every request of the last timeout."""
    import socket as sockets

    from connector.slow_clients import Deadlines, Watchdog

    left, right = sockets.socketpair()
    try:
        deadlines = Deadlines()
        for _ in range(10 * Deadlines.COMPACT_AT):
            watchdog = Watchdog(None, 0)  # unarmed: armed here, on this Deadlines
            deadlines.arm(watchdog, 600)
            watchdog.cancel()
        assert len(deadlines._heap) <= Deadlines.COMPACT_AT + 1
    finally:
        left.close()
        right.close()
