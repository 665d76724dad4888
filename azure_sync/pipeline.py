"""A full round's pages committed by another process while the round builds the next.

Per user an initial round spends about as much time in Python (mapping, the rows of
six tables, the provisioning log, the search words) as in the database writing them,
one after the other. Here they overlap: the round applies page N as ever, through the
page applier and the directory, but on a session that CAPTURES its writes instead of
running them (every INSERT, UPDATE and DELETE, with its parameters as the driver would
have received them, and the rows of `connector.db.insert_many`; reads run). The captured
page, with the UPDATE that moves the cursor and renews the lease and the run log's row,
goes to a writer process (`azure_sync.page_writer`) which runs it on its own connection
in ONE transaction, as the round would have, while the round builds page N+1.

It costs more CPU in all (a second interpreter, pickling, the capture: 5-30 %) to take
the database's part off the round's critical path: a gain only with a core to spare
(docs/benchmarks.md, "Entra sync: the initial round's pages committed by a writer
process").

What keeps it the same as page by page:

- Only a full round's users pages of 50 items or more, and only pages of creations:
  a page whose capture ran no flush of ORM objects (the sync state, an existing user),
  no statement that needs a result (RETURNING), and whose counts say only created /
  seen / skipped / out of scope (nothing kept, adopted, staged, no manager reference).
  Any other page is applied the ordinary way, after the page in flight committed; a
  page the capture refuses turns the pipeline off for the rest of the round (a full
  round over a populated tenant is all updates).
- Page N+1 is built while page N is not committed yet: its reads (the users with its
  object ids, the names its new users take) would not see page N. So when page N+1 names
  an object id or a userPrincipalName of page N, the round waits for page N's commit
  before building it.
- One page in flight, one being built: memory stays bounded.
- The writer's UPDATE of the sync state names the lease's owner and the run: a lease lost
  meanwhile writes nothing (LeaseLost). A page the writer could not commit (a unique
  index, the database) is applied again by the round itself, the ordinary way (with its
  one-by-one fallback), and the pipeline is off for the rest of the round. The writer
  stops at the end of its input: a round that stops (or a process that dies) leaves at
  most the page in flight, committed whole with its cursor or not at all.

`azure_sync.pipeline = false` turns it off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import pickle
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from connector import db
from connector.config import DatabaseSettings
from connector.models import SyncRun, SyncState

# Smaller pages are written by the round itself (a small tenant's round, a last page):
# not worth a process, and their few rows go as INSERTs, some with RETURNING.
MIN_ITEMS = 50
PIPE_BYTES = 1 << 20  # Linux's default pipe-max-size
# Counts of a page whose effects are only new, linked users (and what nobody reads back
# before the round's end: events, the provisioning log, search words, counters).
CLEAN_COUNTS = frozenset({"created", "seen", "skipped", "out_of_scope"})
# The sync state's columns a page moves (cursor.advance, lease.renew_lease).
CURSOR_COLUMNS = ("next_link", "phase", "pending_users_delta_link", "groups_delta_link")


NotCapturable = db.NotCapturable


class WriterFailed(Exception):
    """The writer process stopped (or answered nonsense)."""


# -- capturing a session's writes ------------------------------------------------------
# The statements are caught by listeners `connector.db.make_engine` registers on every
# engine it makes; a connection captures while its info holds `db.CAPTURED_WRITES`.


def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.deleted or any(session.is_modified(o) for o in session.dirty):
        raise NotCapturable("ORM objects to flush")


@contextlib.contextmanager
def capturing(maker: sessionmaker[Session]) -> Iterator[tuple[Session, list[Any]]]:
    """A session whose writes are captured, not run; rolled back at the end (its reads
    took no write lock: on SQLite it is not a writing session)."""
    bind = maker.kw["bind"]
    if not db.captures_writes(bind):
        raise NotCapturable("an engine not made by connector.db.make_engine")
    s = Session(bind=bind.execution_options(writes=False), autoflush=False,
                expire_on_commit=False)
    ops: list[Any] = []
    event.listen(s, "before_flush", _refuse_flush)
    try:
        conn = s.connection()
        conn.info[db.CAPTURED_WRITES] = ops
        try:
            yield s, ops
            if s.new or s.deleted or any(s.is_modified(o) for o in s.dirty):
                raise NotCapturable("ORM objects changed and not flushed")
        finally:
            conn.info.pop(db.CAPTURED_WRITES, None)
            s.rollback()
    finally:
        s.close()


# -- the page in flight ----------------------------------------------------------------


@dataclass
class Captured:
    """A page's writes, captured, and what the round's cursor and run log say after it."""

    page: Any  # cursor.Page
    ops: list[Any]
    keys: frozenset[str]  # object ids and user names (case-folded) the page names
    cursor: dict[str, Any]  # CURSOR_COLUMNS after the page
    pages: int  # the run's pages after it
    counts: dict[str, int] = field(default_factory=dict)  # the run's counts after it


def page_keys(items: list[Any]) -> frozenset[str]:
    """The object ids and userPrincipalNames (case-folded) a page names: a page built
    while another is in flight must name none of the other's."""
    keys: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            continue
        oid, name = item.get("id"), item.get("userPrincipalName")
        if isinstance(oid, str):
            keys.add(oid)
        if isinstance(name, str):
            keys.add(name.casefold())
    return frozenset(keys)


