"""The tests' statement hooks (tests/support/statements.py), which go through one
listener installed with the engine instead of SQLAlchemy's listener lists: they still
see the statements of the thread that asks, and only while it asks."""

from __future__ import annotations

from sqlalchemy import Engine, text

from tests.support.statements import counting


def test_counting_sees_this_threads_statements(engine: Engine) -> None:
    with counting(engine) as issued, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert issued[-1] == "SELECT 1"  # after SQLite's BEGIN
    with engine.connect() as conn:
        conn.execute(text("SELECT 2"))
    assert "SELECT 2" not in issued  # the block is over: no longer counted
