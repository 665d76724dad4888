"""admins' TOTP secrets sealed at rest; failed sign-ins counted per client network

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07 11:50:00

`admin_accounts.totp_secret` and `totp_pending_secret` held the base32 secret in clear
(64 characters at most); they now hold it sealed with the instance key (about 140
characters), as Entra and webhook secrets are. The rows themselves are sealed by the
code, which has the key (a migration has not): `connector migrate` and `connector serve`
seal what is left in clear, and a sign-in seals its own; until then the clear form
keeps working.

`audit_log.remote_net`: the client as sign-in throttling counts it (an IPv4 address, or
the /64 of an IPv6 one, which one subscriber picks addresses from at will). Rows from
before have none: failures recorded before the upgrade no longer count against their
address (at most a day of them, the longest wait).
"""

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("admin_accounts") as batch:
        for column in ("totp_secret", "totp_pending_secret"):
            batch.alter_column(column, type_=sa.Text(), existing_type=sa.String(64),
                               existing_nullable=True)
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("remote_net", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("remote_net")
    # Sealed secrets do not fit the old width: downgrading turns two-factor sign-in off
    # for the accounts that had it (their recovery codes go with it); a partner admin
    # sets it up again.
    op.execute(sa.text("UPDATE admin_accounts SET totp_secret = NULL, "
                       "totp_pending_secret = NULL, totp_enabled_at = NULL, "
                       "totp_last_step = NULL, recovery_codes = NULL "
                       "WHERE length(totp_secret) > 64 OR length(totp_pending_secret) > 64"))
    with op.batch_alter_table("admin_accounts") as batch:
        for column in ("totp_secret", "totp_pending_secret"):
            batch.alter_column(column, type_=sa.String(64), existing_type=sa.Text(),
                               existing_nullable=True)
