"""read-path indexes: live users, covering member lookup

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 19:50:00

`ix_users_live` lets a page of users (count, then OFFSET in id order) walk an index of
live users instead of every row; `ix_memberships_member_group` makes "groups of this
user" an index-only lookup (SQLite preferred the primary key's tenant prefix over the
narrower non-covering index and scanned a whole tenant's memberships).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_users_live", "users", ["tenant_id", "id"],
                    sqlite_where=sa.text("removed_at IS NULL"),
                    postgresql_where=sa.text("removed_at IS NULL"))
    op.create_index("ix_memberships_member_group", "memberships",
                    ["tenant_id", "member_id", "group_id"])
    op.drop_index("ix_memberships_member", table_name="memberships")


def downgrade() -> None:
    op.create_index("ix_memberships_member", "memberships", ["tenant_id", "member_id"])
    op.drop_index("ix_memberships_member_group", table_name="memberships")
    op.drop_index("ix_users_live", table_name="users")
