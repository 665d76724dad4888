"""The append-only event log: the one function that writes it, and its kinds."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from connector import db
from connector.models import Event
from connector.status import Source

# Event kinds. Billing folds these; the names are part of the storage contract.
USER_CREATED = "user.created"
USER_STATUS = "user.status"  # the user's effective status changed
USER_IDP_STATUS = "user.idp_status"  # what the IdP said, when it did not move the status
USER_DELETED_LIST = "user.deleted_list"  # put on / taken off the deleted-users list
USER_REMOVED = "user.removed"  # SCIM DELETE / Graph @removed: gone from directory views
USER_RESTORED = "user.restored"  # an admin brought a removed user back (same id)
USER_PURGED = "user.purged"  # an admin removed it for good from the deleted-users list
USER_GUEST = "user.guest"
USER_EXTERNAL_GUEST = "user.external_guest"
USER_ADMIN = "user.admin"
USER_MODULES = "user.modules"
USER_PROFILE = "user.profile"  # userName / externalId / displayName changed
USER_INVITED = "user.invited"  # invited to claim an account (billing: `invited` policy)
USER_CLAIMED = "user.claimed"  # claimed the account it was invited to
USER_FRONTLINE = "user.frontline"  # the frontline plan's attributes changed
USER_ADOPTED = "user.adopted"  # an existing account linked to an identity-provider object
GROUP_CREATED = "group.created"
GROUP_RENAMED = "group.renamed"
GROUP_REMOVED = "group.removed"
GROUP_MODULES = "group.modules"
MEMBER_ADDED = "group.member_added"
MEMBER_REMOVED = "group.member_removed"
TENANT_CREATED = "tenant.created"
TENANT_SETTINGS = "tenant.settings"  # connector.tenant_settings: {setting: old} -> {setting: new}
TOKEN_ROTATED = "tenant.scim_token_rotated"
MODULE_ADDED = "tenant.module_added"
MODULE_RENAMED = "tenant.module_renamed"  # old name -> new name (users' events say it too)
MODULE_REMOVED = "tenant.module_removed"  # the name; holders' events record their loss
TENANT_RENAMED = "tenant.renamed"
TENANT_CLOSED = "tenant.closed"
TENANT_REOPENED = "tenant.reopened"
ENTRA_REGISTRATION = "tenant.entra_registration"  # an Entra app registered or changed
ENTRA_REGISTRATION_REMOVED = "tenant.entra_unregistered"  # kind: 32 characters at most
BILLING_PROFILE = "tenant.billing_profile"  # billing info: changed fields, old -> new
SYNC_ROUND_HELD = "sync.round_held"  # an Entra round held its deletions for approval
SYNC_ROUND_COMPLETED = "sync.round_completed"  # an Entra round applied everything
MONTH_CLOSED = "billing.month_closed"  # a billing month closed (or reissued)


@dataclass(frozen=True)
class WriteContext:
    """Who is writing, for which tenant, and when: stamped on every event."""

    tenant_id: str
    source: Source
    actor: str
    correlation_id: str
    now: dt.datetime


def record(
    session: Session,
    ctx: WriteContext,
    subject_type: str,
    subject_id: str,
    kind: str,
    old: Any = None,
    new: Any = None,
    effective_at: dt.datetime | None = None,
) -> None:
    """Append one event in the caller's transaction, at once and in call order.

    A plain INSERT rather than an ORM object: events are never read back in the
    transaction that writes them, and the ORM's unit of work (with RETURNING of the new
    id) cost more than the write itself on every SCIM request.
    """
    record_many(session, [row(ctx, subject_type, subject_id, kind, old, new, effective_at)])


def row(ctx: WriteContext, subject_type: str, subject_id: str, kind: str, old: Any = None,
        new: Any = None, effective_at: dt.datetime | None = None,
        object_id: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """One event's column values, for `record_many`. `object_id` is the other party of
    a relation (the member of a membership event); `reason` says why a back-dated
    correction was recorded.

    An event may take effect before it is recorded (a back-dated correction), never
    after: nothing here schedules changes, and billing relies on it (a month's events
    were all recorded from the month's start on, billing.reader)."""
    if effective_at is not None and effective_at > ctx.now:
        raise ValueError(f"An event cannot take effect ({effective_at.isoformat()}) after "
                         f"it is recorded ({ctx.now.isoformat()}).")
    return {
        "tenant_id": ctx.tenant_id,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "kind": kind,
        "old_value": old,
        "new_value": new,
        "effective_at": effective_at or ctx.now,
        "recorded_at": ctx.now,
        "source": str(ctx.source),
        "actor": ctx.actor,
        "correlation_id": ctx.correlation_id,
        "object_id": object_id,
        "reason": reason,
    }


def record_many(session: Session, rows: list[dict[str, Any]]) -> None:
    """Append events in the given order with one statement (one round trip)."""
    if len(rows) >= 50:  # a sync page's worth: COPY on PostgreSQL
        db.insert_many(session, Event.__table__, rows)
    elif rows:
        session.execute(_INSERT, rows)


_INSERT = insert(Event.__table__)
