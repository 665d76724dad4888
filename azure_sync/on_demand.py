"""Rounds an admin asks for, handed to `connector worker`.

With the schedulers in `connector worker` (server.schedulers "worker" or "external"), the
web process runs no round itself: under gevent a CPU-bound round would stall every
request of the process, and with several web processes nothing would keep track of the
rounds they started. "Run now" and "Restart provisioning" record a request instead
(`ask`), and every worker's sync scheduler looks for requests every
`scheduler.REQUEST_POLL_SECONDS`: the first to delete the row (`take`) runs the round,
so it runs once however many workers there are. The run log shows it as any round.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from connector.models import SyncRequest, SyncState

TRIGGERS = ("manual", "restart")


def ask(s: Session, tenant_id: str, trigger: str, now: dt.datetime) -> None:
    """Record a request for a round (in the caller's transaction). A request already
    waiting stays the one request; a restart outranks a plain run."""
    assert trigger in TRIGGERS
    row = s.get(SyncRequest, tenant_id, with_for_update=True)
    if row is None:
        try:
            with s.begin_nested():
                s.add(SyncRequest(tenant_id=tenant_id, trigger=trigger, requested_at=now))
            return
        except IntegrityError:  # another request recorded it meanwhile: ours is that one
            row = s.get(SyncRequest, tenant_id, with_for_update=True, populate_existing=True)
            if row is None:  # pragma: no cover - taken by a worker in between
                s.add(SyncRequest(tenant_id=tenant_id, trigger=trigger, requested_at=now))
                return
    if trigger == "restart":
        row.trigger = "restart"


def waiting(s: Session, now: dt.datetime) -> list[tuple[str, str]]:
    """Requests that can run now, oldest first: those of tenants whose round is not
    running (held under a live lease) already; the others wait for it to end."""
    free = or_(SyncState.tenant_id.is_(None), SyncState.lease_owner.is_(None),
               SyncState.lease_until < now)
    rows = s.execute(
        select(SyncRequest.tenant_id, SyncRequest.trigger)
        .outerjoin(SyncState, SyncState.tenant_id == SyncRequest.tenant_id)
        .where(free).order_by(SyncRequest.requested_at))
    return [(tenant_id, trigger) for tenant_id, trigger in rows]


def take(maker: sessionmaker[Session], tenant_id: str, trigger: str) -> bool:
    """Claim a request: True for the one process whose delete removed the row."""
    with maker() as s:
        result = s.execute(delete(SyncRequest).where(
            and_(SyncRequest.tenant_id == tenant_id, SyncRequest.trigger == trigger)))
        s.commit()
    return result.rowcount == 1  # type: ignore[attr-defined]


def pending(s: Session, tenant_id: str) -> SyncRequest | None:
    """The tenant's request not yet taken by a worker, if any."""
    return s.get(SyncRequest, tenant_id)
