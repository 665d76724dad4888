"""Fold a large tenant's partitions in worker processes, one partition each.

    closing process ──spawn──> workers (a session each, from the database URL)
         ^                        │ fold_partition, chunk by chunk
         └── queue: (index, (rows, tally, users)) … (index, None) at the end

The closing process adds up the tallies (billing.snapshot.LineTally) and flips the
attempt afterwards, as always (billing.close); on SQLite it writes the lines the
workers send, on PostgreSQL the workers write them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing.lines import insert_lines, line_row, mark_alive
from billing.snapshot import LineTally, tally
from billing.tenant_fold import FoldPlan, Progress, fold_partition
from connector import db
from connector.config import BillingSettings, DatabaseSettings

PARALLEL_FROM_USERS = 50_000  # below this, starting processes costs more than it saves
_WORKER: dict[str, Any] = {}  # a worker process's session maker and queues


def worker_count(settings: BillingSettings, users: int) -> int:
    """Return how many processes fold a tenant of `users` users (1: this one alone)."""
    if settings.close_workers == 1 or users < PARALLEL_FROM_USERS:
        return 1
    return settings.close_workers or min(os.cpu_count() or 1, 4)


def _worker_start(url: str, out: Any, stop: Any) -> None:
    engine = db.make_engine(DatabaseSettings(url=url, pool_size=1))
    _WORKER.update(maker=db.make_sessionmaker(engine), out=out, stop=stop)


def _worker_partition(plan: FoldPlan, close_id: int, index: int, low: str | None,
                      high: str | None) -> None:
    """Fold one partition in one transaction and send the closing process each chunk's
    tally. On SQLite the lines go with it and that process writes them, so the workers
    never queue on SQLite's single writer lock. On PostgreSQL the worker writes them
    itself (COPY, in the transaction that reads the partition, committed at its end):
    handing a million lines to one process cost more than writing them. The last
    message is always (index, None), whether the partition finished or failed."""
    out, stop = _WORKER["out"], _WORKER["stop"]
    try:
        if stop.is_set():
            return
        with _WORKER["maker"]() as s:
            writes = s.get_bind().dialect.name == "postgresql"
            for chunk, users in fold_partition(s, plan, low, high):
                if stop.is_set():
                    return
                rows = [line_row(close_id, *line) for line in chunk]
                if writes:
                    insert_lines(s, rows)
                    rows = []
                out.put((index, (rows, tally(chunk), users)))
            s.commit()
    finally:
        out.put((index, None))


def fold_in_processes(s: Session, plan: FoldPlan, close_id: int,
                      parts: list[tuple[str | None, str | None]], workers: int,
                      lines: LineTally, total: int, progress: Progress | None) -> None:
    """Fold the partitions in `workers` processes (spawned: nothing of this process,
    its threads or its connections, is inherited), one each; the lines are written
    under the attempt (here on SQLite, by the workers on PostgreSQL) and the caller
    flips the attempt afterwards, as always. The queue between them holds a few
    chunks, so memory stays bounded: a worker waits while this process writes."""
    bind = s.get_bind()
    assert isinstance(bind, Engine)  # the sessionmaker's engine, not a bound connection
    url = bind.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    out, stop = context.Queue(maxsize=workers * 2), context.Event()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                             initargs=(url, out, stop)) as pool:
        futures = [pool.submit(_worker_partition, plan, close_id, i, low, high)
                   for i, (low, high) in enumerate(parts)]
        try:
            _collect(s, close_id, out, futures, lines, total, progress)
        except BaseException:
            _stop(out, stop, futures)
            raise


def _collect(s: Session, close_id: int, out: Any, futures: list[Future[None]],
             lines: LineTally, total: int, progress: Progress | None) -> None:
    """Write and add up what the workers send until every partition has finished; a
    failed partition (or a worker that died) fails the close. Each chunk says the
    attempt is alive (billing.lines.mark_alive)."""
    finished = 0
    while finished < len(futures):
        try:
            index, message = out.get(timeout=1)
        except queue.Empty:
            for future in futures:  # a worker that died sends nothing more
                if future.done() and not future.cancelled():
                    future.result()
            continue
        if message is None:
            finished += 1
            futures[index].result()  # a failed partition fails the close
            continue
        rows, part, users = message
        if rows:
            insert_lines(s, rows)
        mark_alive(s, close_id)
        s.commit()
        lines.add(part)
        if progress:
            progress(lines.folded(users), total)


def _stop(out: Any, stop: Any, futures: list[Future[None]]) -> None:
    """Stop the workers at their next chunk, cancel the partitions not started, and
    drain the queue so that none stays blocked putting into it."""
    stop.set()
    for future in futures:
        future.cancel()
    while not all(f.done() for f in futures):
        with contextlib.suppress(queue.Empty):
            out.get(timeout=0.1)
