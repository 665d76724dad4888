"""billing_mail_outbox: the monthly e-mail report of each close, until it is sent

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 03:00:00

A close enqueues its report in the transaction that makes it stand; the scheduler sends
it over SMTP and retries with backoff (billing/mail.py).
"""

import sqlalchemy as sa
from alembic import op

from connector.models import EventId, UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_mail_outbox",
        sa.Column("id", EventId, autoincrement=True, nullable=False),
        sa.Column("close_id", EventId, nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("sent_to", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["close_id"], ["billing_closes.id"], ondelete="CASCADE",
                                name="fk_billing_mail_outbox_close_id_billing_closes"),
        sa.PrimaryKeyConstraint("id", name="pk_billing_mail_outbox"),
        sa.UniqueConstraint("close_id", name="uq_billing_mail_outbox_close_id"),
    )
    op.create_index("ix_billing_mail_outbox_due", "billing_mail_outbox",
                    ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_billing_mail_outbox_due", table_name="billing_mail_outbox")
    op.drop_table("billing_mail_outbox")
