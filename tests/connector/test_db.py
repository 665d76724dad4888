"""SQLite under threads: writers queue on the process's lock, never on busy sleeps."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from connector import migrate, tenants
from connector.config import DatabaseSettings
from connector.db import make_engine, make_sessionmaker, write_lock
from connector.models import Tenant


def test_concurrent_writers_commit_or_roll_back_and_release_the_lock(tmp_path: Path) -> None:
    engine = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'w.sqlite3'}"))
    migrate.upgrade(engine)
    writer = make_sessionmaker(engine, writes=True)
    reader = make_sessionmaker(engine, autocommit=True)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(15):
                with writer() as session:
                    tenants.create_tenant(session, f"t{n}-{i}", dt.datetime.now(dt.UTC))
                    if i % 3 == 0:
                        session.rollback()  # abandoned: must release the lock too
                    else:
                        session.commit()
                with reader() as session:
                    session.scalar(select(func.count()).select_from(Tenant))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not write_lock(engine).locked()
    with reader() as session:
        assert session.scalar(select(func.count()).select_from(Tenant)) == 6 * 10
    engine.dispose()


def test_a_session_closed_mid_write_releases_the_lock(tmp_path: Path) -> None:
    engine = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'c.sqlite3'}"))
    migrate.upgrade(engine)
    session = make_sessionmaker(engine, writes=True)()
    tenants.create_tenant(session, "half", dt.datetime.now(dt.UTC))
    session.flush()
    assert write_lock(engine).locked()
    session.close()  # no commit: rolled back
    assert not write_lock(engine).locked()
    with make_sessionmaker(engine)() as s:
        assert s.scalar(select(func.count()).select_from(Tenant)) == 0
    engine.dispose()


@pytest.mark.parametrize("autocommit", [True, False])
def test_read_sessions_do_not_take_the_write_lock(tmp_path: Path, autocommit: bool) -> None:
    engine = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'r.sqlite3'}"))
    migrate.upgrade(engine)
    with make_sessionmaker(engine, autocommit=autocommit)() as session:
        session.scalar(select(func.count()).select_from(Tenant))
        assert not write_lock(engine).locked()
    engine.dispose()
