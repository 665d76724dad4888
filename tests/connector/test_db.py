"""SQLite under threads: writers queue on the process's lock, never on busy sleeps."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from connector import db, migrate, tenants
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


# -- writers of several processes ----------------------------------------------------------

_WRITER = """
import datetime as dt, sys
from connector import tenants
from connector.config import DatabaseSettings
from connector.db import make_engine, make_sessionmaker
engine = make_engine(DatabaseSettings(url=sys.argv[1]))
writer = make_sessionmaker(engine, writes=True)
for i in range(int(sys.argv[3])):
    with writer() as session:
        tenants.create_tenant(session, f"{sys.argv[2]}-{i}", dt.datetime.now(dt.UTC))
        session.commit()
"""

_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _lock_is_free(path: Path) -> bool:
    """Whether another process could take the writers lock file now."""
    probe = subprocess.run([sys.executable, "-c", (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n    print('busy')\nelse:\n    print('free')\n"), str(path)],
        capture_output=True, text=True, check=True)
    return probe.stdout.strip() == "free"


def test_a_write_transaction_holds_the_lock_file_other_processes_queue_on(
        tmp_path: Path) -> None:
    engine = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'f.sqlite3'}"))
    migrate.upgrade(engine)
    lock_file = tmp_path / "f.sqlite3.writers"
    session = make_sessionmaker(engine, writes=True)()
    tenants.create_tenant(session, "held", dt.datetime.now(dt.UTC))
    session.flush()
    assert not _lock_is_free(lock_file)
    session.commit()
    assert _lock_is_free(lock_file)
    session.close()
    engine.dispose()


def test_writers_of_several_processes_all_commit(tmp_path: Path) -> None:
    """Three processes and this one write at once: every write commits, none meets
    "database is locked" (each waits its turn on the lock file)."""
    url = f"sqlite:///{tmp_path / 'p.sqlite3'}"
    engine = make_engine(DatabaseSettings(url=url))
    migrate.upgrade(engine)
    children = [subprocess.Popen([sys.executable, "-c", _WRITER, url, f"p{n}", "25"],
                                 stderr=subprocess.PIPE, text=True) for n in range(3)]
    writer = make_sessionmaker(engine, writes=True)
    for i in range(25):
        with writer() as session:
            tenants.create_tenant(session, f"here-{i}", dt.datetime.now(dt.UTC))
            session.commit()
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    with make_sessionmaker(engine)() as s:
        assert s.scalar(select(func.count()).select_from(Tenant)) == 4 * 25
    engine.dispose()


def test_a_writer_that_waits_too_long_for_another_process_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 't.sqlite3'}"))
    migrate.upgrade(engine)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER,
                               str(tmp_path / "t.sqlite3.writers"), "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(db, "WRITE_LOCK_WAIT_SECONDS", 0.2)
        session = make_sessionmaker(engine, writes=True)()
        with pytest.raises(OperationalError, match="another process is writing"):
            tenants.create_tenant(session, "late", dt.datetime.now(dt.UTC))
            session.flush()
        session.close()
        assert not write_lock(engine).locked()  # this process's queue moves on
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes its pipe
    with make_sessionmaker(engine, writes=True)() as session:  # the holder is gone
        tenants.create_tenant(session, "now", dt.datetime.now(dt.UTC))
        session.commit()
    engine.dispose()


def test_an_in_memory_database_has_no_lock_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine = make_engine(DatabaseSettings(url="sqlite://"))
    migrate.upgrade(engine)
    with make_sessionmaker(engine, writes=True)() as session:
        tenants.create_tenant(session, "memory", dt.datetime.now(dt.UTC))
        session.commit()
    assert not list(tmp_path.iterdir())
    engine.dispose()
