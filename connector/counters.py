"""Per-tenant counters kept in step with the directory, in the writer's transaction.

Only `connector.directory` changes them (the one write path). A missing row is rebuilt
from the users table on first use, so a tenant created before the counters existed, or
a bulk load that bypassed the directory (the bench's seeding), heals itself by calling
`recount_live_users`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from connector.models import TenantCounter, User

# Core statements on the table: an ORM-enabled UPDATE would also search the session
# for objects to synchronise, which cost a tenth of a SCIM POST.
_COUNTERS = TenantCounter.__table__
BUMP = (update(_COUNTERS)
         .where(_COUNTERS.c.tenant_id == bindparam("tid"))
         .values(live_users=_COUNTERS.c.live_users + bindparam("delta"),
                 generation=_COUNTERS.c.generation + 1))
_READ = select(_COUNTERS.c.live_users, _COUNTERS.c.generation).where(
    _COUNTERS.c.tenant_id == bindparam("tid"))


def bump_params(tenant_id: str, delta: int) -> dict[str, Any]:
    """Parameters of `BUMP`, the statement that changes the live-user count by `delta`
    (and the generation); `db.insert_together` sends it along with a creation."""
    return {"tid": tenant_id, "delta": delta}


def add_live_users(session: Session, tenant_id: str, delta: int) -> None:
    """Change the tenant's live-user count by `delta` (after the change is flushed)."""
    result = session.execute(BUMP, bump_params(tenant_id, delta))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        recount_live_users(session, tenant_id)


def live_users(session: Session, tenant_id: str) -> int:
    return live_users_and_generation(session, tenant_id)[0]


def live_users_of(session: Session, tenant_ids: Sequence[str]) -> dict[str, int]:
    """The live-user counts of many tenants with one read (a tenant without its row is
    counted and healed, as `live_users` does)."""
    found = {tid: count for tid, count in session.execute(
        select(_COUNTERS.c.tenant_id, _COUNTERS.c.live_users)
        .where(_COUNTERS.c.tenant_id.in_(list(tenant_ids))))}
    for tenant_id in tenant_ids:
        if tenant_id not in found:
            found[tenant_id] = recount_live_users(session, tenant_id)
    return found


def live_users_and_generation(session: Session, tenant_id: str) -> tuple[int, int]:
    """The live-user count and the generation it belongs to."""
    row = session.execute(_READ, {"tid": tenant_id}).first()
    if row is None:
        return recount_live_users(session, tenant_id), -1  # -1: nothing to remember by
    return row[0], row[1]


def recount_live_users(session: Session, tenant_id: str) -> int:
    """Count the tenant's live users from the users table and store the result."""
    session.flush()
    count = session.scalar(select(func.count()).select_from(User).where(
        User.tenant_id == tenant_id, User.removed_at.is_(None))) or 0
    row = session.get(TenantCounter, tenant_id)
    if row is None:
        session.add(TenantCounter(tenant_id=tenant_id, live_users=count, generation=0))
    else:
        row.live_users = count
        row.generation += 1
    session.flush()
    return count
