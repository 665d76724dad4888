"""notifications: conditions, their e-mail outbox, admins' opt-outs, SCIM answers per minute

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 15:40:00

- notify_conditions: what admins are told about (a held round, a quarantined tenant,
  failing rounds, SCIM errors, a failed month close), one row per (tenant, kind, key),
  raised once until it clears (connector/notify.py).
- notify_outbox: one e-mail per admin per condition (and per daily reminder), written in
  the transaction that raised it, sent by the scheduler with retries.
- notify_optouts: an admin's "no e-mail about this kind" (kind "*": none at all).
- scim_minute_counts: SCIM answers and errors per tenant per minute, flushed by each
  process, for the SCIM error-share condition; pruned after a day.
"""

import sqlalchemy as sa
from alembic import op

from connector.models import EventId, UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_conditions",
        sa.Column("id", EventId, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("raised_at", UTCDateTime(), nullable=False),
        sa.Column("cleared_at", UTCDateTime(), nullable=True),
        sa.Column("last_sent_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notify_conditions"),
        sa.UniqueConstraint("tenant_id", "kind", "key",
                            name="uq_notify_conditions_tenant_id_kind_key"),
    )
    op.create_index("ix_notify_conditions_cleared_at", "notify_conditions", ["cleared_at"])
    op.create_table(
        "notify_outbox",
        sa.Column("id", EventId, autoincrement=True, nullable=False),
        sa.Column("condition_id", EventId, nullable=False),
        sa.Column("admin_id", sa.String(36), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["condition_id"], ["notify_conditions.id"], ondelete="CASCADE",
                                name="fk_notify_outbox_condition_id_notify_conditions"),
        sa.PrimaryKeyConstraint("id", name="pk_notify_outbox"),
    )
    op.create_index("ix_notify_outbox_condition_id", "notify_outbox", ["condition_id"])
    op.create_index("ix_notify_outbox_due", "notify_outbox", ["state", "next_attempt_at"])
    op.create_table(
        "notify_optouts",
        sa.Column("admin_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["admin_id"], ["admin_accounts.id"], ondelete="CASCADE",
                                name="fk_notify_optouts_admin_id_admin_accounts"),
        sa.PrimaryKeyConstraint("admin_id", "kind", name="pk_notify_optouts"),
    )
    op.create_table(
        "scim_minute_counts",
        sa.Column("id", EventId, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("minute", UTCDateTime(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scim_minute_counts"),
    )
    op.create_index("ix_scim_minute_counts_minute_tenant_id", "scim_minute_counts",
                    ["minute", "tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_scim_minute_counts_minute_tenant_id", table_name="scim_minute_counts")
    op.drop_table("scim_minute_counts")
    op.drop_table("notify_optouts")
    op.drop_index("ix_notify_outbox_due", table_name="notify_outbox")
    op.drop_index("ix_notify_outbox_condition_id", table_name="notify_outbox")
    op.drop_table("notify_outbox")
    op.drop_index("ix_notify_conditions_cleared_at", table_name="notify_conditions")
    op.drop_table("notify_conditions")
