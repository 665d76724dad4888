"""Every tenant's event feed from one index on PostgreSQL

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-07 20:00:00

A partner-wide feed page (the all-tenants events API, a partner-wide webhook endpoint's
messages and probes) merged every tenant's range of (tenant_id, txid, id): one index
probe per tenant and up to a page of rows from each, 1-3 s a page with 10,000 tenants
(docs/benchmarks.md). The index (txid, id) serves it as one range. PostgreSQL only: on
SQLite txid is 0 and the primary key already gives that order.

The build takes a SHARE lock on `events` (reads go on, writes wait) for as long as it
runs, as 0024's did: about a minute per 50 million events on two cores. It is built
inside the migration's transaction, so a stopped upgrade leaves nothing half made.
"""

from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_events_feed", "events", ["txid", "id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_events_feed", table_name="events")
