"""users: an index on externalId for removed users too

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 23:20:00

The poller looks users up by Graph object id (externalId) whether they are live or were
deleted, since a soft-deleted user may come back. The unique index covers live users
only, so each page's lookup read the whole users table: the initial sync slowed from
4,400 to 400 users/s as the table grew (bench/sync_bench.py).
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.create_index("ix_users_tenant_external_any", ["tenant_id", "external_id"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_tenant_external_any")
