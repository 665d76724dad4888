"""admin list indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 21:59:15.513660

The admin users page filters by status or guest in userName order and counts the
matches; "users with module X" reads user_modules and group_modules by module. Without
these, each such page read every user of the tenant (about 1 ms per 1,000 users).

From here on user_modules holds rows of live users only (a removal keeps the user's
modules in its `user.removed` event and a restore puts them back), so "who has module
X" is answered from the assignment tables alone. Rows of users removed before this
migration are deleted; restoring such a user brings back no modules.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("group_modules", schema=None) as batch_op:
        batch_op.create_index(
            "ix_group_modules_module", ["tenant_id", "module", "group_id"], unique=False
        )

    with op.batch_alter_table("user_modules", schema=None) as batch_op:
        batch_op.create_index(
            "ix_user_modules_module", ["tenant_id", "module", "user_id"], unique=False
        )

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(
            "ix_users_live_active",
            ["tenant_id", "active", "user_name_norm"],
            unique=False,
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )
        batch_op.create_index(
            "ix_users_live_guest",
            ["tenant_id", "guest", "user_name_norm"],
            unique=False,
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )
        batch_op.create_index(
            "ix_users_tenant_created", ["tenant_id", "created_at", "id"], unique=False
        )
        batch_op.drop_index("ix_users_tenant_modified")
        batch_op.create_index(
            "ix_users_tenant_modified", ["tenant_id", "modified_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_users_live_origin",
            ["tenant_id", "origin", "user_name_norm"],
            unique=False,
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )
    op.execute(
        "DELETE FROM user_modules WHERE EXISTS (SELECT 1 FROM users u WHERE "
        "u.tenant_id = user_modules.tenant_id AND u.id = user_modules.user_id "
        "AND u.removed_at IS NOT NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_tenant_created")
        batch_op.drop_index("ix_users_tenant_modified")
        batch_op.create_index(
            "ix_users_tenant_modified", ["tenant_id", "modified_at"], unique=False
        )
        batch_op.drop_index(
            "ix_users_live_origin",
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )
        batch_op.drop_index(
            "ix_users_live_guest",
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )
        batch_op.drop_index(
            "ix_users_live_active",
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )

    with op.batch_alter_table("user_modules", schema=None) as batch_op:
        batch_op.drop_index("ix_user_modules_module")

    with op.batch_alter_table("group_modules", schema=None) as batch_op:
        batch_op.drop_index("ix_group_modules_module")
