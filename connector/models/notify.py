"""Notifications (`connector.notify`): the conditions admins are told about, the
messages waiting to be e-mailed, who opted out, and the SCIM answers counted per minute
for the error-share condition."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from connector.models.base import Base, EventId, UTCDateTime


class NotifyCondition(Base):
    """Something an admin must act on, raised once until it clears.

    Keyed (tenant, kind, key): `key` tells apart conditions of one kind that may stand
    side by side (the month of a failed close); "" when there is one per tenant. A
    condition raised again after it cleared reuses its row (raised_at moves on)."""

    __tablename__ = "notify_conditions"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    cleared_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When messages were last queued for it (the first one, then each daily reminder).
    last_sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("tenant_id", "kind", "key",
                         name="uq_notify_conditions_tenant_id_kind_key"),
        Index("ix_notify_conditions_cleared_at", "cleared_at"),
    )


class NotifyOutbox(Base):
    """One e-mail to one admin about one condition, until it is sent or given up."""

    __tablename__ = "notify_outbox"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    condition_id: Mapped[int] = mapped_column(
        ForeignKey("notify_conditions.id", ondelete="CASCADE"), index=True)
    admin_id: Mapped[str] = mapped_column(String(36))
    address: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(16))  # raised | reminder
    state: Mapped[str] = mapped_column(String(8))  # pending | sent | failed | dropped
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_notify_outbox_due", "state", "next_attempt_at"),)


class NotifyOptOut(Base):
    """An admin who does not want e-mail about one kind of condition ("*": any)."""

    __tablename__ = "notify_optouts"

    admin_id: Mapped[str] = mapped_column(
        ForeignKey("admin_accounts.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)


class ScimMinuteCount(Base):
    """SCIM answers of one tenant in one minute, as one process counted them (several
    processes write several rows for the same minute; readers add them up)."""

    __tablename__ = "scim_minute_counts"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    minute: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    requests: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_scim_minute_counts_minute_tenant_id", "minute", "tenant_id"),)
