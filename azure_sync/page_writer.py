"""The process that commits a round's pages while the round prepares the next one.

`azure_sync.pipeline` captures a page's writes (the statements and their parameters as
the database driver would have received them, and the COPY rows) instead of running
them, and hands them here. This process runs them on its own connection, in ONE
transaction with the page's cursor and run-log row, and answers; meanwhile the round's
process builds the next page. Two processes, so neither waits for the other's Python
(threads would share one interpreter lock) and the database works while Python does.

Run as `python -m azure_sync.page_writer`; it reads pickled messages on stdin and
answers on stdout, one answer per page, and stops at the end of its input (its parent
closed the pipe, or died: a page not committed yet is rolled back with the connection).
It imports nothing of the connector: a page's statements are plain SQL.
"""

from __future__ import annotations

import pickle
import sqlite3
import sys
from typing import Any, BinaryIO

# A page's writes: (kind, statement, parameters, expect_one).
#   execute: one statement; expect_one: it must change exactly one row (the lease's
#            check: the sync state's UPDATE names the owner and the run), else the page
#            is not written and the answer is "lease".
#   executemany: one statement, many parameter sets.
#   copy: PostgreSQL's COPY FROM STDIN, the rows as lists of column values.
Op = tuple[str, str, Any, bool]


class LeaseCheckFailed(Exception):
    pass


def _postgresql(conninfo: str, connect_args: dict[str, Any]) -> Any:
    import psycopg

    return psycopg.connect(conninfo, **connect_args)


def _sqlite(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                   "busy_timeout=30000", "cache_size=-32768", "wal_autocheckpoint=10000"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def run_postgresql(conn: Any, ops: list[Op]) -> None:
    try:
        with conn.cursor() as cursor:
            for kind, statement, params, expect_one in ops:
                if kind == "copy":
                    with cursor.copy(statement) as copy:
                        for row in params:
                            copy.write_row(row)
                elif kind == "executemany":
                    cursor.executemany(statement, params)
                else:
                    cursor.execute(statement, params)
                    if expect_one and cursor.rowcount != 1:
                        raise LeaseCheckFailed
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def run_sqlite(conn: sqlite3.Connection, ops: list[Op]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for kind, statement, params, expect_one in ops:
            if kind == "executemany":
                conn.executemany(statement, params)
            else:
                rowcount = conn.execute(statement, params).rowcount
                if expect_one and rowcount != 1:
                    raise LeaseCheckFailed
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    config = pickle.load(stdin)  # noqa: S301 - our own parent, through a pipe
    if config["dialect"] == "postgresql":
        conn = _postgresql(config["conninfo"], config["connect_args"])
        run = run_postgresql
    else:
        conn = _sqlite(config["path"])
        run = run_sqlite
    while True:
        try:
            ops = pickle.load(stdin)  # noqa: S301 - our own parent, through a pipe
        except EOFError:
            break
        try:
            run(conn, ops)
            answer: tuple[str, str] = ("ok", "")
        except LeaseCheckFailed:
            answer = ("lease", "")
        except Exception as exc:  # the page is not written; the round applies it itself
            answer = ("error", f"{type(exc).__name__}: {exc}"[:2000])
        pickle.dump(answer, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()
    conn.close()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
