"""events: a partial index on groups' own changes (created, renamed, modules, removed)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 01:50:00

Every month close first folds every group's modules at the month's end. Those events are
few, but without an index the close found them by reading the whole event log: 10
seconds of a 1,000,000-user tenant's close (bench/billing_bench.py). Membership events
are group events too, but name their member in object_id; the index leaves them out.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

WHERE = "subject_type = 'group' AND object_id IS NULL"


def upgrade() -> None:
    op.create_index("ix_events_group_changes", "events", ["tenant_id", "effective_at"],
                    sqlite_where=sa.text(WHERE), postgresql_where=sa.text(WHERE))


def downgrade() -> None:
    op.drop_index("ix_events_group_changes", table_name="events")
