"""Tenants can be closed (and reopened, or purged after the retention period)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 18:10:00

tenants.closed_at: when a partner admin closed the tenant (NULL: open). A closed tenant
refuses SCIM provisioning, is not synced from Entra ID and closes no month after the one
it was closed in; its closed months and invoices stay readable until it is purged
`admin.closed_tenant_retention_days` after closing.
"""

import sqlalchemy as sa
from alembic import op

from connector.models import UTCDateTime

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("closed_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("closed_at")
