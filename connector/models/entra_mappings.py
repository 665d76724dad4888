"""Entra ID sync's attribute mapping table, per tenant (written by
`azure_sync.attribute_maps`)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from connector.models.base import Base, UTCDateTime


class EntraAttributeMap(Base):
    """Which Graph user property lands in which connector attribute, for one tenant.

    `mappings` is {Graph property: target attribute}; no row means Entra's default
    table (`azure_sync.mapping.DEFAULT_TABLE`), so a tenant that never changed it
    follows the default as it evolves."""

    __tablename__ = "entra_attribute_maps"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    mappings: Mapped[dict[str, str]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(200))


class EntraManagerWait(Base):
    """A synced user whose manager (a Graph object id) was not a connector user when the
    user was written: its enterprise `manager` stays empty until that user arrives,
    then it is filled in (`azure_sync.attribute_maps.settle_managers`)."""

    __tablename__ = "entra_manager_waits"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    report_object_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    manager_object_id: Mapped[str] = mapped_column(String(512))

    __table_args__ = (Index("ix_entra_manager_waits_manager", "tenant_id",
                            "manager_object_id"),)
