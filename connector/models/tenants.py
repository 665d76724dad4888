"""Tenants and what belongs to the tenant itself: its counter, SCIM tokens and module
catalogue (`connector.tenants`; its policy columns: `connector.tenant_settings`)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from connector.models.base import Base, UTCDateTime
from connector.status import ScimDefaultStatus, StatusSource


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Status authority (PRODUCT.md). Plain strings in the database (the column types are
    # given): the Literal types only say which values the code may write.
    status_source: Mapped[StatusSource] = mapped_column(String(32), default="identity_provider")
    # Given to users newly created through SCIM; never retroactive.
    scim_default_status: Mapped[ScimDefaultStatus] = mapped_column(String(16), default="active")
    provisioning_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # Fed by the Entra ID poller rather than SCIM: a tenant has one provisioning path,
    # and the other one's writes are refused.
    entra_sync: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Closed by a partner admin (None: open): SCIM is refused, Entra sync stops, no month
    # after this one closes; purged `admin.closed_tenant_retention_days` later.
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class TenantCounter(Base):
    """Live (not removed) users of a tenant.

    The directory changes it in the same transaction as every user creation and
    removal, so an unfiltered list's totalResults is one primary-key read instead of a
    count over 100,000 index entries. `connector.counters` keeps and repairs it.
    """

    __tablename__ = "tenant_counters"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    live_users: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped by every creation and removal: while it stands still, the id order of the
    # live users is unchanged, so a position found once (a page anchor) stays true.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ScimToken(Base):
    """A tenant's SCIM bearer token, stored as a SHA-256 digest, never in clear."""

    __tablename__ = "scim_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Module(Base):
    """The tenant's module catalogue (Hybrid, Engage, Unify, legacy plans…)."""

    __tablename__ = "modules"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

