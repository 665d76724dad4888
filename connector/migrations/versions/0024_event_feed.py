"""The event feed: each event's writing transaction, and the feed's index

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 18:45:00

`events.txid` holds the id of the transaction that wrote the event (PostgreSQL:
pg_current_xact_id(), through the server default, so COPY and every INSERT fill it;
SQLite: 0). Events already stored get 0: they were all committed before this
migration, so they come first in the feed, in id order (connector.feed). One index,
(tenant_id, txid, id), serves a tenant's feed and, merged over the tenants, every
tenant's: each index on events costs every write of a sync round. The column is
added with the constant default (no table rewrite on PostgreSQL) and only then given
the transaction's id as its default.
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

TxId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("events", sa.Column("txid", TxId, nullable=False, server_default=sa.text("0")))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE events ALTER COLUMN txid "
                   "SET DEFAULT (pg_current_xact_id()::text)::bigint")
    op.create_index("ix_events_feed_tenant", "events", ["tenant_id", "txid", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_feed_tenant", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("txid")
