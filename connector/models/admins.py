"""Admin accounts, their API tokens, the audit log and the instance's own keys
(`connector.admins`)."""

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
)
from sqlalchemy.orm import Mapped, mapped_column

from connector.models.base import Base, EventId, UTCDateTime


class AdminAccount(Base):
    """Someone who signs in to the admin UI or calls the admin API.

    role `partner` sees every tenant; role `tenant` sees only `tenant_id`. The password
    is kept as a werkzeug scrypt hash (a memory-hard KDF), never in clear.
    """

    __tablename__ = "admin_accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_norm: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # partner | tenant
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    # Set for a password someone else chose (the one-time password `connector admin
    # create` prints): the next sign-in must choose a new one before anything else.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    # Changing it signs out every browser session of the account (password change,
    # disabling): sessions carry the epoch they were issued under.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A one-time password works until it expires, and for one sign-in: the sign-in that
    # uses it stamps `one_time_used_at`, and a second one is refused.
    one_time_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(),
                                                                    nullable=True)
    one_time_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # TOTP two-factor sign-in (RFC 6238): the secret once enrolment is confirmed
    # (`totp_pending_secret` while it is being set up), sealed with the instance key
    # (`connector.sealed`; rows from before revision 0029 may hold the base32 secret in
    # clear until sealed, see `connector.admins`), the last time step a code was accepted
    # for (a code works once), and the SHA-256 digests of the unused recovery codes.
    totp_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    totp_pending_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    totp_enabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recovery_codes: Mapped[Any] = mapped_column(JSON, nullable=True)


class AdminSession(Base):
    """One browser's sign-in, kept server-side so that signing out ends it for good: the
    session cookie names the row (by the SHA-256 of a random id), and every request
    checks that the row is there and not ended."""

    __tablename__ = "admin_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    admin_id: Mapped[str] = mapped_column(ForeignKey("admin_accounts.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AdminToken(Base):
    """A personal API token of an admin, for scripts: a SHA-256 digest, shown once."""

    __tablename__ = "admin_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    admin_id: Mapped[str] = mapped_column(ForeignKey("admin_accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AuditEntry(Base):
    """One admin action (sign-in, failed sign-in, token, tenant, setting, user change…).

    Append-only, like the event log. Changes to a tenant's directory are also events;
    both carry the request id, so the audit line and its events are found together.
    Failed sign-ins are also what login throttling counts (by `remote_net`).
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    admin_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(48))
    tenant_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    target: Mapped[str | None] = mapped_column(String(320), nullable=True)
    detail: Mapped[Any] = mapped_column(JSON, nullable=True)
    remote_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The client as sign-in throttling counts it (`connector.admins.client_network`): the
    # IPv4 address, or the /64 of an IPv6 one. None on rows from before revision 0029.
    remote_net: Mapped[str | None] = mapped_column(String(64), nullable=True)
    correlation_id: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_tenant_at", "tenant_id", "at"),
        Index("ix_audit_log_action_target_at", "action", "target", "at"),
    )


class InstanceKey(Base):
    """Secrets the instance generates for itself on first use (the session-signing key),
    shared by every process through the database, unless the config sets them."""

    __tablename__ = "instance_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

