"""admin sign-in: expiring single-use one-time passwords, TOTP, server-side sessions

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 18:10:00

- admin_accounts: when a one-time password expires and when it was used; the TOTP
  secret (and the one being set up), the last accepted time step, recovery code digests.
- admin_sessions: one row per browser sign-in, so that signing out (or a password change,
  reset or disabling) ends the session server-side, not only in the browser's cookie.
"""

import sqlalchemy as sa
from alembic import op

from connector.models import UTCDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("admin_accounts") as batch:
        batch.add_column(sa.Column("one_time_expires_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("one_time_used_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("totp_secret", sa.String(64), nullable=True))
        batch.add_column(sa.Column("totp_pending_secret", sa.String(64), nullable=True))
        batch.add_column(sa.Column("totp_enabled_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("totp_last_step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("recovery_codes", sa.JSON(), nullable=True))
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("admin_id", sa.String(36), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["admin_id"], ["admin_accounts.id"],
                                name="fk_admin_sessions_admin_id_admin_accounts"),
        sa.PrimaryKeyConstraint("id", name="pk_admin_sessions"),
    )
    op.create_index("ix_admin_sessions_admin_id", "admin_sessions", ["admin_id"])


def downgrade() -> None:
    op.drop_index("ix_admin_sessions_admin_id", table_name="admin_sessions")
    op.drop_table("admin_sessions")
    with op.batch_alter_table("admin_accounts") as batch:
        for column in ("recovery_codes", "totp_last_step", "totp_enabled_at",
                       "totp_pending_secret", "totp_secret", "one_time_used_at",
                       "one_time_expires_at"):
            batch.drop_column(column)
