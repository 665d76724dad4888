"""Worker heartbeats: which `connector worker` processes are alive, in the database.

With the schedulers in `connector worker` (server.schedulers "worker" or "external"),
an admin's "Run now" is a request the worker takes (azure_sync/on_demand.py). Before
recording one, the web process checks that some worker beat within `STALE_SECONDS`: if
none did, the admin is told that no worker runs, instead of a round that never starts.

A worker's sync scheduler beats every `BEAT_SECONDS` (azure_sync/scheduler.py), deletes
its row when it stops cleanly, and deletes rows that have not beaten for a day (killed
processes) as it goes.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Callable

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.models import WorkerBeat

BEAT_SECONDS = 5.0
STALE_SECONDS = 30.0  # a worker silent this long is taken for dead
FORGET_AFTER = dt.timedelta(days=1)

NO_WORKER = ("No worker process is running, so nothing would start the round: Entra ID "
             "sync rounds run in `connector worker` (server.schedulers = \"worker\" or "
             "\"external\"), and none has reported in the last "
             f"{STALE_SECONDS:.0f} seconds.")
START_ONE = ("Start `connector worker` (with server.schedulers = \"worker\", the default, "
             "`connector serve` starts it and starts it again if it dies: its log says "
             "why it stopped), then ask again.")


def process_id() -> str:
    host = socket.gethostname()[:40]
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heart:
    """One process's heartbeat; `beat` writes at most every BEAT_SECONDS."""

    def __init__(self, maker: Callable[[], Session]) -> None:
        self.maker = maker
        self.id = process_id()
        self.started_at: dt.datetime | None = None
        self.last: dt.datetime | None = None

    def beat(self, now: dt.datetime) -> None:
        if self.last is not None and now - self.last < dt.timedelta(seconds=BEAT_SECONDS):
            return
        self.started_at = self.started_at or now
        with self.maker() as s:
            row = s.get(WorkerBeat, self.id)
            if row is None:
                s.add(WorkerBeat(id=self.id, host=socket.gethostname()[:255], pid=os.getpid(),
                                 started_at=self.started_at, beat_at=now))
            else:
                row.beat_at = now
            s.execute(delete(WorkerBeat).where(WorkerBeat.beat_at < now - FORGET_AFTER))
            try:
                s.commit()
            except IntegrityError:  # pragma: no cover - the id is random per process
                s.rollback()
                return
        self.last = now

    def stop(self) -> None:
        """This process stops taking requests: say so at once."""
        with self.maker() as s:
            s.execute(delete(WorkerBeat).where(WorkerBeat.id == self.id))
            s.commit()
        self.last = None


def alive(s: Session, now: dt.datetime) -> int:
    """How many workers beat within STALE_SECONDS."""
    since = now - dt.timedelta(seconds=STALE_SECONDS)
    return s.scalar(select(func.count()).select_from(WorkerBeat)
                    .where(WorkerBeat.beat_at >= since)) or 0
