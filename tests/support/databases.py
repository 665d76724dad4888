"""The databases every storage-backed test runs on: real SQLite and real PostgreSQL.

PostgreSQL: a fresh database is created per test session on the server named by
CONNECTOR_TEST_PG_URL (default: postgres@127.0.0.1:5432, trust auth, via database
`test`) and dropped at the end. Tables are emptied after each test.

`--db sqlite` (or `--db postgresql`) keeps one kind for a quicker loop: the tests
parametrised on the other kind, and under `--db sqlite` those marked `postgresql` (they
reach PostgreSQL themselves), are deselected, not skipped, so the summary counts only
what ran.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from connector import migrate
from connector.config import DatabaseSettings
from connector.db import make_engine, make_sessionmaker
from connector.models import Base
from tests.support import statements

PG_ADMIN_DSN = os.environ.get(
    "CONNECTOR_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)
PG_URL_TEMPLATE = os.environ.get(
    "CONNECTOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
)
KINDS = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--db", choices=("all", *KINDS), default="all",
                     help="run the storage tests on this database only (default: all)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests parametrised on a database kind that `--db` leaves out."""
    wanted = config.getoption("--db")
    if wanted == "all":
        return
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("database_url") if callspec else None
        if kind is None and item.get_closest_marker("postgresql"):
            kind = "postgresql"
        (dropped if kind not in (None, wanted) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session", params=KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[str]:
    """A migrated, empty database of each kind, for the whole session."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("sqlite") / "connector.sqlite3"
        yield f"sqlite:///{path}"
        return
    name = f"connector_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL_TEMPLATE.format(db=name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(DatabaseSettings(url=database_url, pool_size=5))
    statements.install(engine)  # before any thread runs a statement on it
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _empty_tables(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "engine" not in request.fixturenames:
        return
    engine: Engine = request.getfixturevalue("engine")
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            _empty_postgresql(conn, tables)
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))


def _empty_postgresql(conn: Connection, tables: list[str]) -> None:
    """Empty the tables a test wrote to, and restart their id sequences.

    One TRUNCATE of all 43 tables took 0.7 s on these machines (it gives every table and
    index new files), once per PostgreSQL test: minutes of the suite. A test writes to a
    few tables; asking which hold rows and deleting from those takes milliseconds.
    """
    probe = " UNION ALL ".join(
        f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM {name})" for name in tables)
    used = {row[0] for row in conn.execute(text(probe))}
    if not used:
        return
    for name in tables:  # children before parents, as the foreign keys need
        if name in used:
            conn.execute(text(f"DELETE FROM {name}"))
    for (sequence,) in conn.execute(text(
            "SELECT s.oid::regclass::text FROM pg_class s"
            " JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i')"
            " JOIN pg_class t ON t.oid = d.refobjid"
            " WHERE s.relkind = 'S' AND t.relname = ANY(:used)"), {"used": sorted(used)}):
        conn.execute(text("SELECT setval(:sequence, 1, false)"), {"sequence": sequence})


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session the test owns; commit to make rows visible to other connections."""
    with make_sessionmaker(engine)() as session:
        yield session
