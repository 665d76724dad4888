"""Engines and sessions: connection lifetime lives here and nowhere else."""

from __future__ import annotations

import fcntl
import json
import logging
import operator
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from sqlalchemy import (
    ARRAY,
    JSON,
    Connection,
    Engine,
    Table,
    Update,
    and_,
    any_,
    bindparam,
    create_engine,
    delete,
    event,
    exc,
    exists,
    func,
    insert,
    literal,
    select,
    union_all,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool
from sqlalchemy.sql.expression import Executable

from connector import serving
from connector.config import ConfigError, DatabaseSettings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from flask import Flask


def refused_value(error: BaseException) -> bool:
    """Whether the database refused a statement for a value it cannot take (SQLSTATE
    class 22, data exception: a text over a column's size; class 54, program limit: an
    index row over 2,704 bytes) rather than for being busy or unreachable. The request's
    values are the client's to correct: a 400, not a 500 or a 503 to retry."""
    if not isinstance(error, exc.DBAPIError):
        return False
    state = str(getattr(error.orig, "sqlstate", "") or "")
    return state[:2] in ("22", "54")


URL_FORMS = ("sqlite:///path/to/file.sqlite3 or "
             "postgresql+psycopg://user:password@host:5432/dbname")
DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")  # what the connector installs


def database_url(settings: DatabaseSettings) -> URL:
    """`settings.url` parsed, or a ConfigError saying what to write instead (never the
    URL itself: it may hold a password)."""
    try:
        url = make_url(settings.url)
    except (exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(f"[database] url (CONNECTOR_DATABASE__URL) is not a database URL; "
                          f"write {URL_FORMS}.") from None
    if url.drivername not in DRIVERS:
        raise ConfigError(f"[database] url (CONNECTOR_DATABASE__URL) starts with "
                          f"{url.drivername}://, a database or driver the connector does not "
                          f"use; write {URL_FORMS}.")
    return url


def make_engine(settings: DatabaseSettings) -> Engine:
    """Create the engine for `settings.url`, with SQLite made safe for concurrent use."""
    url = database_url(settings)
    kwargs: dict[str, Any] = {"echo": settings.echo}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        _cache_long_statements()
        # Short OLTP statements: JIT compilation cost more than the query it sped up once
        # a page query's estimated cost crossed jit_above_cost (docs/benchmarks.md,
        # "Measurements behind the code"). Through PgBouncer (transaction pooling) a
        # prepared statement may be gone at the next transaction, which may run on
        # another server connection, and startup options are refused.
        kwargs["connect_args"] = ({"prepare_threshold": None} if settings.pgbouncer
                                  else {"options": "-c jit=off"})
        kwargs["pool_size"], kwargs["max_overflow"] = pool_shape(settings)
        kwargs["pool_pre_ping"] = settings.pool_pre_ping
        kwargs["pool_recycle"] = settings.pool_recycle
    engine = create_engine(url, **kwargs)
    _SETTINGS[engine.pool] = settings
    if url.get_backend_name() == "sqlite":
        _WRITE_LOCKS[engine.pool] = threading.Lock()
        _WRITERS_FILES[engine.pool] = _writers_file(url.database)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "commit", _release_write_lock)
        event.listen(engine, "rollback", _release_write_lock)
        event.listen(engine.pool, "checkin", _release_on_checkin)
    event.listen(engine, "before_cursor_execute", _guard_writes)
    # Registered here, before any thread can run a statement on the engine: SQLAlchemy's
    # event lists are not safe to change while another thread iterates them (a listener
    # added on first use once broke a statement of a sync round's read-ahead thread
    # with "deque mutated during iteration").
    event.listen(engine, "do_execute", _capture_execute)
    event.listen(engine, "do_executemany", _capture_executemany)
    return engine


DEFAULT_OVERFLOW = 10  # SQLAlchemy's own default for max_overflow


def pool_shape(settings: DatabaseSettings) -> tuple[int, int]:
    """(connections kept, connections beyond them) for a PostgreSQL engine.

    As set, or by default (`max_overflow = -1`) up to pool_size + 10 connections either
    way: with threads, 10 of them opened beyond the pool when needed (SQLAlchemy's
    default); under gevent all of them kept in the pool. There one worker serves many
    connections at once, and overflow connections were opened and closed request after
    request, which cost a third of the throughput (figures in docs/benchmarks.md,
    "Measurements behind the code")."""
    if settings.max_overflow >= 0:
        return settings.pool_size, settings.max_overflow
    if serving.gevent_patched():
        return settings.pool_size + DEFAULT_OVERFLOW, 0
    return settings.pool_size, DEFAULT_OVERFLOW


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from pysqlite so `_sqlite_begin` decides how to BEGIN.
    dbapi_connection.isolation_level = None
    # WAL lets readers proceed during a write; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # 32 MiB of page cache (the default is 2 MiB) and a checkpoint every ~40 MB of WAL
    # (default ~4 MB): loading a large directory touches every index of users at
    # random places; with the defaults each page of 200 users cost more as the tables
    # grew, with these the rate stays flat (docs/benchmarks.md, "Measurements behind the
    # code").
    cursor.execute("PRAGMA cache_size=-32768")
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.close()


WRITE_LOCK_WAIT_SECONDS = 30
# One lock per SQLite pool (engines made with execution_options share their pool).
_WRITE_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
# By pool: an engine with execution options (a `writes=True` sessionmaker's bind) is
# another Engine object sharing the pool of the one `make_engine` made.
_SETTINGS: weakref.WeakKeyDictionary[Pool, DatabaseSettings] = weakref.WeakKeyDictionary()


def settings_of(engine: Engine) -> DatabaseSettings:
    """The settings an engine was made with (`make_engine`), for a process that must
    connect the same way (a month-close process: through PgBouncer too); an engine
    made otherwise gets the defaults for its URL."""
    made = _SETTINGS.get(engine.pool)
    return made if made is not None else DatabaseSettings(
        url=engine.url.render_as_string(hide_password=False))


def write_lock(engine: Engine) -> threading.Lock:
    """The lock SQLite writers of this process queue on."""
    return _WRITE_LOCKS[engine.pool]


# By pool: the path of the lock file SQLite writers of every process queue on (None for
# an in-memory database), and, by process, the file opened for it.
_WRITERS_FILES: weakref.WeakKeyDictionary[Pool, str | None] = weakref.WeakKeyDictionary()
_OPENED: dict[tuple[str, int], int] = {}
_OPENED_LOCK = threading.Lock()
# The polling steps while another process writes: short, because a write transaction
# lasts a few milliseconds, where SQLite's busy handler sleeps up to 100 ms at a time.
_FILE_LOCK_POLL = (0.0002, 0.0005, 0.001, 0.002)


def _writers_file(database: str | None) -> str | None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return str(Path(database).resolve()) + ".writers"


def _lock_writers_file(conn: Any, deadline: float) -> bool:
    """Take the database's writers lock file (flock, exclusive): writers of every
    process queue on it before SQLite's own lock, woken within a millisecond, not by
    SQLite's busy handler. False when `deadline` (time.monotonic) passed first."""
    path = _WRITERS_FILES.get(conn.engine.pool)
    if path is None:
        return True
    key = (path, os.getpid())  # a file opened before a fork would share its lock
    fd = _OPENED.get(key)
    if fd is None:
        with _OPENED_LOCK:
            fd = _OPENED.get(key)
            if fd is None:
                fd = _OPENED[key] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                            0o600)
    step = 0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_FILE_LOCK_POLL[step])  # cooperative under gevent
            step = min(step + 1, len(_FILE_LOCK_POLL) - 1)
            continue
        conn.info["held_writers_file"] = fd
        return True


