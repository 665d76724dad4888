"""round requests and worker beats: "Run now" handed to `connector worker`

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06 23:50:00

`sync_requests`: a round an admin asked for while the sync scheduler runs in `connector
worker`; a worker takes it (deletes the row) and runs it. `worker_beats`: the worker
processes alive, so that the web process can say when no worker would take a request.
"""

import sqlalchemy as sa
from alembic import op

import connector.models

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

When = connector.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sync_requests",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("requested_at", When, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"],
                                name=op.f("fk_sync_requests_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_sync_requests")),
    )
    op.create_table(
        "worker_beats",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", When, nullable=False),
        sa.Column("beat_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_beats")),
    )
    op.create_index("ix_worker_beats_beat_at", "worker_beats", ["beat_at"])


def downgrade() -> None:
    op.drop_index("ix_worker_beats_beat_at", table_name="worker_beats")
    op.drop_table("worker_beats")
    op.drop_table("sync_requests")
