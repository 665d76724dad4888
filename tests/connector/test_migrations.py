"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from connector import migrate
from connector.config import DatabaseSettings
from connector.db import make_engine
from connector.models import Base
from tests.support.clients import insert_admin_with_clear_totp
from tests.support.databases import PG_ADMIN_DSN, PG_URL_TEMPLATE


def test_migrations_match_the_models(engine: Engine) -> None:
    def on_this_database(item: Any, name: str | None, kind: str, reflected: bool,
                         compare_to: Any) -> bool:
        """A model index made for one database only (`ddl_if(dialect=...)`, which
        `create_all` honours and Alembic's comparison does not) is left out elsewhere."""
        only_on = getattr(getattr(item, "_ddl_if", None), "dialect", None)
        return reflected or only_on is None or only_on == engine.dialect.name

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "compare_type": True, "include_object": on_this_database})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models and migrations disagree; add a migration: {diff}"


@pytest.fixture(params=("sqlite", "postgresql"))
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database of each kind with no schema yet (this test's own)."""
    if request.param == "sqlite":
        engine = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'old.sqlite3'}"))
        yield engine
        engine.dispose()
        return
    if request.config.getoption("--db") == "sqlite":
        pytest.skip("PostgreSQL left out with --db sqlite")
    name = f"connector_migrate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(DatabaseSettings(url=PG_URL_TEMPLATE.format(db=name)))
    try:
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_upgrading_a_database_with_users_keeps_every_row(empty_engine: Engine) -> None:
    """Migrations that rebuild a table on SQLite (batch mode: copy, drop, rename) ran
    with foreign keys on, and dropping the old `users` ran the ON DELETE CASCADE of
    `user_values`: upgrading 0018 → 0019 emptied it. Rows written at 0018 are all there
    after upgrading to the newest revision, and the foreign keys hold."""
    cfg = migrate.alembic_config()
    with empty_engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0018")
    at = dt.datetime(2026, 1, 1)
    with empty_engine.begin() as c:
        c.execute(text(
            "INSERT INTO tenants (id, name, created_at, status_source, scim_default_status,"
            " provisioning_paused, entra_sync, time_zone) VALUES ('t1', 'T', :at,"
            " 'identity_provider', 'active', :no, :no, 'UTC')"), {"at": at, "no": False})
        for n in range(3):
            c.execute(text(
                "INSERT INTO users (tenant_id, id, user_name, user_name_norm, active,"
                " in_deleted_list, guest, external_company_guest, admin, origin, created_at,"
                " modified_at, version, data) VALUES ('t1', :id, :name, :name, :yes, :no, :no,"
                " :no, :no, 'scim', :at, :at, 1, '{}')"),
                {"id": f"u{n}", "name": f"user{n}@example.com", "yes": True, "no": False,
                 "at": at})
            c.execute(text(
                'INSERT INTO user_values (tenant_id, user_id, attr, position, value,'
                ' value_norm, "primary", data) VALUES (\'t1\', :id, \'emails\', 0, :name,'
                " :name, :yes, '{}')"), {"id": f"u{n}", "name": f"user{n}@example.com",
                                         "yes": True})
            c.execute(text(
                "INSERT INTO events (tenant_id, subject_type, subject_id, kind, source, actor,"
                " correlation_id, effective_at, recorded_at) VALUES ('t1', 'user', :id,"
                " 'user.created', 'scim', 'test', 'c', :at, :at)"), {"id": f"u{n}", "at": at})
    migrate.upgrade(empty_engine)
    with empty_engine.connect() as c:
        counts = [c.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                  for table in ("tenants", "users", "user_values", "events")]
        words = c.execute(text("SELECT count(*) FROM user_search_words")).scalar()
        if empty_engine.dialect.name == "sqlite":  # on again for every later use
            assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert counts == [1, 3, 3, 3]
    assert words and words >= 3  # and the search words were filled for them
    assert migrate.is_current(empty_engine)


def test_two_factor_secrets_in_clear_survive_0029_and_can_be_sealed(empty_engine: Engine
                                                                     ) -> None:
    """0029 widens the two-factor secret columns for sealed secrets (about 140 characters;
    PostgreSQL refused them in the old 64), keeping the secrets stored in clear before,
    which the code then seals."""
    from connector import admins, sealed
    from connector.config import AzureSyncSettings
    from connector.db import make_sessionmaker

    cfg = migrate.alembic_config()
    with empty_engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0028")
    insert_admin_with_clear_totp(empty_engine)
    migrate.upgrade(empty_engine)
    keys = AzureSyncSettings(encryption_key=sealed.new_key())
    with make_sessionmaker(empty_engine)() as s:
        assert admins.seal_clear_totp_secrets(s, keys) == 1
        s.commit()
    with empty_engine.connect() as c:
        stored = c.execute(text("SELECT totp_secret FROM admin_accounts")).scalar()
    assert stored and len(stored) > 64
    assert sealed.unseal(keys, stored, "", "") == "JBSWY3DPEHPK3PXP"
