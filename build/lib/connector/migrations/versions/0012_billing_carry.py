"""billing_lines.state; events by (tenant, recorded_at, effective_at); reporting_keys

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 02:00:00

A close keeps each user's state at the month's end with its line, so the next close
folds only that month's events (billing/carry.py). What it must still fold from scratch
are the users something late was learned about: events recorded since the previous
close but effective before this month. Finding them reads events by recording time and
filters on the effective time; with both in one index that filter reads no table rows.

reporting_keys: the hosting partner's provisioning keys for the reporting API.
"""

import sqlalchemy as sa
from alembic import op

from connector.models import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_lines") as batch:
        batch.add_column(sa.Column("state", sa.Text(), nullable=True))
    op.drop_index("ix_events_tenant_recorded", table_name="events")
    op.create_index("ix_events_tenant_recorded", "events",
                    ["tenant_id", "recorded_at", "effective_at"])
    op.create_table(
        "reporting_keys",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("hint", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(320), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reporting_keys"),
        sa.UniqueConstraint("key_hash", name="uq_reporting_keys_key_hash"),
    )


def downgrade() -> None:
    op.drop_table("reporting_keys")
    op.drop_index("ix_events_tenant_recorded", table_name="events")
    op.create_index("ix_events_tenant_recorded", "events", ["tenant_id", "recorded_at"])
    with op.batch_alter_table("billing_lines") as batch:
        batch.drop_column("state")
