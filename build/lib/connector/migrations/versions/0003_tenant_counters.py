"""tenant counters: live users per tenant

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:10:00

An unfiltered page of users answered totalResults with count(*) over every live user
(10-25 ms at 100,000); the directory now keeps the number in this table, in the same
transaction as each creation and removal. Existing tenants are counted here.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_counters",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("live_users", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_tenant_counters_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_counters")),
    )
    op.execute(
        "INSERT INTO tenant_counters (tenant_id, live_users) "
        "SELECT t.id, (SELECT count(*) FROM users u "
        "WHERE u.tenant_id = t.id AND u.removed_at IS NULL) FROM tenants t"
    )


def downgrade() -> None:
    op.drop_table("tenant_counters")
