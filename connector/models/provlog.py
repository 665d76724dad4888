"""The provisioning log: what SCIM pushes and Entra sync pulls tried to change, per
object, with their result (written by `connector.provlog` only)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from connector.models.base import Base, EventId, UTCDateTime


class ProvisioningEntry(Base):
    """One attempted object change (or one failed SCIM request), as Entra's
    provisioning logs show them: never updated, pruned after the retention period.

    `changes` is {attribute: [old, new]} and never holds a secret (the writer drops
    passwords, tokens and client secrets)."""

    __tablename__ = "provisioning_log"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    # No foreign key to tenants, as the event log (connector.models.directory.User).
    tenant_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(8))  # scim | entra
    # The SCIM request id, or "sync-run:<id>" (the Entra run), and the client: the SCIM
    # token's User-Agent, or "entra-sync".
    source_ref: Mapped[str] = mapped_column(String(64))
    client: Mapped[str | None] = mapped_column(String(200), nullable=True)
    operation: Mapped[str] = mapped_column(String(24))
    result: Mapped[str] = mapped_column(String(8))  # success | skipped | failure
    code: Mapped[str] = mapped_column(String(48))
    reason: Mapped[str] = mapped_column(Text)
    object_type: Mapped[str | None] = mapped_column(String(8), nullable=True)  # user | group
    user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # connector id
    object_id: Mapped[str | None] = mapped_column(String(512), nullable=True)  # externalId
    name: Mapped[str | None] = mapped_column(String(512), nullable=True)  # userName / group
    changes: Mapped[Any] = mapped_column(JSON, nullable=True)
    # A failed SCIM request: {"method", "path", "status", "scimType", "detail"}.
    request: Mapped[Any] = mapped_column(JSON, nullable=True)

    __table_args__ = (
        Index("ix_provisioning_log_tenant_at", "tenant_id", "at"),
        Index("ix_provisioning_log_tenant_result", "tenant_id", "result", "at"),
        Index("ix_provisioning_log_tenant_user", "tenant_id", "user_id", "at"),
        Index("ix_provisioning_log_tenant_ref", "tenant_id", "source_ref"),
    )
