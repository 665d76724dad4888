"""user_search_words: the words the admin users page finds a user by

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 18:10:00

One row per (tenant, folded word, user): every word of a user's userName, displayName,
given and family name and e-mail addresses (whole address, local part, domain and its
parts), casefolded with accents stripped (`connector.search_words`). A search reads each
of its words as one range of the primary key, so "Dvořák", "example.com" and "Jiri"
(for Jiří) find their users on SQLite and PostgreSQL alike. Existing users are
backfilled here, in batches of 2,000. No foreign key to users, as user_values (0019):
written only by the directory service, for a user it has just written.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from connector.search_words import profile_words

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

BATCH = 2000


def upgrade() -> None:
    words = op.create_table(
        "user_search_words",
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("word", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "word", "user_id", name="pk_user_search_words"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_user_search_words_user", "user_search_words", ["tenant_id", "user_id"])
    _backfill(words)


def _backfill(words: Any) -> None:
    users = sa.table("users", sa.column("tenant_id", sa.String), sa.column("id", sa.String),
                     sa.column("user_name", sa.String), sa.column("display_name", sa.String),
                     sa.column("data", sa.JSON))
    bind = op.get_bind()
    after = ("", "")
    while True:
        rows = bind.execute(
            sa.select(users.c.tenant_id, users.c.id, users.c.user_name,
                      users.c.display_name, users.c.data)
            .where(sa.tuple_(users.c.tenant_id, users.c.id) > sa.tuple_(*after))
            .order_by(users.c.tenant_id, users.c.id).limit(BATCH)).all()
        if not rows:
            return
        bind.execute(sa.insert(words), [
            {"tenant_id": r.tenant_id, "user_id": r.id, "word": w}
            for r in rows for w in sorted(profile_words(r.user_name, r.display_name,
                                                        r.data or {}))])
        after = (rows[-1].tenant_id, rows[-1].id)


def downgrade() -> None:
    op.drop_index("ix_user_search_words_user", table_name="user_search_words")
    op.drop_table("user_search_words")
