"""The tenant's round lease: which process runs a tenant's round, decided in the database.

A lease is the `lease_owner` / `lease_until` pair of the tenant's `SyncState` row, taken
with one conditional UPDATE, so it is exclusive across processes without any lock held
between transactions. The holder renews it with every page; a process that stalls past
it (a long pause, a suspended VM) finds, when it wakes up, that another process took
the round over, and steps aside (`LeaseLost`).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from azure_sync.errors import SyncError
from connector.models import SyncState


class LeaseLost(SyncError):
    """Another process took the tenant's round over while this one stalled."""


def owner_name() -> str:
    """A lease holder's name: this host and process, and a token of its own (each round
    holds its lease under a name of its own, so two rounds of one process differ)."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def ensure_state(maker: sessionmaker[Session], tenant_id: str) -> None:
    """Create the tenant's sync state row (the lease lives on it) if there is none."""
    with maker() as s:
        if s.get(SyncState, tenant_id) is None:
            s.add(SyncState(tenant_id=tenant_id, full_round=False, failures=0))
            try:
                s.commit()
            except IntegrityError:  # another process made it
                s.rollback()


def is_held(state: SyncState | None, now: dt.datetime) -> bool:
    """Whether a process holds the tenant's round at `now` (a round is running, or
    finishing its late memberships after its run log entry ended)."""
    return bool(state is not None and state.lease_owner and state.lease_until
                and state.lease_until > now)


def take_lease(s: Session, tenant_id: str, owner: str, now: dt.datetime, seconds: int) -> bool:
    """Hold the tenant's round for `seconds` (a row update, so it is exclusive across
    processes): taken when free, expired, or already ours."""
    result = s.execute(
        update(SyncState).where(
            SyncState.tenant_id == tenant_id,
            or_(SyncState.lease_owner.is_(None), SyncState.lease_until < now,
                SyncState.lease_owner == owner))
        .values(lease_owner=owner, lease_until=now + dt.timedelta(seconds=seconds)))
    return result.rowcount == 1  # type: ignore[attr-defined]


def release_lease(s: Session, tenant_id: str, owner: str) -> None:
    """Give the round up (only if it is still ours: a taken-over lease is not)."""
    s.execute(update(SyncState).where(SyncState.tenant_id == tenant_id,
                                      SyncState.lease_owner == owner)
              .values(lease_owner=None, lease_until=None))


def held_state(s: Session, tenant_id: str, run_id: int, owner: str, *,
               lock: bool = False) -> SyncState:
    """Read the tenant's sync state, and check that `owner` still holds the lease of
    round `run_id`; raise LeaseLost if not. `lock` reads it FOR UPDATE, so that the
    lease cannot change hands until the caller's transaction ends."""
    state = s.get(SyncState, tenant_id, with_for_update=True if lock else None)
    assert state is not None
    if state.lease_owner != owner or state.run_id != run_id:
        raise LeaseLost("This process lost the tenant's lease (it stalled past it); the "
                        "process that took it over carries on.")
    return state


def renew_lease(state: SyncState, now: dt.datetime, seconds: int) -> None:
    """Hold the round `seconds` longer from `now` (written with the caller's commit)."""
    state.lease_until = now + dt.timedelta(seconds=seconds)
