"""Entra ID sync's tables: registrations, per-tenant round state, the run log, staged
changes, throttles (written by `azure_sync`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from connector.models.base import Base, EventId, UTCDateTime


class EntraRegistration(Base):
    """A tenant's Entra ID app registration: where and how the poller signs in.

    The client secret or certificate is kept encrypted with the key from the settings
    (`azure_sync.encryption_key`); it is never logged and never returned by the API.
    """

    __tablename__ = "entra_registrations"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    directory_id: Mapped[str] = mapped_column(String(64))  # the Entra tenant id or domain
    client_id: Mapped[str] = mapped_column(String(64))
    secret_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    certificate_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    certificate_thumbprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    authority_host: Mapped[str] = mapped_column(String(255))
    graph_base_url: Mapped[str] = mapped_column(String(255))
    interval_minutes: Mapped[int] = mapped_column(Integer, default=10)
    scope_groups: Mapped[list[str]] = mapped_column(JSON, default=list)  # group object ids
    # direct: members of the chosen groups; transitive: also members of nested groups
    scope_group_mode: Mapped[str] = mapped_column(String(16), default="direct",
                                                  server_default="direct")
    scope_domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The scope changed in a way only a full round can apply (the next round is one).
    full_round_due: Mapped[bool] = mapped_column(Boolean, default=False,
                                                 server_default=text("false"))
    threshold_count: Mapped[int] = mapped_column(Integer, default=500)
    threshold_percent: Mapped[int] = mapped_column(Integer, default=20)
    # What a soft delete in Entra ID does here: "disable" (as Entra's own provisioning
    # service: inactive, on the deleted-users list, restorable) or "remove".
    soft_delete: Mapped[str] = mapped_column(String(16), default="disable",
                                             server_default="disable")
    # How a new Entra object finds an existing, unlinked connector account to adopt:
    # userPrincipalName (as Entra's default matching attribute), mail or employeeId.
    matching_attribute: Mapped[str] = mapped_column(String(32), default="userPrincipalName",
                                                    server_default="userPrincipalName")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SyncState(Base):
    """Where a tenant's sync stands: delta cursors, the round in progress, its lease.

    A page's changes and the cursor that follows it commit together, so a round killed
    at any point resumes from the last committed page; the deltaLinks replace the old
    ones only when a round completes.
    """

    __tablename__ = "sync_state"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    users_delta_link: Mapped[str | None] = mapped_column(Text, nullable=True)
    groups_delta_link: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_id: Mapped[int | None] = mapped_column(EventId, nullable=True)  # round in progress
    phase: Mapped[str | None] = mapped_column(String(16), nullable=True)  # users | groups
    next_link: Mapped[str | None] = mapped_column(Text, nullable=True)
    pending_users_delta_link: Mapped[str | None] = mapped_column(Text, nullable=True)
    full_round: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    quarantined_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SyncRequest(Base):
    """A round an admin asked for ("Run now", "Restart provisioning") while the sync
    scheduler runs in `connector worker` (server.schedulers "worker" or "external"): a
    worker's scheduler takes it within a few seconds (deleting the row, so exactly one
    process runs it). One per tenant: asking again before it is taken asks for the same
    round, and a restart outranks a plain run (azure_sync/on_demand.py)."""

    __tablename__ = "sync_requests"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))  # manual | restart
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class AppThrottle(Base):
    """Graph asked this app registration to slow down: every tenant using the same
    client id waits until `paused_until`, so parallel tenants don't storm."""

    __tablename__ = "sync_app_throttle"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused_until: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SyncRun(Base):
    """One sync round: what it did, for the run log (UI, API) and the events'
    correlation id (`sync-run:<id>`)."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(16))  # incremental | full | preview | single
    status: Mapped[str] = mapped_column(String(24))  # running | succeeded | failed | replaced | …
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | manual | resync
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A round resumed after a failure or a dead process goes on in a new run row that
    # points at the round's first run; staged changes and "seen" marks use the round's
    # key, so every run of one round shares them.
    round_id: Mapped[int | None] = mapped_column(EventId, nullable=True)

    __table_args__ = (Index("ix_sync_runs_tenant", "tenant_id", "id"),)

    @property
    def round_key(self) -> int:
        return self.round_id if self.round_id is not None else self.id


class SyncStaged(Base):
    """A destructive change a round held back (over the deletion threshold) until an
    admin approves or rejects the round."""

    __tablename__ = "sync_staged"

    run_id: Mapped[int] = mapped_column(EventId, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    object_id: Mapped[str] = mapped_column(String(512))
    action: Mapped[str] = mapped_column(String(16))  # disable | soft_delete | hard_delete | sweep
    user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)



class SyncPending(Base):
    """An object a round could not apply, kept with its Graph item and the reason until
    a later round applies it (kind "user" or "group"), or a user whose group
    memberships are still to be read from Graph (kind "groups")."""

    __tablename__ = "sync_pending"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    item: Mapped[dict[str, Any]] = mapped_column(JSON)
    operation: Mapped[str] = mapped_column(String(24))
    code: Mapped[str] = mapped_column(String(48))
    reason: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(EventId, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    first_failed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_failed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SyncPendingMember(Base):
    """A group's member not known yet (a nested group arriving later): added when it
    is."""

    __tablename__ = "sync_pending_members"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    group_object_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    member_object_id: Mapped[str] = mapped_column(String(512), primary_key=True)

    __table_args__ = (Index("ix_sync_pending_members_member", "tenant_id",
                            "member_object_id"),)
