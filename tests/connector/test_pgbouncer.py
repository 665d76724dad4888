"""The connector through PgBouncer in transaction pooling mode (issue 19, point 3).

A real pgbouncer (Debian's; tests/ensure_services.py installs it) on a port of the
test's own, in front of the machine's PostgreSQL, with fewer server connections than
the app uses so transactions hop between them: migrations, concurrent SCIM writes and
reads (the same statements again and again, which psycopg would prepare after five
runs: prepared statements do not survive a hop), the event feed (its snapshot horizon),
a month close and a close pass in processes of its own all work with
`database.pgbouncer = true`. Without the setting the
CLI says what to set instead of failing on PgBouncer's refusal of startup options."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine
from werkzeug.datastructures import MultiDict

from billing.calendar import Month
from billing.catch_up import close_due
from billing.close import close_month
from connector import feed, migrate
from connector.app import create_app
from connector.config import load_settings
from connector.db import make_engine, make_sessionmaker
from tests.billing.history import History
from tests.support.clients import make_tenant
from tests.support.pgbouncer import bounced_database

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]


@pytest.fixture
def bounced() -> Iterator[str]:
    """A fresh database through a pgbouncer of the test's own (transaction pooling,
    3 server connections)."""
    with bounced_database(pool_size=3) as url:
        yield url


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


def test_the_close_pass_processes_connect_through_pgbouncer(bounced: str, tmp_path: Path
                                                            ) -> None:
    """The scheduler's close pass (its sessionmaker marks writes, so its bind is another
    Engine object) closes tenants side by side in spawned processes: they connect as
    configured, through PgBouncer without startup options, and close every month."""
    settings = load_settings(environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
                                      "CONNECTOR_DATABASE__URL": bounced,
                                      "CONNECTOR_DATABASE__PGBOUNCER": "true"})
    engine = make_engine(settings.database)
    try:
        migrate.upgrade(engine)
        for n in range(3):
            history = History(engine, "2026-09-01T09:00:00", name=f"Side {n}")
            history.create("2026-09-02T10:00:00", f"s{n}@x.io", modules=("Hybrid",))
        result = close_due(make_sessionmaker(engine, writes=True),
                           dataclasses.replace(settings.billing, close_parallel_tenants=2),
                           dt.datetime(2026, 10, 2, tzinfo=dt.UTC))
        assert result.failed == []
        assert sorted(month for _, month, _ in result.closed) == ["2026-09"] * 3
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
