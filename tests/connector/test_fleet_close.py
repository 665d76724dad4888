"""A `connector worker` killed (SIGKILL, with its close processes) in the middle of a
month close, then another worker started (issue 19, point 3: "a process killed
mid-close is picked up by another").

Two closes are killed half way, each in a test of its own:

- a tenant closing on its own (15,000 users: three chunks of lines a month, each
  committed): killed once its close attempt has lines committed and is not flipped;
- a batch of 50 small tenants closing together (billing.batch): killed while its one
  transaction has written the closes and is writing their lines.

The kill lands there by watching the database, not by a hook in the product: the
attempt's committed lines, or (PostgreSQL) the worker's backend holding row locks on
both `billing_closes` and `billing_lines` in one open transaction.

Right after the kill the database holds no half-closed month: no month is `closed`
without all of its lines and its `billing.month_closed` event, and the batch left
nothing at all. The next worker deletes what the dead close left (its attempt is silent
for [billing] close_lease_seconds) and closes every due month exactly once: one closed
row, one event, its lines; `connector billing verify` folds each again from the event
log to the same hash (the hash of an undisturbed close).

PostgreSQL through PgBouncer (transaction pooling) as in production, and SQLite for the
single close (one worker on its file). A batch on SQLite holds the write lock from its
first statement: nothing in the file shows "half way", and the batch is one
transaction there as on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, func, select

from billing.catch_up import due_months
from billing.profiles import update_profile
from billing.tenant_fold import CHUNK_USERS
from connector import events, migrate, tenants
from connector.config import BillingSettings, DatabaseSettings
from connector.db import insert_many, make_engine, make_sessionmaker
from connector.events import WriteContext
from connector.models import BillingClose, BillingLine, Event, Tenant, User
from connector.status import Source
from tests.support.pgbouncer import bounced_database

pytestmark = pytest.mark.slow

BIG_USERS = 3 * CHUNK_USERS  # a close of three committed chunks a month
BATCHED, BATCHED_USERS = 50, 300  # one batch (BATCH_TENANTS), one part (BATCH_USERS)
LEASE_SECONDS = 3  # [billing] close_lease_seconds: the dead attempt is swept at once
PRICES = [{"unit": "Hybrid", "plan": "standard", "price": "6.00"}]


def wait_for(what: str, check: Callable[[], bool], seconds: float, step: float = 0.3) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step)


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(URL the workers use, URL the test watches with): PostgreSQL through a
    PgBouncer of the test's own (watched directly), or a SQLite file."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'connector.sqlite3'}"
        yield url, url
        return
    with bounced_database(pool_size=6) as url:
        name = url.rsplit("/", 1)[1]
        yield url, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def seed(engine: Engine, created: dt.datetime, users: list[int]) -> list[str]:
    """Tenants made on `created` with billing info and prices, one per entry of
    `users`, each with that many users created (with a module) the day after."""
    maker = make_sessionmaker(engine, writes=True)
    ids = []
    with maker() as s:
        for n, _ in enumerate(users):
            tenant, _ = tenants.create_tenant(s, f"Close {created:%m}-{n}", created)
            update_profile(s, WriteContext(tenant.id, Source.ADMIN, "test", "test", created),
                           tenant, {"prices": PRICES, "company_name": f"Close {n}"})
            ids.append(tenant.id)
        s.commit()
    at = created + dt.timedelta(days=1)
    for tenant_id, count in zip(ids, users, strict=True):
        people = [(str(uuid.uuid4()), f"user{i}@{tenant_id[:8]}.example") for i in range(count)]
        with maker() as s:
            insert_many(s, User.__table__, [
                {"tenant_id": tenant_id, "id": uid, "user_name": name, "user_name_norm": name,
                 "active": True, "in_deleted_list": False, "guest": False,
                 "external_company_guest": False, "admin": False, "origin": "scim",
                 "created_at": at, "modified_at": at, "version": 1, "data": {}}
                for uid, name in people])
            insert_many(s, Event.__table__, [
                {"tenant_id": tenant_id, "subject_type": "user", "subject_id": uid,
                 "kind": "user.created", "old_value": None,
                 "new_value": {"userName": name, "active": True, "idp_active": True,
                               "in_deleted_list": False, "guest": False,
                               "external_company_guest": False, "admin": False,
                               "modules": ["Hybrid"]},
                 "effective_at": at, "recorded_at": at, "source": "scim", "actor": "test",
                 "correlation_id": "seed", "object_id": None}
                for uid, name in people])
            s.commit()
    return ids


class Worker:
    """`connector worker` processes on the database, in process groups of their own (a
    kill takes the close processes a pass spawns with it)."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url, self.tmp_path = url, tmp_path
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "CONNECTOR_CONFIG": str(self.tmp_path / "none.toml"),
               "CONNECTOR_DATABASE__URL": self.url,
               "CONNECTOR_DATABASE__PGBOUNCER": str(":5432/" not in self.url
                                                    and "postgresql" in self.url).lower(),
               "CONNECTOR_DATABASE__POOL_SIZE": "3",
               "CONNECTOR_BILLING__CLOSE_CHECK_MINUTES": "1",
               "CONNECTOR_BILLING__CLOSE_PARALLEL_TENANTS": "2",
               "CONNECTOR_BILLING__CLOSE_LEASE_SECONDS": str(LEASE_SECONDS)}
        with (self.tmp_path / f"{name}.log").open("w") as out:
            worker = subprocess.Popen([sys.executable, "-m", "connector.cli", "worker"],
                                      env=env, cwd=self.tmp_path, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append(worker)
        return worker

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and every process of its group, at once."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    def stop(self) -> None:
        for worker in self.running:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.running:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
            if worker.returncode == -signal.SIGKILL:
                continue
            with suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)  # close processes left behind

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.tmp_path.glob("*.log")))


