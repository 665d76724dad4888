"""groups and memberships: seen_in_run

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 22:55:00

A full Entra sync round (the first one, or a resync) lists every group with all its
members. Groups and memberships it did not list are gone from Entra ID (Graph sends no
@removed for them then): marking what each full round saw lets its end remove the rest,
as it already does for users.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

RUN_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("groups") as batch:
        batch.add_column(sa.Column("seen_in_run", RUN_ID, nullable=True))
    with op.batch_alter_table("memberships") as batch:
        batch.add_column(sa.Column("seen_in_run", RUN_ID, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("memberships") as batch:
        batch.drop_column("seen_in_run")
    with op.batch_alter_table("groups") as batch:
        batch.drop_column("seen_in_run")
