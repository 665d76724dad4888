"""provisioning_log: every object change SCIM pushes and Entra sync pulls attempted

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 15:50:00

One row per attempted change (create, update, disable, enable, delete, restore,
membership add/remove, adopt, skip) or failed SCIM request, with its result, a stable
code, a reason in plain words and the attributes changed (old -> new, never a secret).
Pruned after `provisioning_log.retention_days`. Indexed for the admin page's filters:
tenant + time, tenant + result, tenant + user, and a run's entries (source_ref).
"""

import sqlalchemy as sa
from alembic import op

import connector.models

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provisioning_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("at", connector.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("source_ref", sa.String(64), nullable=False),
        sa.Column("client", sa.String(200), nullable=True),
        sa.Column("operation", sa.String(24), nullable=False),
        sa.Column("result", sa.String(8), nullable=False),
        sa.Column("code", sa.String(48), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("object_type", sa.String(8), nullable=True),
        sa.Column("user_id", sa.String(36), nullable=True),
        sa.Column("object_id", sa.String(512), nullable=True),
        sa.Column("name", sa.String(512), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_provisioning_log_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provisioning_log")),
    )
    op.create_index("ix_provisioning_log_tenant_at", "provisioning_log", ["tenant_id", "at"])
    op.create_index("ix_provisioning_log_tenant_result", "provisioning_log",
                    ["tenant_id", "result", "at"])
    op.create_index("ix_provisioning_log_tenant_user", "provisioning_log",
                    ["tenant_id", "user_id", "at"])
    op.create_index("ix_provisioning_log_tenant_ref", "provisioning_log",
                    ["tenant_id", "source_ref"])


def downgrade() -> None:
    for name in ("ix_provisioning_log_tenant_ref", "ix_provisioning_log_tenant_user",
                 "ix_provisioning_log_tenant_result", "ix_provisioning_log_tenant_at"):
        op.drop_index(name, table_name="provisioning_log")
    op.drop_table("provisioning_log")
