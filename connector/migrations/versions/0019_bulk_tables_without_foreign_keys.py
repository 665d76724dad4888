"""The bulk-written tables lose their foreign keys

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 18:40:00

users → tenants, user_values → users, events → tenants and provisioning_log → tenants.
A sync round creating users writes six to eight rows per user into these tables, and
PostgreSQL checks each foreign key row by row (a query and a row lock per row): measured
at a fifth to a quarter of the database's work in an initial round (docs/benchmarks.md,
"Foreign keys…"). Their rows are written only by the directory service, for a tenant and
user it has just read or written, and no code deletes a user or a tenant row, so the
ON DELETE CASCADE of user_values never ran. SQLite copies the four tables (batch mode).
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_DROPPED = (
    ("users", "fk_users_tenant_id_tenants"),
    ("user_values", "fk_user_values_tenant_id_users"),
    ("events", "fk_events_tenant_id_tenants"),
    ("provisioning_log", "fk_provisioning_log_tenant_id_tenants"),
)


def _constraint_name(table: str, wanted: str) -> str | None:
    """The foreign key's name as the database holds it (SQLite's reflection may name it
    differently, or not at all)."""
    keys = sa.inspect(op.get_bind()).get_foreign_keys(table)
    for key in keys:
        if key.get("name") == wanted:
            return wanted
    return keys[0].get("name") if len(keys) == 1 else None


def upgrade() -> None:
    for table, name in _DROPPED:
        found = _constraint_name(table, name)
        with op.batch_alter_table(table, recreate="auto") as batch:
            if found:
                batch.drop_constraint(found, type_="foreignkey")
            else:  # SQLite with an unnamed key: batch mode rebuilds from the reflection
                batch.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("provisioning_log") as batch:
        batch.create_foreign_key("fk_provisioning_log_tenant_id_tenants", "tenants",
                                 ["tenant_id"], ["id"])
    with op.batch_alter_table("events") as batch:
        batch.create_foreign_key("fk_events_tenant_id_tenants", "tenants", ["tenant_id"], ["id"])
    with op.batch_alter_table("user_values") as batch:
        batch.create_foreign_key("fk_user_values_tenant_id_users", "users",
                                 ["tenant_id", "user_id"], ["tenant_id", "id"],
                                 ondelete="CASCADE")
    with op.batch_alter_table("users") as batch:
        batch.create_foreign_key("fk_users_tenant_id_tenants", "tenants", ["tenant_id"], ["id"])
