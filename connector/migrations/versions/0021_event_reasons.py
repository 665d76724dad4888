"""Events carry the reason of a back-dated correction

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 18:05:00

events.reason: why a partner admin (a billing clerk) recorded a correction that took
effect in the past ("left on the 28th; the IdP sync was down"). NULL for every other
event. Shown on the user's timeline; the adjustment lines of the next close name it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("reason", sa.String(500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("reason")
