"""tenant counters: generation

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 21:20:00

`generation` changes with every user creation and removal, so that a process may
remember where a page of the id-ordered user list starts (a page anchor) for as long as
the list is unchanged: deep pages of an import then cost what the first page costs.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenant_counters") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("tenant_counters") as batch:
        batch.drop_column("generation")