def half_built(watch: str, tenant_id: str) -> bool:
    """The tenant's close attempt has committed lines and is not flipped."""
    if watch.startswith("sqlite"):
        with sqlite3.connect(watch.removeprefix("sqlite:///"), timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM billing_closes c JOIN billing_lines l ON l.close_id = "
                "c.id WHERE c.state = 'building' AND c.tenant_id = ?", (tenant_id,)).fetchone()
        return bool(row[0])
    with psycopg.connect(_dsn(watch), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM billing_closes c JOIN billing_lines l ON l.close_id = "
            "c.id WHERE c.state = 'building' AND c.tenant_id = %s", (tenant_id,)).fetchone()
    return bool(row and row[0])


def batch_writing(conn: psycopg.Connection[Any]) -> bool:
    """A backend holds, in one open transaction, the row locks of inserting closes and
    writing lines: a batch between its INSERT of the closes and its commit."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks a JOIN pg_locks b ON a.pid = b.pid "
        "WHERE a.relation = 'billing_closes'::regclass AND a.mode = 'RowExclusiveLock' "
        "AND b.relation = 'billing_lines'::regclass AND b.mode = 'RowExclusiveLock' "
        "AND a.granted AND b.granted").fetchone()
    return bool(row and row[0])


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def closes(engine: Engine) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """Closed months and billing.month_closed events, by (tenant, month)."""
    with make_sessionmaker(engine)() as s:
        closed = Counter(s.execute(select(BillingClose.tenant_id, BillingClose.month).where(
            BillingClose.state == "closed")).all())
        announced = Counter((e.tenant_id, e.new_value["month"]) for e in s.scalars(
            select(Event).where(Event.kind == events.MONTH_CLOSED)))
    return closed, announced


def check_consistent(engine: Engine) -> None:
    """No half-closed month: each closed month has its event and as many lines as it
    counted users; any other attempt is `building` (read by nothing)."""
    closed, announced = closes(engine)
    assert announced == closed and set(closed.values()) <= {1}, (closed, announced)
    with make_sessionmaker(engine)() as s:
        lines = dict(s.execute(select(BillingLine.close_id, func.count())
                               .group_by(BillingLine.close_id)).all())
        for close in s.scalars(select(BillingClose)):
            assert close.state in ("closed", "building"), close.state
            if close.state == "closed":
                assert lines.get(close.id, 0) == close.users_counted, close.id


def all_closed(engine: Engine) -> bool:
    now = dt.datetime.now(dt.UTC)
    with make_sessionmaker(engine)() as s:
        if s.scalar(select(func.count()).where(BillingClose.state == "building")):
            return False  # the dead attempt is not swept yet
        return all(not due_months(s, t, BillingSettings(), now)
                   for t in s.scalars(select(Tenant)))


def check_closed_once(engine: Engine, worker: Worker, tenant_ids: list[str],
                      months: int) -> None:
    check_consistent(engine)
    closed, _ = closes(engine)
    assert sorted(Counter(t for t, _ in closed).items()) == sorted(
        (t, months) for t in tenant_ids), closed
    with make_sessionmaker(engine)() as s:
        assert not s.scalar(select(func.count()).where(BillingClose.state != "closed"))
    verified = subprocess.run(
        [sys.executable, "-m", "connector.cli", "billing", "verify", "--json"],
        env={**os.environ, "CONNECTOR_CONFIG": str(worker.tmp_path / "none.toml"),
             "CONNECTOR_DATABASE__URL": worker.url,
             "CONNECTOR_DATABASE__PGBOUNCER": str("postgresql" in worker.url).lower()},
        capture_output=True, text=True, timeout=300, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["verified"] == sum(closed.values()) and not report["mismatches"], report


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"])
def test_a_worker_killed_mid_close_leaves_no_half_closed_month(
        database_url: str, tmp_path: Path) -> None:
    with database(database_url, tmp_path) as (url, watch):
        engine = make_engine(DatabaseSettings(url=watch, pool_size=2))
        worker = Worker(url, tmp_path)
        try:
            migrate.upgrade(engine)
            # Made in October: October and November are due, closed one after the
            # other, on their own (two months due: no batch).
            october = dt.datetime(2026, 10, 1, 9, tzinfo=dt.UTC)
            big, = seed(engine, october, [BIG_USERS])
            first = worker.start("worker-a")
            wait_for("the close to be half built", lambda: half_built(watch, big), 240,
                     step=0.05)
            worker.kill(first)

            closed, announced = closes(engine)
            assert not any(t == big for t, _ in announced), announced
            check_consistent(engine)
            with make_sessionmaker(engine)() as s:  # what the dead close left
                left = s.scalar(select(func.count()).select_from(BillingLine).join(
                    BillingClose, BillingClose.id == BillingLine.close_id).where(
                    BillingClose.state == "building"))
            assert left and left % CHUNK_USERS == 0 and left < BIG_USERS, left

            worker.start("worker-b")
            wait_for("every due month closed and the dead attempt swept",
                     lambda: all_closed(engine), 240)
            worker.stop()
            check_closed_once(engine, worker, [big], 2)
            logs = worker.logs()
            assert "died mid-way" in logs and "Traceback" not in logs, logs[-3000:]
        finally:
            worker.stop()
            engine.dispose()


@pytest.mark.postgresql
def test_a_worker_killed_mid_batch_close_leaves_no_closed_month_of_the_batch(
        tmp_path: Path) -> None:
    with database("postgresql", tmp_path) as (url, watch):
        engine = make_engine(DatabaseSettings(url=watch, pool_size=2))
        worker = Worker(url, tmp_path)
        try:
            migrate.upgrade(engine)
            # Made in November: only November is due, and 50 of them close in a batch.
            november = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)
            batch = seed(engine, november, [BATCHED_USERS] * BATCHED)
            first = worker.start("worker-a")
            with psycopg.connect(_dsn(watch), autocommit=True) as conn:
                wait_for("the batch to be writing its closes",
                         lambda: batch_writing(conn), 240, step=0.01)
                worker.kill(first)
            closed, announced = closes(engine)
            assert not closed and not announced, (closed, announced)  # all or nothing
            check_consistent(engine)
            with make_sessionmaker(engine)() as s:
                assert not s.scalar(select(func.count()).select_from(BillingLine))

            worker.start("worker-b")
            wait_for("every due month closed", lambda: all_closed(engine), 240)
            worker.stop()
            check_closed_once(engine, worker, batch, 1)
            assert "Traceback" not in worker.logs()
        finally:
            worker.stop()
            engine.dispose()
