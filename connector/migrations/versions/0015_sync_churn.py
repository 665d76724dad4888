"""Entra sync under churn: items kept until they apply, rounds resumed in new runs,
soft-delete and matching-attribute settings

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 15:50:00

- sync_pending: an object a round could not apply (a userPrincipalName still held by
  another user, a rejected value…), with its Graph item, its reason and code. Retried at
  the end of every round until it applies, even though the deltaLink moves on, and never
  swept as if Entra had deleted it. Also the users whose group memberships are still to
  be read (kind "groups").
- sync_pending_members: a group's members that are not known yet (a nested group that
  arrives later in the round, or in a later one).
- sync_runs.round_id: a round resumed after a failure or a dead process continues in a
  new run row, pointing at the round's first run; both stay in the run log.
- entra_registrations.soft_delete ("disable" as Entra's own provisioning does, or
  "remove") and matching_attribute (how a new Entra object finds an existing account).
"""

import sqlalchemy as sa
from alembic import op

import connector.models

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_pending",
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("object_id", sa.String(512), nullable=False),
        sa.Column("item", sa.JSON(), nullable=False),
        sa.Column("operation", sa.String(24), nullable=False),
        sa.Column("code", sa.String(48), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("first_failed_at", connector.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_failed_at", connector.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "kind", "object_id", name="pk_sync_pending"),
    )
    op.create_table(
        "sync_pending_members",
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("group_object_id", sa.String(512), nullable=False),
        sa.Column("member_object_id", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "group_object_id", "member_object_id",
                                name="pk_sync_pending_members"),
    )
    op.create_index("ix_sync_pending_members_member", "sync_pending_members",
                    ["tenant_id", "member_object_id"])
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("round_id", sa.BigInteger().with_variant(
            sa.Integer(), "sqlite"), nullable=True))
    with op.batch_alter_table("entra_registrations") as batch:
        batch.add_column(sa.Column("soft_delete", sa.String(16), nullable=False,
                                   server_default="disable"))
        batch.add_column(sa.Column("matching_attribute", sa.String(32), nullable=False,
                                   server_default="userPrincipalName"))


def downgrade() -> None:
    with op.batch_alter_table("entra_registrations") as batch:
        batch.drop_column("matching_attribute")
        batch.drop_column("soft_delete")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("round_id")
    op.drop_index("ix_sync_pending_members_member", table_name="sync_pending_members")
    op.drop_table("sync_pending_members")
    op.drop_table("sync_pending")
