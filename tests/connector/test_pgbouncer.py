"""The connector through PgBouncer in transaction pooling mode (issue 19, point 3).

A real pgbouncer (Debian's; tests/ensure_services.py installs it) on a port of the
test's own, in front of the machine's PostgreSQL, with fewer server connections than
the app uses so transactions hop between them: migrations, concurrent SCIM writes and
reads (the same statements again and again, which psycopg would prepare after five
runs: prepared statements do not survive a hop), the event feed (its snapshot horizon),
and a month close all work with `database.pgbouncer = true`. Without the setting the
CLI says what to set instead of failing on PgBouncer's refusal of startup options."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from werkzeug.datastructures import MultiDict

from billing.calendar import Month
from billing.close import close_month
from connector import feed, migrate
from connector.app import create_app
from connector.config import load_settings
from connector.db import make_engine, make_sessionmaker
from tests.billing.history import History
from tests.support.clients import make_tenant
from tests.support.databases import PG_ADMIN_DSN

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bounced() -> Iterator[str]:
    """A fresh database, and the URL that reaches it through a pgbouncer of the test's own
    (transaction pooling, 3 server connections)."""
    if not os.path.exists(PGBOUNCER):
        pytest.skip("pgbouncer is not installed (make test installs it)")
    name = f"connector_bouncer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f'ALTER DATABASE "{name}" SET jit = off')
    # pgbouncer refuses to run as root; as `postgres` it must read and write here.
    home = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    home.chmod(0o777)
    port = _free_port()
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
default_pool_size = 3
max_client_conn = 200
logfile = {home}/pgbouncer.log
pidfile = {home}/pgbouncer.pid
""")
    for path in home.iterdir():
        path.chmod(0o666)
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    bouncer = subprocess.Popen([PGBOUNCER, *user, str(home / "pgbouncer.ini")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert bouncer.poll() is None, bouncer.stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "pgbouncer did not start"
                time.sleep(0.1)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"
    finally:
        bouncer.send_signal(signal.SIGINT)
        try:
            bouncer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            bouncer.kill()
            bouncer.wait()
        assert bouncer.stderr is not None
        bouncer.stderr.close()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(home, ignore_errors=True)


def test_scim_the_feed_and_a_close_work_through_pgbouncer(bounced: str, tmp_path: Path
                                                           ) -> None:
    settings = load_settings(environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
                                      "CONNECTOR_DATABASE__URL": bounced,
                                      "CONNECTOR_DATABASE__PGBOUNCER": "true",
                                      "CONNECTOR_DATABASE__POOL_SIZE": "8"})
    engine: Engine = make_engine(settings.database)
    try:
        migrate.upgrade(engine)
        tenant_id, token = make_tenant(engine, "Bounced")
        app = create_app(settings, engine=engine)
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}

        def provision(n: int) -> list[int]:
            with app.test_client() as client:
                made = client.post("/scim/v2/Users", headers=auth, json={
                    "schemas": [USER], "userName": f"b{n}@example.com", "active": True})
                patched = client.patch(f"/scim/v2/Users/{made.get_json()['id']}",
                                       headers=auth, json={"schemas": [PATCH], "Operations": [
                                           {"op": "replace", "path": "active", "value": False}]})
                found = client.get(f'/scim/v2/Users?filter=userName eq "b{n}@example.com"',
                                   headers=auth)
                assert found.get_json()["Resources"][0]["active"] is False
                return [made.status_code, patched.status_code, found.status_code]

        # Eight clients, three server connections: every transaction may land on another.
        with ThreadPoolExecutor(8) as pool:
            statuses = [s for batch in pool.map(provision, range(48)) for s in batch]
        assert statuses == [201, 200, 200] * 48

        maker = make_sessionmaker(engine)
        with maker() as s:
            page = feed.read(s, tenant_id, feed.parse_query(MultiDict({"limit": "1000"})))
        kinds = [e["type"] for e in page.data]
        assert kinds.count("user.created") == 48 and kinds.count("user.status_changed") == 48

        history = History(engine, "2026-09-01T09:00:00", name="Closing")
        history.create("2026-09-02T10:00:00", "c@x.io", modules=("Hybrid",))
        outcome = close_month(make_sessionmaker(engine, writes=True), history.tenant_id,
                              Month(2026, 9), settings.billing,
                              dt.datetime(2026, 10, 2, tzinfo=dt.UTC))
        assert outcome.created and outcome.close.content_hash
    finally:
        engine.dispose()


def test_without_the_setting_the_cli_says_what_to_set(bounced: str, tmp_path: Path) -> None:
    env = {**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
           "CONNECTOR_DATABASE__URL": bounced}
    env.pop("CONNECTOR_DATABASE__PGBOUNCER", None)
    done = subprocess.run([sys.executable, "-m", "connector.cli", "migrate"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "Set pgbouncer = true in [database]" in done.stderr
    assert "Traceback" not in done.stderr
