"""Webhooks (`connector.webhooks`): the endpoints the event feed is pushed to, each
with its own place in the feed, and the log of every delivery attempt.

There is no per-event delivery table: the event log is the outbox (connector/webhooks
explains why). An endpoint's `cursor_txid`/`cursor_id` is its feed position, moved only
in the transaction that records a 2xx attempt.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from connector.models.base import Base, EventId, TxId, UTCDateTime


class WebhookEndpoint(Base):
    """A receiver of signed webhook messages: of one tenant's events, or (tenant_id
    NULL) of every tenant's (partner-wide)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(200), default="")
    # Public event types (connector.feed.PUBLIC_TYPES values); empty: every type.
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The signing secret (whsec_…), Fernet-sealed with the instance key
    # (connector.sealed); during a rotation's grace period the previous one signs too.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_secret_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(),
                                                                       nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The feed position delivered up to: after the event (cursor_txid, cursor_id).
    cursor_txid: Mapped[int] = mapped_column(TxId, default=0)
    cursor_id: Mapped[int] = mapped_column(EventId, default=0)
    # Which dispatcher holds the endpoint, until when (a committed lease, never a lock
    # held through an HTTP call).
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Failing: since when without a 2xx, how many attempts in a row, when to try again.
    failing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_webhook_endpoints_tenant_id", "tenant_id"),
        Index("ix_webhook_endpoints_due", "enabled", "next_attempt_at"),
    )


class WebhookAttempt(Base):
    """One HTTP request to an endpoint: a delivery (of one event or a batch), a manual
    redelivery, or a test ping; with what came back."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    webhook_id: Mapped[str] = mapped_column(String(100))  # the webhook-id header
    message_type: Mapped[str] = mapped_column(String(40))  # an event type, batch, ping
    # The events carried (none for a ping), and the feed range they came from:
    # after (from_txid, from_id) up to and including (to_txid, to_id).
    first_event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    from_txid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    from_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    to_txid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    to_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer)  # 1 for the first try of a message
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # plain words
    succeeded: Mapped[bool] = mapped_column(Boolean)
    manual: Mapped[bool] = mapped_column(Boolean, default=False)  # redelivery or ping

    __table_args__ = (
        Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_attempts_attempted_at", "attempted_at"),
    )
