"""billing: profiles, closes, lines, adjustments, activity; events.object_id, users.frontline

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 01:20:00

The month close (billing/) folds the event log user by user. A user's group memberships
are events of the group, with the member in the value: `object_id` names the member in
a column, indexed, so the close reads them by user. Existing membership events get it
from their value.
"""

import sqlalchemy as sa
from alembic import op

from connector.models import EventId, UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("frontline", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("invited_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("claimed_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("object_id", sa.String(36), nullable=True))
    sqlite = op.get_bind().dialect.name == "sqlite"
    for kind, column in (("group.member_added", "new_value"),
                         ("group.member_removed", "old_value")):
        member = (sa.func.json_extract(sa.column(column), "$") if sqlite
                  else sa.column(column).op("#>>")(sa.literal_column("'{}'")))
        op.execute(sa.table("events", sa.column("object_id"), sa.column("kind"))
                   .update().where(sa.column("kind") == kind).values(object_id=member))
    op.create_index("ix_events_object", "events", ["tenant_id", "object_id", "effective_at"],
                    sqlite_where=sa.text("object_id IS NOT NULL"),
                    postgresql_where=sa.text("object_id IS NOT NULL"))

    op.create_table(
        "billing_profiles",
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id",
                  name="fk_billing_profiles_tenant_id_tenants"), nullable=False),
        sa.Column("company_name", sa.String(200), nullable=False),
        sa.Column("reference_number", sa.String(100), nullable=False),
        sa.Column("customer_type", sa.String(100), nullable=False),
        sa.Column("industry", sa.String(100), nullable=False),
        sa.Column("po_number", sa.String(100), nullable=False),
        sa.Column("policy", sa.String(32), nullable=False),
        sa.Column("trial_ends_on", sa.Date(), nullable=True),
        sa.Column("non_profit", sa.Boolean(), nullable=False),
        sa.Column("prices", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_billing_profiles"),
    )
    op.create_table(
        "billing_closes",
        sa.Column("id", EventId, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey("tenants.id",
                  name="fk_billing_closes_tenant_id_tenants"), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("closed_by", sa.String(320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("window_end", UTCDateTime(), nullable=False),
        sa.Column("cutoff", UTCDateTime(), nullable=False),
        sa.Column("event_high_water", EventId, nullable=False),
        sa.Column("activity_high_water", EventId, nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("users_counted", sa.Integer(), nullable=False),
        sa.Column("users_billable", sa.Integer(), nullable=False),
        sa.Column("totals", sa.JSON(), nullable=False),
        sa.Column("invoice", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_billing_closes"),
    )
    op.create_index("uq_billing_closes_version", "billing_closes",
                    ["tenant_id", "month", "version"], unique=True,
                    sqlite_where=sa.text("state <> 'building'"),
                    postgresql_where=sa.text("state <> 'building'"))
    op.create_index("ix_billing_closes_tenant_month", "billing_closes",
                    ["tenant_id", "month", "version"])
    op.create_table(
        "billing_lines",
        sa.Column("close_id", EventId, sa.ForeignKey(
            "billing_closes.id", name="fk_billing_lines_close_id_billing_closes",
            ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("user_name", sa.String(512), nullable=False),
        sa.Column("billable", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("plan", sa.String(16), nullable=False),
        sa.Column("audience", sa.String(8), nullable=False),
        sa.Column("modules", sa.Text(), nullable=False),
        sa.Column("units", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("close_id", "user_id", name="pk_billing_lines"),
    )
    op.create_table(
        "billing_adjustments",
        sa.Column("id", EventId, autoincrement=True, nullable=False),
        sa.Column("close_id", EventId, sa.ForeignKey(
            "billing_closes.id", name="fk_billing_adjustments_close_id_billing_closes",
            ondelete="CASCADE"), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("user_name", sa.String(512), nullable=False),
        sa.Column("sign", sa.Integer(), nullable=False),
        sa.Column("units", sa.Text(), nullable=False),
        sa.Column("audience", sa.String(8), nullable=False),
        sa.Column("plan", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("amount", sa.String(24), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_billing_adjustments"),
    )
    op.create_index("ix_billing_adjustments_close", "billing_adjustments", ["close_id", "id"])
    op.create_index("ix_billing_adjustments_month_user", "billing_adjustments",
                    ["tenant_id", "month", "user_id"])
    op.create_table(
        "activity_log",
        sa.Column("id", EventId, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(36), sa.ForeignKey(
            "tenants.id", name="fk_activity_log_tenant_id_tenants"), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_activity_log"),
    )
    op.create_index("ix_activity_user", "activity_log", ["tenant_id", "user_id", "occurred_at"])
    op.create_index("ix_activity_recorded", "activity_log", ["tenant_id", "recorded_at"])


def downgrade() -> None:
    op.drop_table("activity_log")
    op.drop_table("billing_adjustments")
    op.drop_table("billing_lines")
    op.drop_table("billing_closes")
    op.drop_table("billing_profiles")
    op.drop_index("ix_events_object", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("object_id")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("invited_at")
        batch.drop_column("frontline")
