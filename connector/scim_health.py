"""How many SCIM requests each tenant sent and how many were answered with an error,
per minute: what the "SCIM requests failing" notification judges (connector/notify.py).

Counting must cost the SCIM path next to nothing (docs/benchmarks.md): each process adds
to a dict under a lock, and the first request of a new minute hands the previous
minute's counts to a short-lived thread that writes one row per tenant. No request
waits on the database for it. A process's counts therefore reach the table at the first
request of a later minute (a process that stops loses at most its current minute).

An error is any 4xx or 5xx answer except 404, 409 and 412: those answer ordinary
lookups, duplicate creations and stale ETags, which identity providers send routinely.
Requests whose token named no tenant are not counted (there is no tenant to tell).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from connector.models import ScimMinuteCount

log = logging.getLogger("connector.notify")
ROUTINE = frozenset({404, 409, 412})
KEEP = dt.timedelta(days=1)
_TABLE = ScimMinuteCount.__table__


def is_error(status: int) -> bool:
    return status >= 400 and status not in ROUTINE


class ScimCounts:
    """This process's counts of the current minute, per tenant: [requests, errors]."""

    def __init__(self, maker: sessionmaker[Session],
                 clock: Callable[[], float] = time.time) -> None:
        self.maker = maker
        self.clock = clock
        self._lock = threading.Lock()
        self._minute = 0
        self._counts: dict[str, list[int]] = {}
        self._writer: threading.Thread | None = None

    def record(self, tenant_id: str, status: int) -> None:
        """Count one answer; the first of a new minute sends the last one's away."""
        minute = int(self.clock() // 60)
        done: dict[str, list[int]] | None = None
        with self._lock:
            if minute != self._minute:
                done, at = self._counts, self._minute
                self._counts, self._minute = {}, minute
            counts = self._counts.get(tenant_id)
            if counts is None:
                counts = self._counts[tenant_id] = [0, 0]
            counts[0] += 1
            if status >= 400 and status not in ROUTINE:
                counts[1] += 1
        if done:
            self._writer = threading.Thread(target=self._write, args=(at, done), daemon=True,
                                            name="scim-counts")
            self._writer.start()

    def flush(self) -> None:
        """Write the current minute's counts now (shutdown, tests)."""
        writer = self._writer
        if writer is not None:
            writer.join()  # the previous minute's first, so a reader then sees both
        with self._lock:
            done, at = self._counts, self._minute
            self._counts = {}
        if done:
            self._write(at, done)

    def _write(self, minute: int, counts: dict[str, list[int]]) -> None:
        at = dt.datetime.fromtimestamp(minute * 60, dt.UTC)
        rows = [{"tenant_id": t, "minute": at, "requests": r, "errors": e}
                for t, (r, e) in counts.items()]
        try:
            with self.maker() as s:
                s.execute(insert(_TABLE), rows)
                s.commit()
        except Exception:  # noqa: BLE001 - counts are best effort; the request is long done
            log.exception("SCIM counts of %d tenant(s) not written", len(rows))


def window_counts(session: Session, since: dt.datetime, until: dt.datetime
                  ) -> dict[str, tuple[int, int]]:
    """Requests and errors per tenant in [since, until)."""
    rows = session.execute(
        select(_TABLE.c.tenant_id, func.sum(_TABLE.c.requests), func.sum(_TABLE.c.errors))
        .where(_TABLE.c.minute >= since, _TABLE.c.minute < until)
        .group_by(_TABLE.c.tenant_id))
    return {t: (int(r or 0), int(e or 0)) for t, r, e in rows}


def prune(session: Session, now: dt.datetime) -> None:
    """Drop counts older than a day (the window is minutes)."""
    session.execute(delete(_TABLE).where(_TABLE.c.minute < now - KEEP))
