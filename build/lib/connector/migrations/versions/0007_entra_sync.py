"""entra sync

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 22:13:24.517638

The Entra ID poller's tables: app registrations (credentials encrypted), per-tenant
sync state (delta cursors, the round in progress and its lease), a shared throttle per
app registration, the run log, changes held for approval; users.seen_in_run for the
sweep at the end of a full round.
"""

import sqlalchemy as sa
from alembic import op

import connector.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("entra_sync", sa.Boolean(), nullable=False, server_default=sa.text("false"))
        )
    op.create_table(
        "sync_app_throttle",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("paused_until", connector.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_sync_app_throttle")),
    )
    op.create_table(
        "sync_staged",
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("object_id", sa.String(length=512), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_sync_staged")),
    )
    op.create_table(
        "entra_registrations",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("directory_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=True),
        sa.Column("certificate_encrypted", sa.Text(), nullable=True),
        sa.Column("certificate_thumbprint", sa.String(length=64), nullable=True),
        sa.Column("authority_host", sa.String(length=255), nullable=False),
        sa.Column("graph_base_url", sa.String(length=255), nullable=False),
        sa.Column("interval_minutes", sa.Integer(), nullable=False),
        sa.Column("scope_groups", sa.JSON(), nullable=False),
        sa.Column("scope_domains", sa.JSON(), nullable=False),
        sa.Column("threshold_count", sa.Integer(), nullable=False),
        sa.Column("threshold_percent", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", connector.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", connector.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_entra_registrations_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_entra_registrations")),
    )
    op.create_table(
        "sync_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("started_at", connector.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", connector.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sync_runs_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
    )
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.create_index("ix_sync_runs_tenant", ["tenant_id", "id"], unique=False)

    op.create_table(
        "sync_state",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("users_delta_link", sa.Text(), nullable=True),
        sa.Column("groups_delta_link", sa.Text(), nullable=True),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("phase", sa.String(length=16), nullable=True),
        sa.Column("next_link", sa.Text(), nullable=True),
        sa.Column("pending_users_delta_link", sa.Text(), nullable=True),
        sa.Column("full_round", sa.Boolean(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", connector.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("quarantined_until", connector.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", connector.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_started_at", connector.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sync_state_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_sync_state")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "seen_in_run", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("entra_sync")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("seen_in_run")

    op.drop_table("sync_state")
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_runs_tenant")

    op.drop_table("sync_runs")
    op.drop_table("entra_registrations")
    op.drop_table("sync_staged")
    op.drop_table("sync_app_throttle")
