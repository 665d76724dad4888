"""Backup and restore (issue 19, point 5; docs/operations.md): `pg_dump` of a live
database, taken while writes go on, restores to a database whose closed months verify
to the same hashes, and whose event log is whole up to the dump's snapshot (every user
the restored directory holds has its creation event, every event its user)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import delete, func, select

from billing.calendar import Month
from billing.close import close_month
from billing.verify import recompute_hash
from connector import migrate
from connector.config import BillingSettings, DatabaseSettings
from connector.db import make_engine, make_sessionmaker
from connector.models import BillingClose, Event, User
from tests.billing.history import History
from tests.support.databases import PG_ADMIN_DSN

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]
PG = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]


def _url(name: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    names = (f"connector_live_{uuid.uuid4().hex[:8]}", f"connector_restored_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield names
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_dump_of_a_live_database_restores_to_the_same_close_hashes(
        databases: tuple[str, str], tmp_path: Path) -> None:
    live, restored = databases
    engine = make_engine(DatabaseSettings(url=_url(live)))
    migrate.upgrade(engine)
    history = History(engine, "2026-09-01T09:00:00")
    users = [history.create("2026-09-02T10:00:00", f"u{i}@x.io", modules=("Hybrid",))
             for i in range(20)]
    for user_id in users[:5]:
        history.set_active("2026-09-20T10:00:00", user_id, False)
    settings = BillingSettings()
    maker = make_sessionmaker(engine, writes=True)
    closed = close_month(maker, history.tenant_id, Month(2026, 9), settings,
                         dt.datetime(2026, 10, 2, tzinfo=dt.UTC))

    # Writes go on while the dump runs: users created and disabled in October.
    stop = threading.Event()
    written: list[str] = []

    def write() -> None:
        n = 0
        while not stop.is_set():
            user_id = history.create("2026-10-05T10:00:00", f"live{n}@x.io")
            history.set_active("2026-10-06T10:00:00", user_id, False)
            written.append(user_id)
            n += 1

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        dump = tmp_path / "connector.dump"
        subprocess.run(["pg_dump", *PG, "-Fc", "-d", live, "-f", str(dump)], check=True,
                       capture_output=True, timeout=120)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert written, "no write happened during the dump"
    subprocess.run(["pg_restore", *PG, "-d", restored, "--no-owner", str(dump)], check=True,
                   capture_output=True, timeout=120)
    engine.dispose()

    copy = make_engine(DatabaseSettings(url=_url(restored)))
    try:
        with make_sessionmaker(copy)() as s:
            close = s.scalar(select(BillingClose).where(
                BillingClose.tenant_id == history.tenant_id, BillingClose.month == "2026-09"))
            assert close is not None
            assert close.content_hash == closed.close.content_hash
            assert recompute_hash(s, close) == closed.close.content_hash
            # A consistent snapshot: users and their creation events agree.
            user_ids = set(s.scalars(select(User.id).where(User.tenant_id == history.tenant_id)))
            created = set(s.scalars(select(Event.subject_id).where(
                Event.tenant_id == history.tenant_id, Event.kind == "user.created")))
            assert user_ids == created
            assert len(user_ids) >= 20
            statuses = s.scalar(select(func.count()).select_from(Event).where(
                Event.tenant_id == history.tenant_id, Event.kind == "user.status",
                Event.subject_id.in_(user_ids - set(users))))
            # Each October user is created, then disabled in a second transaction: the
            # dump may hold the last one without its second write, never the reverse.
            assert len(user_ids) - 20 - 1 <= statuses <= len(user_ids) - 20
        # `connector billing verify` says so too, on the restored database.
        checked = subprocess.run(
            [sys.executable, "-m", "connector.cli", "billing", "verify", "--json"],
            env={**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
                 "CONNECTOR_DATABASE__URL": _url(restored)},
            capture_output=True, text=True, timeout=120, check=False)
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout) == {"verified": 1, "mismatches": [], "archived": []}
        with copy.begin() as conn:  # an event of September lost: the close no longer folds
            conn.execute(delete(Event).where(Event.tenant_id == history.tenant_id,
                                             Event.kind == "user.status",
                                             Event.subject_id == users[0]))
        broken = subprocess.run(
            [sys.executable, "-m", "connector.cli", "billing", "verify"],
            env={**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
                 "CONNECTOR_DATABASE__URL": _url(restored)},
            capture_output=True, text=True, timeout=120, check=False)
        assert broken.returncode == 4 and "MISMATCH 2026-09 v1" in broken.stdout
        assert "0 of 1 closed months verify" in broken.stdout
        # The restored database migrates (nothing to do) and closes October.
        migrate.upgrade(copy)
        october = close_month(make_sessionmaker(copy, writes=True), history.tenant_id,
                              Month(2026, 10), settings, dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
        assert october.created
    finally:
        copy.dispose()
