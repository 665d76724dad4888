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
It connects as the round's process does (`connector.db.make_engine`, the same settings)
and writes a page's many-row inserts with `connector.db.insert_many`, as the round would
have: COPY on PostgreSQL, with the rows formatted here, and on SQLite an INSERT whose
parameters SQLAlchemy processes here (a third of a SQLite round's Python, before).
"""

from __future__ import annotations

import pickle
import sys
from typing import Any, BinaryIO

# A page's writes: (kind, statement or table, parameters or rows, expect_one).
#   execute: one statement, its parameters as the driver takes them; expect_one: it must
#            change exactly one row (the lease's check: the sync state's UPDATE names
#            the owner and the run), else the page is not written and the answer is
#            "lease".
#   executemany: one statement, many parameter sets.
#   insert_many: `connector.db.insert_many` of the table's rows (dicts).
Op = tuple[str, str, Any, bool]


class LeaseCheckFailed(Exception):
    pass


def run_page(maker: Any, tables: Any, ops: list[Op]) -> None:
    from connector import db

    with maker() as s:
        db.commit_without_waiting_for_disk(s)  # a page lost in a crash is read again
        connection = s.connection()
        for kind, target, params, expect_one in ops:
            if kind == "insert_many":
                db.insert_many(s, tables[target], params)
            else:
                result = connection.exec_driver_sql(target, params)
                if expect_one and result.rowcount != 1:
                    raise LeaseCheckFailed
        s.commit()


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    settings = pickle.load(stdin)  # noqa: S301 - our own parent, through a pipe
    from connector.db import make_engine, make_sessionmaker
    from connector.models import Base

    engine = make_engine(settings)
    maker = make_sessionmaker(engine, writes=True)
    while True:
        try:
            ops = pickle.load(stdin)  # noqa: S301 - our own parent, through a pipe
        except EOFError:
            break
        try:
            run_page(maker, Base.metadata.tables, ops)
            answer: tuple[str, str] = ("ok", "")
        except LeaseCheckFailed:
            answer = ("lease", "")
        except Exception as exc:  # the page is not written; the round applies it itself
            answer = ("error", f"{type(exc).__name__}: {exc}"[:2000])
        try:
            pickle.dump(answer, stdout, protocol=pickle.HIGHEST_PROTOCOL)
            stdout.flush()
        except BrokenPipeError:
            break  # the round's process died; the page is committed or rolled back
    engine.dispose()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
