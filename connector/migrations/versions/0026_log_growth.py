"""log growth: the runs of `connector events archive`

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06 23:40:00

`event_archives`: one row per archival of old events into a compressed JSON-lines file
(billing.archive): its boundary, file, state (writing, deleting, done; a stopped run
resumes), the file's line count and SHA-256, how many events were deleted, and the
tenants whose months before the boundary can no longer be folded from the log.
"""

import sqlalchemy as sa
from alembic import op

import connector.models

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

Big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = connector.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "event_archives",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("before", When, nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("started_at", When, nullable=False),
        sa.Column("finished_at", When, nullable=True),
        sa.Column("started_by", sa.String(200), nullable=False),
        sa.Column("events", Big, nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("max_event_id", Big, nullable=True),
        sa.Column("deleted", Big, nullable=False),
        sa.Column("tenants", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_archives")),
    )


def downgrade() -> None:
    op.drop_table("event_archives")
