"""entra_registrations: scope_group_mode, full_round_due

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 01:00:00

Scoping Entra ID sync by group membership: the chosen groups (scope_groups, there since
0007) count their direct members only, as Entra's own "assigned users and groups"
provisioning does, or also the members of nested groups (`transitive`). A change of the
scope domains can only be seen by reading every user again: the registration then asks
for a full round (full_round_due), which the next round takes and clears.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entra_registrations") as batch:
        batch.add_column(sa.Column("scope_group_mode", sa.String(16), nullable=False,
                                   server_default="direct"))
        batch.add_column(sa.Column("full_round_due", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("entra_registrations") as batch:
        batch.drop_column("full_round_due")
        batch.drop_column("scope_group_mode")
