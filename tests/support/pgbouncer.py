"""A PgBouncer of the test's own, in transaction pooling mode, in front of the machine's
PostgreSQL (Debian's pgbouncer; tests/ensure_services.py installs it)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.support.databases import PG_ADMIN_DSN
from tests.support.served import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@contextmanager
def bounced_database(pool_size: int = 3) -> Iterator[str]:
    """A fresh database, and the URL that reaches it through a pgbouncer of the test's
    own (transaction pooling, `pool_size` server connections); both gone afterwards.
    Skips the test when pgbouncer is not installed."""
    if not os.path.exists(PGBOUNCER):
        pytest.skip("pgbouncer is not installed (make test installs it)")
    name = f"connector_bouncer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f'ALTER DATABASE "{name}" SET jit = off')
    try:
        with pgbouncer_process(pool_size) as port:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def pgbouncer_process(pool_size: int) -> Iterator[int]:
    """A pgbouncer in transaction pooling mode in front of 127.0.0.1:5432 (every
    database, `pool_size` server connections each), on a free port: yields the port."""
    # pgbouncer refuses to run as root; as `postgres` it must read and write here.
    home = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    home.chmod(0o777)
    port = free_port()
    (home / "users.txt").write_text('"postgres" ""\n')
    (home / "pgbouncer.ini").write_text(f"""[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {home}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
logfile = {home}/pgbouncer.log
pidfile = {home}/pgbouncer.pid
""")
    for path in home.iterdir():
        path.chmod(0o666)
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    # Its stderr to a file, never a pipe nobody reads: pgbouncer logs there too, and
    # blocks (every client with it) once a pipe's buffer is full.
    errors = home / "stderr.log"
    with errors.open("wb") as err:
        bouncer = subprocess.Popen([PGBOUNCER, *user, str(home / "pgbouncer.ini")],
                                   stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert bouncer.poll() is None, errors.read_text()
                assert time.monotonic() < deadline, "pgbouncer did not start"
                time.sleep(0.1)
        yield port
    finally:
        bouncer.send_signal(signal.SIGINT)
        try:
            bouncer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            bouncer.kill()
            bouncer.wait()
        shutil.rmtree(home, ignore_errors=True)
