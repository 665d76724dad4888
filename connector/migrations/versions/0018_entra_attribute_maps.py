"""Entra sync: a per-tenant attribute mapping table

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 16:10:00

entra_attribute_maps: which Graph user property lands in which connector attribute, one
row per tenant that changed Entra's default table (no row: the default).
entra_manager_waits: synced users whose manager was not a connector user yet when they
were written; their manager is filled in when it arrives. The users'
new attributes (department, jobTitle, phones…) need no column: they live in
users.data, where SCIM pushes already put the same attributes, so SCIM GET returns them
whichever way they arrived.
"""

import sqlalchemy as sa
from alembic import op

import connector.models

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entra_attribute_maps",
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey(
            "tenants.id", name="fk_entra_attribute_maps_tenant_id_tenants"), nullable=False),
        sa.Column("mappings", sa.JSON(), nullable=False),
        sa.Column("updated_at", connector.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_entra_attribute_maps"),
    )
    op.create_table(
        "entra_manager_waits",
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey(
            "tenants.id", name="fk_entra_manager_waits_tenant_id_tenants"), nullable=False),
        sa.Column("report_object_id", sa.String(512), nullable=False),
        sa.Column("manager_object_id", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "report_object_id",
                                name="pk_entra_manager_waits"),
    )
    op.create_index("ix_entra_manager_waits_manager", "entra_manager_waits",
                    ["tenant_id", "manager_object_id"])


def downgrade() -> None:
    op.drop_index("ix_entra_manager_waits_manager", table_name="entra_manager_waits")
    op.drop_table("entra_manager_waits")
    op.drop_table("entra_attribute_maps")