def _unlock_writers_file(info: Any) -> None:
    fd = info.pop("held_writers_file", None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _sqlite_begin(conn: Any) -> None:
    options = conn.get_execution_options()
    if options.get("no_begin"):
        return  # a read-only session: each statement is its own transaction
    if not options.get("writes"):
        conn.exec_driver_sql("BEGIN")
        return
    # A write transaction takes SQLite's write lock up front (BEGIN IMMEDIATE): a
    # read-then-write transaction that upgrades later can fail with "database is
    # locked" at once instead of waiting for busy_timeout. Writers of this process
    # first queue on a lock of our own: SQLite's busy handler polls with sleeps of up
    # to 100 ms, which turned a few threads writing at once into second-long tail
    # latencies (docs/benchmarks.md, "Measurements behind the code").
    # Then the writers of the other processes (web processes, the worker, a sync
    # round's page writer, a CLI command) queue on a lock file, for the same reason.
    _take_write_locks(conn)
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    except BaseException:
        _release_write_lock(conn)
        raise


def _take_write_locks(conn: Any) -> None:
    """This process's writers queue, then every process's (`_lock_writers_file`)."""
    deadline = time.monotonic() + WRITE_LOCK_WAIT_SECONDS
    lock = write_lock(conn.engine)
    if not lock.acquire(timeout=WRITE_LOCK_WAIT_SECONDS):
        raise exc.OperationalError("BEGIN IMMEDIATE", None,
                                   TimeoutError("waited too long for the SQLite write lock"))
    conn.info["held_write_lock"] = lock
    try:
        if not _lock_writers_file(conn, deadline):
            raise exc.OperationalError(
                "BEGIN IMMEDIATE", None,
                TimeoutError("waited too long for the SQLite write lock (another process "
                             "is writing)"))
    except BaseException:
        _release_held(conn.info)
        raise


def _release_write_lock(conn: Any) -> None:
    _release_held(conn.info)


def _release_held(info: Any) -> None:
    _unlock_writers_file(info)  # the other processes' turn, then this process's
    lock = info.pop("held_write_lock", None)
    if lock is not None:
        lock.release()


def _release_on_checkin(_dbapi_connection: Any, record: Any) -> None:
    # A connection handed back without a commit or rollback event must not keep the lock.
    _release_held(record.info)


def make_sessionmaker(engine: Engine, writes: bool = False, autocommit: bool = False,
                      one_statement: bool = False) -> sessionmaker[Session]:
    """One factory serves web requests, CLI commands and scheduler jobs alike.

    `writes=True` marks sessions that will write, so SQLite locks for writing at BEGIN.
    `autocommit=True` is for read-only requests: every statement runs on its own, with
    no BEGIN and no ROLLBACK, which on PostgreSQL saves two of a GET's three round trips.
    Under READ COMMITTED (PostgreSQL's default) separate statements never shared one
    snapshot anyway; a read that needs one must not use it.
    `one_statement=True` (with `writes`) is for a request whose reads need no snapshot
    and whose writes are ONE statement, atomic on its own (a SCIM POST /Users: its
    `insert_together`): on PostgreSQL it runs without BEGIN and COMMIT, two of its four
    round trips (docs/benchmarks.md, "Measurements behind the code"); on SQLite its
    reads take no lock and that statement's inserts and UPDATE run in a transaction of
    their own, the only time the request holds SQLite's one write lock: the Python work
    of the request (parsing, rendering, building the rows) no longer keeps the other
    processes' writers waiting.
    """
    bind = engine
    if writes and one_statement and engine.dialect.name == "postgresql":
        bind = engine.execution_options(writes=True, isolation_level="AUTOCOMMIT")
    elif writes and one_statement and engine.dialect.name == "sqlite":
        # Reads without SQLite's write lock; `insert_together` takes it for its writes
        # alone (`_sqlite_write_alone`).
        bind = engine.execution_options(writes=True, no_begin=True)
    elif writes:
        bind = engine.execution_options(writes=True)
    elif autocommit:
        bind = autocommit_engine(engine)
    return sessionmaker(bind=bind, expire_on_commit=False, autoflush=False)


class NeedsTransaction(Exception):  # noqa: N818 - a signal to the caller, not a failure
    """A guarded session (`get_session(guarded=True)`) met what it cannot do without a
    transaction: a write other than its one `insert_together`, or that statement
    finding the row changed since it was read without a lock. Nothing was written: the
    caller runs the work again in an ordinary write transaction (`restart_writes`)."""


def writes_guarded(session: Session) -> bool:
    """Whether the session runs guarded (autocommit, one `insert_together` allowed)."""
    conn = session.connection()
    return conn.get_execution_options().get("guard_writes") is not None


def _guard_writes(conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
    """On a guarded connection, refuse (before it is sent) any statement but a plain
    read or the one `insert_together` allowed: autocommit would make it permanent."""
    guard = conn.get_execution_options().get("guard_writes")
    if guard is None or guard["allowed"]:
        return
    if statement.lstrip()[:6].upper() == "SELECT" and "FOR UPDATE" not in statement:
        return
    _refuse_guarded(guard, statement.split(None, 1)[0])


def _refuse_guarded(guard: dict[str, Any], what: str) -> None:
    """A write the guarded connection does not allow: start again in a transaction."""
    if guard.get("wrote"):  # too late to start again: a bug, not a retry
        raise RuntimeError("a guarded session wrote after its one statement")
    raise NeedsTransaction(what)


def autocommit_engine(engine: Engine) -> Engine:
    """`engine` (its pool) running every statement on its own: no BEGIN, no ROLLBACK."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(no_begin=True)  # see `_sqlite_begin`
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def init_app(app: Flask, engine: Engine) -> None:
    app.extensions["engine"] = engine
    app.extensions["sessionmaker"] = make_sessionmaker(engine, autocommit=True)
    app.extensions["write_sessionmaker"] = make_sessionmaker(engine, writes=True)
    app.extensions["one_statement_sessionmaker"] = make_sessionmaker(
        engine, writes=True, one_statement=True)
    app.extensions["read_engine"] = autocommit_engine(engine)
    app.teardown_appcontext(_close_session)


def get_session(writes: bool = False, one_statement: bool = False, guarded: bool = False
                ) -> Session:
    """The request's session, opened on first use and closed when the request ends.
    `one_statement`: see `make_sessionmaker` (the first use decides). `guarded` (with
    it, on PostgreSQL): reads are made without locks and the one write allowed is an
    `insert_together(only_if_counted=True)`; anything else raises `NeedsTransaction`
    before it is sent (a SCIM PATCH: 3 round trips instead of 5 when it changes one
    user's columns, the common case; otherwise the caller starts again with
    `restart_writes`)."""
    # Flask here, not at the top: every process reaches this module (each `connector`
    # command, the scheduler), most of them never serve a request.
    from flask import current_app, g

    if "db" not in g:
        key = ("one_statement_sessionmaker" if writes and one_statement
               else "write_sessionmaker" if writes else "sessionmaker")
        conn = g.get("db_conn")
        if conn is not None and not writes:  # the request's read connection: share it
            g.db = current_app.extensions[key](bind=conn)  # closed at teardown
        else:
            if conn is not None:  # autocommit: nothing of it is pending
                g.pop("db_conn").close()
            g.db = current_app.extensions[key]()
            if guarded and one_statement:
                g.db.connection(execution_options={"guard_writes": {"allowed": False}})
    return g.db


def restart_writes() -> Session:
    """Drop the request's session (guarded: nothing of it was written) and open an
    ordinary write session in its place."""
    from flask import g

    session = g.pop("db", None)
    if session is not None:
        session.rollback()
        session.close()
    return get_session(writes=True)


def read_connection() -> Connection:
    """A connection for a request's reads of one statement each (autocommit, as the
    read session's): the request's session's when it has one, else one checked out
    from the pool for the rest of the request.

    Without a Session around it, a GET by id costs about half the CPU of its database
    part (no session transaction to begin, roll back and close: docs/benchmarks.md,
    "Measurements behind the code"). A session the request
    opens later runs on this same connection (`get_session`), so a request never holds
    two of the pool's connections.
    """
    from flask import current_app, g

    if "db" in g:
        return g.db.connection()
    conn: Connection | None = g.get("db_conn")
    if conn is None:
        conn = g.db_conn = current_app.extensions["read_engine"].connect()
    return conn


# Statements a request ran in its transaction that must stay even when that transaction
# is rolled back (`keep_even_if_rolled_back`); a commit forgets them.
_KEPT = "kept_even_if_rolled_back"


def keep_even_if_rolled_back(session: Session, statement: Executable) -> None:
    """Run `statement` in the session's transaction; if the request ends without
    committing it (a refused write, a write that changed nothing), run it again at the
    end, in a transaction of its own. For a record of the request itself, such as an API
    token's last use, which must not depend on whether the request wrote anything else.
    In an autocommit session the statement is written for good at once."""
    session.execute(statement)
    options = session.get_bind().get_execution_options()
    if options.get("isolation_level") == "AUTOCOMMIT" or options.get("no_begin"):
        return
    session.info.setdefault(_KEPT, []).append(statement)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    session.info.pop(_KEPT, None)


def _close_session(_exc: BaseException | None) -> None:
    from flask import g

    session = g.pop("db", None)
    if session is not None:
        kept = session.info.pop(_KEPT, None)
        session.rollback()
        if kept:
            _write_kept(session, kept)
        session.close()
    conn = g.pop("db_conn", None)
    if conn is not None:
        conn.close()


def _write_kept(session: Session, kept: list[Executable]) -> None:
    """The kept statements of a request that did not commit, in their own transaction;
    a failure is logged, never raised into the request's end."""
    try:
        for statement in kept:
            session.execute(statement)
        session.commit()
    except Exception:  # noqa: BLE001 - the answer is sent: log it, lose only this record
        session.rollback()
        log.warning("could not keep a record of the request after its rollback",
                    exc_info=True)


def insert_together(session: Session, inserts: Sequence[tuple[Table, list[dict[str, Any]]]],
                    counted: Update, counted_params: dict[str, Any],
                    only_if_counted: bool = False) -> int:
    """Insert the rows into their tables and run the `counted` UPDATE, in the session's
    transaction; return how many rows `counted` changed. `only_if_counted`: on
    PostgreSQL, and in a SQLite one-statement session, the rows are inserted only if
    `counted` changed a row (elsewhere the caller rolls back when it did not); the one
    write a guarded session allows (`NeedsTransaction`).

    On PostgreSQL all of it goes out as ONE statement, each table's INSERT a
    data-modifying WITH clause: one round trip instead of one per table (a SCIM POST's
    user, index rows, modules, event and counter; figures in docs/benchmarks.md,
    "Measurements behind the code").
    The clauses share one snapshot and none sees another's rows, so nothing here may
    depend on another's effect; foreign keys are checked at the end of the statement,
    so a parent and its children can go together. A failing clause fails it all. The
    rows of one table are one INSERT and take their ids in list order (events do).

    The statement is built once per shape (which tables, which columns, how many rows)
    with named parameters and reused (several rows as INSERT ... SELECT ... UNION ALL):
    SQLAlchemy caches no multi-row VALUES statement, and compiling one on every call
    cost more than the round trips it saves.
    Elsewhere (SQLite, no round trips) the inserts run one table after another; in a
    one-statement session (reads without a transaction) they and `counted` get a write
    transaction of their own, the only time such a request holds SQLite's write lock
    (`_sqlite_write_alone`).
    """
    inserts = [(table, rows) for table, rows in inserts if rows]
    if session.autoflush:  # as `session.execute` would (request sessions do not autoflush)
        session.flush()
    if session.get_bind().dialect.name != "postgresql":
        conn = session.connection()  # Core statements: no ORM execute path (see below)
        if conn.get_execution_options().get("no_begin"):
            return _sqlite_write_alone(conn, inserts, counted, counted_params,
                                       only_if_counted)
        _sqlite_inserts(conn, inserts)
        return int(conn.execute(counted, counted_params).rowcount)
    shape = (counted, tuple((table, tuple(rows[0]), len(rows)) for table, rows in inserts),
             only_if_counted)
    statement = _TOGETHER.get(shape)
    if statement is None:
        statement = _TOGETHER[shape] = _together_statement(shape)
    params = dict(counted_params)
    for n, (_table, rows) in enumerate(inserts):
        for i, row in enumerate(rows):
            params.update((f"w{n}_{i}_{key}", value) for key, value in row.items())
    # Core on the session's connection: the ORM's execute path (events, compile state)
    # does nothing for a Core statement but cost time.
    conn = session.connection()
    guard = conn.get_execution_options().get("guard_writes")
    if guard is None:
        return int(conn.execute(statement, params).scalar_one())
    guard["allowed"] = True  # the one write of a guarded session
    try:
        changed = int(conn.execute(statement, params).scalar_one())
    finally:
        guard["allowed"] = False
    guard["wrote"] = changed > 0 or not only_if_counted
    return changed


_TOGETHER: dict[Any, Any] = {}
_INSERTS: dict[Table, Any] = {}  # insert(table), built once per table


def _sqlite_inserts(conn: Connection, inserts: Sequence[tuple[Table, list[dict[str, Any]]]]
                    ) -> None:
    for table, rows in inserts:
        statement = _INSERTS.get(table)
        if statement is None:
            statement = _INSERTS[table] = insert(table)
        conn.execute(statement, rows)


def _sqlite_prepared_inserts(conn: Connection,
                             inserts: Sequence[tuple[Table, list[dict[str, Any]]]]
                             ) -> Callable[[], None]:
    """The inserts, their parameters converted now, sent when called: the conversion
    (JSON, instants, a dict read per row) is done before the write lock is taken."""
    ready = [(table, rows, _sqlite_insert_params(conn, table, rows))
             for table, rows in inserts]

    def send() -> None:
        for table, rows, prepared in ready:
            if prepared is None:
                _sqlite_inserts(conn, [(table, rows)])
            else:
                conn.exec_driver_sql(*prepared)
    return send


def _sqlite_write_alone(conn: Connection,
                        inserts: Sequence[tuple[Table, list[dict[str, Any]]]],
                        counted: Update, counted_params: dict[str, Any],
                        only_if_counted: bool) -> int:
    """`insert_together` on a SQLite connection whose reads ran without a transaction
    (`make_sessionmaker(one_statement=True)`): its writes in one write transaction of
    their own, `counted` first when the rows go in only if it changed one (a guarded
    PATCH: nothing is written when the user changed since it was read)."""
    send_inserts = _sqlite_prepared_inserts(conn, inserts)
    guard = conn.get_execution_options().get("guard_writes")
    if guard is not None:
        guard["allowed"] = True  # the one write of a guarded session
    try:
        _take_write_locks(conn)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release_held(conn.info)
            raise
        try:
            if only_if_counted:
                changed = int(conn.execute(counted, counted_params).rowcount)
                if changed:
                    send_inserts()
            else:
                send_inserts()
                changed = int(conn.execute(counted, counted_params).rowcount)
            conn.exec_driver_sql("COMMIT" if changed or not only_if_counted else "ROLLBACK")
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        finally:
            _release_held(conn.info)
    finally:
        if guard is not None:
            guard["allowed"] = False
    if guard is not None:
        guard["wrote"] = changed > 0 or not only_if_counted
    return changed


def _cache_long_statements() -> None:
    """Let psycopg keep its conversion of our long statements (a SCIM POST's
    `insert_together`: about 80 parameters in 6 KB of SQL). psycopg 3 converts a query
    (placeholders to $n) through an LRU cache, except queries over 4 KB or 50
    parameters, which ORMs make in shapes that rarely repeat; it converted the POST's
    statement again on every request, a tenth of the request's CPU time (docs/
    benchmarks.md, "SCIM writes: CPU per request"). Ours repeat
    (`_TOGETHER` holds few shapes), and lists of values are bound as one array
    (`one_of`), so the cache stays useful. Only raised, never lowered; a psycopg
    without these settings is left as it is."""
    from psycopg import _queries

    if isinstance(getattr(_queries, "MAX_CACHED_STATEMENT_LENGTH", None), int) and \
            isinstance(getattr(_queries, "MAX_CACHED_STATEMENT_PARAMS", None), int):
        _queries.MAX_CACHED_STATEMENT_LENGTH = max(_queries.MAX_CACHED_STATEMENT_LENGTH,
                                                   CACHED_STATEMENT_LENGTH)
        _queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS,
                                                   CACHED_STATEMENT_PARAMS)


CACHED_STATEMENT_LENGTH = 16_384
CACHED_STATEMENT_PARAMS = 200


def _together_statement(shape: Any) -> Any:
    if len(_TOGETHER) >= 256:  # shapes are few (rows per table); never grow unbounded
        _TOGETHER.clear()
    counted, tables, only_if_counted = shape
    changed = counted.returning(literal(1)).cte("counted")
    writes = []
    for n, (table, keys, count) in enumerate(tables):
        rows = [[bindparam(f"w{n}_{i}_{key}", type_=table.c[key].type) for key in keys]
                for i in range(count)]
        if only_if_counted:  # each row's SELECT only when the UPDATE changed a row
            selects = [select(*r).where(exists(select(literal(1)).select_from(changed)))
                       for r in rows]
            write = insert(table).from_select(
                keys, selects[0] if count == 1 else union_all(*selects))
        elif count == 1:
            write = insert(table).values(dict(zip(keys, rows[0], strict=True)))
        else:  # one INSERT per table, its rows in list order (as a multi-row VALUES)
            write = insert(table).from_select(keys, union_all(*(select(*r) for r in rows)))
        writes.append(write.cte(f"w{n}"))
    return select(func.count()).select_from(changed).add_cte(*writes)


def commit_without_waiting_for_disk(session: Session) -> None:
    """Let this transaction's COMMIT return before its WAL reaches the disk (PostgreSQL's
    `synchronous_commit = off`, for this transaction only; SQLite in WAL mode with
    `synchronous=NORMAL` does not wait at a commit anyway).

    Only for work that is redone by itself when lost: an Entra sync page, whose cursor
    moves in the same transaction. A crash of the database's host within its WAL
    writer's delay (a fraction of a second) may lose the last pages committed; the
    database stays consistent (a transaction is there whole or not at all), and the round
    reads those pages from Graph again. No caller is answered on the strength of such a
    commit (SCIM and admin writes keep waiting for the disk), and any later commit that
    waits for the disk makes the earlier ones durable with it (the WAL is one sequence).
    The wait it spares is the WAL flush of a page's thousands of rows (several ms, more
    after a checkpoint, when changed pages go whole to the WAL)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql("SET LOCAL synchronous_commit = off")


def one_of(session: Session, column: Any, values: Sequence[Any]) -> Any:
    """`column IN (values)`; on PostgreSQL `column = ANY(:array)`: one bound array
    instead of one bind per value, so a page's lookup of 200 ids is compiled once and
    cached (an IN list is rendered again for every execution: bind by bind, by
    SQLAlchemy and then by psycopg)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def delete_many(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Delete the table's rows equal to these (each a dict of the same columns, usually
    the primary key's): on PostgreSQL ONE statement, the rows bound as one array per
    column (`DELETE ... USING unnest(...)`; a statement per row, even pipelined, costs
    the server a statement each), on SQLite an executemany (no round trips there)."""
    if not rows:
        return
    keys = tuple(rows[0])
    connection = session.connection()
    postgresql = session.get_bind().dialect.name == "postgresql"
    statement = _DELETES.get((table, keys, postgresql))
    if statement is None:
        if len(_DELETES) >= 64:  # a few (table, columns) pairs; never grow unbounded
            _DELETES.clear()
        if postgresql:
            given = func.unnest(*(bindparam(f"d_{k}", type_=ARRAY(table.c[k].type))
                                  for k in keys)).table_valued(*keys).render_derived(
                name="given")
            statement = delete(table).where(and_(*(table.c[k] == given.c[k] for k in keys)))
        else:
            statement = delete(table).where(
                and_(*(table.c[k] == bindparam(f"d_{k}", type_=table.c[k].type)
                       for k in keys)))
        _DELETES[(table, keys, postgresql)] = statement
    if postgresql:
        connection.execute(statement, {f"d_{k}": [row[k] for row in rows] for k in keys})
    else:
        connection.execute(statement, [{f"d_{k}": row[k] for k in keys} for row in rows])


_DELETES: dict[Any, Any] = {}  # delete_many's statements, by (table, columns, PostgreSQL)


def json_text(value: Any) -> str:
    """A JSON column's value as COPY writes it: orjson's encoding (a sync page's events
    and log entries: a tenth of the standard encoder's time), or the standard one's for
    what orjson refuses (an integer beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


# A connection's info key: while it holds a list, the writes made on the connection are
# appended to it instead of being run (azure_sync.pipeline: a sync page's writes, run by
# another process).
CAPTURED_WRITES = "captured_writes"


class NotCapturable(Exception):
    """The page's writes cannot be captured as they are: apply it the ordinary way."""


_WRITES = ("INSERT", "UPDATE", "DELETE")


def _capture(context: Any, kind: str, statement: str, parameters: Any) -> bool | None:
    try:
        ops = context.root_connection.info.get(CAPTURED_WRITES)
    except NotImplementedError:  # the dialect's first connection, ad hoc: it has no info
        return None
    if ops is None:
        return None
    if statement.lstrip()[:6].upper() not in _WRITES:
        return None  # a read (or a savepoint): runs
    if "RETURNING" in statement.upper():
        raise NotCapturable("a write that needs its result")
    ops.append((kind, statement, parameters, False))
    return True  # not run here: the writer runs it


def _capture_execute(_cursor: Any, statement: str, parameters: Any, context: Any
                     ) -> bool | None:
    return _capture(context, "execute", statement, parameters)


def _capture_executemany(_cursor: Any, statement: str, parameters: Any, context: Any
                         ) -> bool | None:
    return _capture(context, "executemany", statement, list(parameters))


def captures_writes(engine: Engine) -> bool:
    """Whether connections of `engine` can capture their writes (made by `make_engine`)."""
    # Asked of the dialect, which an engine with other execution options shares.
    return _capture_execute in list(engine.dialect.dispatch.do_execute)


def _memoized(process: Any) -> Any:
    """`process` remembering its answers for this call's rows: a page's rows share their
    instants (the page's `now`) and flags, whose conversion (to UTC, then to SQLite's
    text) was a tenth of the page writer's time."""
    answers: dict[Any, Any] = {}

    def converted(value: Any) -> Any:
        try:
            return answers[value]
        except KeyError:
            answer = answers[value] = process(value)
            return answer
        except TypeError:  # not hashable: converted every time
            return process(value)

    return converted


def _sqlite_insert_many(connection: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """The rows through the driver's executemany, each value converted by its column
    type's own bind processor, as SQLAlchemy's executemany would: without its per-row
    machinery (parameter dicts built and read per row), about a fifth of a sync page's
    SQLite writes (docs/benchmarks.md, "Measurements behind the code"). A table whose
    absent columns have a Python-side default (which only SQLAlchemy would fill) goes
    SQLAlchemy's way."""
    prepared = _sqlite_insert_params(connection, table, rows)
    if prepared is None:
        connection.execute(insert(table), rows)
        return
    connection.exec_driver_sql(*prepared)


def _sqlite_insert_params(connection: Any, table: Any, rows: list[dict[str, Any]]
                          ) -> tuple[str, list[Any]] | None:
    """The INSERT statement and the driver's parameters for `_sqlite_insert_many` (made
    before a write transaction begins, `_sqlite_write_alone`); None for a table whose
    absent columns have a Python-side default."""
    columns = [c for c in table.columns if c.key in rows[0]]
    if any(c.default is not None for c in table.columns if c.key not in rows[0]):
        return None
    dialect = connection.dialect
    processors = [(i, json_text if isinstance(c.type, JSON) else _memoized(p))
                  for i, c in enumerate(columns)
                  if (p := c.type._cached_bind_processor(dialect)) is not None]
    values_of = operator.itemgetter(*(c.key for c in columns))
    if len(columns) == 1:
        params: list[Any] = [(values_of(row),) for row in rows]
    else:
        params = [values_of(row) for row in rows]
    if processors:
        converted = []
        for values in params:
            values = list(values)
            for i, process in processors:
                values[i] = process(values[i])
            converted.append(tuple(values))
        params = converted
    names = ", ".join(f'"{c.name}"' for c in columns)
    marks = ", ".join("?" * len(columns))
    statement = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})'  # noqa: S608 - our tables' names
    return statement, params


def insert_many(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert many rows in the session's transaction: COPY on PostgreSQL (an INSERT per
    row, even pipelined, cost many times more there; docs/benchmarks.md), executemany on
    SQLite. A guarded session (`get_session(guarded=True)`) gets `NeedsTransaction`."""
    if not rows:
        return
    connection = session.connection()
    captured = connection.info.get(CAPTURED_WRITES)
    if captured is not None:  # a sync page's writes: its writer process inserts them
        captured.append(("insert_many", table.name, rows, False))
        return
    if session.get_bind().dialect.name != "postgresql":
        _sqlite_insert_many(connection, table, rows)
        return
    guard = connection.get_execution_options().get("guard_writes")
    if guard is not None and not guard["allowed"]:
        # COPY goes around the cursor events `_guard_writes` listens to: refused here,
        # or it would be written at once, for good, by an autocommit connection.
        _refuse_guarded(guard, "COPY")
    columns = [c for c in table.columns if c.key in rows[0]]
    names = ", ".join(f'"{c.name}"' for c in columns)
    # JSON as SQLAlchemy's JSON type binds it (None becomes JSON null).
    json_at = [i for i, c in enumerate(columns) if isinstance(c.type, JSON)]
    values_of = operator.itemgetter(*(c.key for c in columns))
    one_column = len(columns) == 1
    statement = f"COPY {table.name} ({names}) FROM STDIN"
    raw = connection.connection.driver_connection
    assert raw is not None  # None only once the connection is closed; ours is in use
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                values = [values_of(row)] if one_column else list(values_of(row))
                for i in json_at:
                    values[i] = json_text(values[i])
                copy.write_row(values)
    except psycopg.Error as error:
        # The COPY goes around SQLAlchemy, so its errors arrive as psycopg's own: turn
        # them into the IntegrityError (…) the ORM path raises for the same rows, so a
        # caller catches one kind whichever path wrote.
        raise exc.DBAPIError.instance(statement, None, error, psycopg.Error) from error
