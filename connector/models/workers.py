"""Which `connector worker` processes are alive (written by `connector.heartbeat`)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from connector.models.base import Base, UTCDateTime


class WorkerBeat(Base):
    """A process running the sync scheduler (`connector worker`), with the last time it
    said it was alive. The web process reads it before it hands an admin's "Run now" to
    a worker: with no recent beat, it says that no worker runs instead of queueing a
    round nobody takes. A worker that stops cleanly deletes its row; a killed one's row
    goes stale and is deleted by the next worker's beat a day later."""

    __tablename__ = "worker_beats"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # host:pid:random
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    beat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
