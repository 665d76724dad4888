"""Bring the database schema up to date with Alembic, from code."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

_INI = Path(__file__).with_name("alembic.ini")


def alembic_config() -> Config:
    return Config(str(_INI))


def upgrade(engine: Engine) -> None:
    """Apply every pending migration in one transaction per migration.

    On SQLite, foreign keys are off while migrations run, as Alembic's batch mode needs:
    it rebuilds a table by copying it and dropping the old one, and SQLite's DROP TABLE
    deletes the rows first, which runs the ON DELETE CASCADE of every table referencing
    it (a rebuilt `users` emptied `user_values`). They are checked after, and on again
    before the connection goes back to the pool."""
    cfg = alembic_config()
    if engine.dialect.name != "sqlite":
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
        return
    with engine.connect() as connection:
        # On the driver's connection, outside any transaction (inside one it is a no-op).
        raw = connection.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"Migrating left rows without their parent row: "
                                       f"{broken[:5]}; nothing was changed.")
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


def is_current(engine: Engine) -> bool:
    """Tell whether the database is at the newest revision."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head
