"""Billing's tables: billing info, closed months with their lines and adjustments,
activity, reporting keys, the mail outbox (written by `billing`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from connector.models.base import Base, EventId, UTCDateTime


class BillingProfile(Base):
    """A tenant's billing info (PRODUCT.md, "Billing"): what its invoices say and how its
    months are counted. The time zone is the tenant's own (`tenants.time_zone`)."""

    __tablename__ = "billing_profiles"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    company_name: Mapped[str] = mapped_column(String(200), default="")
    reference_number: Mapped[str] = mapped_column(String(100), default="")
    customer_type: Mapped[str] = mapped_column(String(100), default="")
    industry: Mapped[str] = mapped_column(String(100), default="")
    po_number: Mapped[str] = mapped_column(String(100), default="")
    policy: Mapped[str] = mapped_column(String(32), default="active_with_module")
    # The trial's last free day; billing starts on the 1st of the following month.
    trial_ends_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    non_profit: Mapped[bool] = mapped_column(Boolean, default=False)
    # [{"unit": "Hybrid" | "user", "plan": "standard" | "frontline", "price": "4.50"}]
    prices: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)


class BillingClose(Base):
    """One closed month of one tenant (or an attempt at closing it).

    Closing writes its lines in batches under state `building`, then flips the row to
    `closed` in one short transaction. The partial unique index on (tenant, month,
    version) over rows that are not `building` is what makes a close exactly-once
    across processes: a second process's flip fails, and its attempt is deleted. A
    reissue is the next version; the one it replaces becomes `superseded` and stays
    readable. Everything that went into the result is frozen here and in the hash.
    """

    __tablename__ = "billing_closes"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(12))  # building | closed | superseded
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A building attempt's heartbeat (wall clock), written with each chunk of lines: one
    # silent for [billing] close_lease_seconds is a dead process's, swept by the next
    # close pass (billing.close.sweep_dead_attempts).
    alive_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_by: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # a reissue's reason
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Events and activity recorded up to here are in; the high-water marks name the
    # last event and activity row that were.
    cutoff: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    event_high_water: Mapped[int] = mapped_column(EventId, default=0)
    activity_high_water: Mapped[int] = mapped_column(EventId, default=0)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    users_counted: Mapped[int] = mapped_column(Integer, default=0)
    users_billable: Mapped[int] = mapped_column(Integer, default=0)
    totals: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    invoice: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the close noticed: late events too old to adjust, a quarantined sync…
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index(
            "uq_billing_closes_version",
            "tenant_id",
            "month",
            "version",
            unique=True,
            sqlite_where=text("state <> 'building'"),
            postgresql_where=text("state <> 'building'"),
        ),
        Index("ix_billing_closes_tenant_month", "tenant_id", "month", "version"),
    )


class BillingLine(Base):
    """One user's decision in a close: billable or not, why, under which plan, for what."""

    __tablename__ = "billing_lines"

    close_id: Mapped[int] = mapped_column(
        ForeignKey("billing_closes.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(512))
    billable: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(32))
    plan: Mapped[str] = mapped_column(String(16))
    audience: Mapped[str] = mapped_column(String(8))
    modules: Mapped[str] = mapped_column(Text, default="")  # effective, "\x1f"-joined
    units: Mapped[str] = mapped_column(Text, default="")  # priced units, "\x1f"-joined
    # The user's state at the month's end (billing/carry.py): where the next close starts.
    state: Mapped[str | None] = mapped_column(Text, nullable=True)


class BillingAdjustment(Base):
    """A correction to an earlier closed month, issued by a later close: a reversal (-1)
    of what was billed or the corrected line (+1), priced at that month's prices."""

    __tablename__ = "billing_adjustments"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    close_id: Mapped[int] = mapped_column(ForeignKey("billing_closes.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(36))
    month: Mapped[str] = mapped_column(String(7))  # the month corrected
    user_id: Mapped[str] = mapped_column(String(36))
    user_name: Mapped[str] = mapped_column(String(512))
    sign: Mapped[int] = mapped_column(Integer)
    units: Mapped[str] = mapped_column(Text)
    audience: Mapped[str] = mapped_column(String(8))
    plan: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    amount: Mapped[str] = mapped_column(String(24))

    __table_args__ = (
        Index("ix_billing_adjustments_close", "close_id", "id"),
        Index("ix_billing_adjustments_month_user", "tenant_id", "month", "user_id"),
    )


class Activity(Base):
    """A user's sign-in, visit, chat or notification, as the workplace reported it
    (`POST /api/v1/tenants/{id}/activity`): what the `monthly_active` policy reads.

    Append-only like the event log, and kept apart from it: there can be many per user
    and day, and only the billing close reads them.
    """

    __tablename__ = "activity_log"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(16))  # sign_in | visit | chat | notification
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_activity_user", "tenant_id", "user_id", "occurred_at"),
        Index("ix_activity_recorded", "tenant_id", "recorded_at"),
    )


class ReportingKey(Base):
    """A hosting partner's provisioning key for the reporting API (/reporting/v1):
    a SHA-256 digest, shown once when made, revocable."""

    __tablename__ = "reporting_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(320))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BillingMailOutbox(Base):
    """The monthly e-mail report of one close, waiting to be sent (billing/mail.py).

    Written in the close's own flip transaction, so a close that stands always has its
    report and a close that lost has none; sent later by the scheduler, so an SMTP
    server that is down never holds up or fails a close. A sender claims a row by
    moving `next_attempt_at` past its lease (a compare-and-set on `attempts`).
    """

    __tablename__ = "billing_mail_outbox"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    close_id: Mapped[int] = mapped_column(
        ForeignKey("billing_closes.id", ondelete="CASCADE"), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    month: Mapped[str] = mapped_column(String(7))
    state: Mapped[str] = mapped_column(String(8))  # pending | sent | failed
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    sent_to: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_billing_mail_outbox_due", "state", "next_attempt_at"),)



class EventArchive(Base):
    """One run of `connector events archive` (billing.archive): the events it moved out
    of the log, before `before`, into a compressed JSON-lines file. `state` goes
    writing → deleting → done; a run stopped on the way is resumed by running the
    command again. `tenants`: the tenants whose purged users' events went, whose months
    before `before` can no longer be folded again from the log (billing verify and
    reissue say so)."""

    __tablename__ = "event_archives"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    before: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    path: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(12))  # writing | deleting | done
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    started_by: Mapped[str] = mapped_column(String(200))
    # Set when the file is complete: its lines, its SHA-256 and the largest event id.
    events: Mapped[int | None] = mapped_column(EventId, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    max_event_id: Mapped[int | None] = mapped_column(EventId, nullable=True)
    deleted: Mapped[int] = mapped_column(EventId, default=0)
    tenants: Mapped[list[str]] = mapped_column(JSON, default=list)
