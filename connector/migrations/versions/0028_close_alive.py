"""a close attempt's heartbeat: a close killed mid-way is swept, not kept for hours

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07 03:20:00

`billing_closes.alive_at`: a `building` attempt's process writes it with every chunk of
lines it commits; an attempt not alive for `[billing] close_lease_seconds` belongs to a
process that died mid-close, and the next close pass deletes it and its lines.
"""

import sqlalchemy as sa
from alembic import op

import connector.models

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_closes") as batch:
        batch.add_column(sa.Column("alive_at", connector.models.UTCDateTime(timezone=True),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_closes") as batch:
        batch.drop_column("alive_at")