def has_managers(items: list[Any]) -> bool:
    """Manager references are settled across pages (a waiting list): not pipelined."""
    return any(isinstance(item, dict) and ("manager@delta" in item or "manager" in item)
               for item in items)


def state_update(tenant_id: str, run_id: int, owner: str, cursor: dict[str, Any],
                 lease_until: dt.datetime) -> Any:
    """The page's cursor and lease, written only if the lease is still this round's."""
    return (update(SyncState)
            .where(SyncState.tenant_id == tenant_id, SyncState.lease_owner == owner,
                   SyncState.run_id == run_id)
            .values(lease_until=lease_until, **cursor))


def run_update(run_id: int, pages: int, counts: dict[str, int]) -> Any:
    return update(SyncRun).where(SyncRun.id == run_id).values(pages=pages, counts=counts)


def _writer_settings(engine: Engine) -> DatabaseSettings | None:
    """How the writer connects: as the round's engine does (PgBouncer and all)."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and (not url.database or url.database == ":memory:"):
        return None  # another process cannot see it
    return dataclasses.replace(db.settings_of(engine), echo=False)


class PageWriter:
    """The writer process (started at the first page it gets) and the page in flight."""

    def __init__(self, engine: Engine) -> None:
        self.config = _writer_settings(engine)
        self.process: subprocess.Popen[bytes] | None = None
        self.in_flight: Captured | None = None

    @property
    def possible(self) -> bool:
        return self.config is not None

    def send(self, captured: Captured) -> None:
        assert self.in_flight is None
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "azure_sync.page_writer"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert self.process.stdin is not None
            # A page's writes (a few hundred kB) fit in the pipe: sending one never waits
            # for the writer to be scheduled and read it (Linux; elsewhere the default).
            with contextlib.suppress(AttributeError, OSError):
                fcntl.fcntl(self.process.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            self._write(self.config)
        self._write(captured.ops)
        self.in_flight = captured

    def _write(self, message: Any) -> None:
        assert self.process is not None and self.process.stdin is not None
        try:
            pickle.dump(message, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WriterFailed(f"the page writer stopped ({exc})") from exc

    def wait(self) -> tuple[Captured, str, str] | None:
        """The page in flight and the writer's answer (ok, lease, error), or None."""
        captured, self.in_flight = self.in_flight, None
        if captured is None:
            return None
        assert self.process is not None and self.process.stdout is not None
        try:
            answer, detail = pickle.load(self.process.stdout)  # noqa: S301 - our child
        except (EOFError, pickle.UnpicklingError, ValueError, OSError) as exc:
            self.close()
            return captured, "error", f"the page writer stopped ({exc!r})"
        return captured, answer, detail

    def close(self) -> None:
        """Stop the writer (after its page in flight, if any: committed whole or not)."""
        process, self.process = self.process, None
        self.in_flight = None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
