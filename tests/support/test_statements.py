"""The statement counter itself: it must catch a per-row query, or every guard built on it
passes for nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.statements import assert_flat, counting


def test_a_read_per_row_is_caught_and_named() -> None:
    engine = create_engine("sqlite://")
    rows: list[int] = []

    def read(n: int) -> None:
        with engine.connect() as conn:
            ids = conn.execute(text("SELECT 1")).all()
            for row in rows:  # one more statement per row: the N+1
                conn.execute(text("SELECT :id"), {"id": row})
        assert len(ids) == 1 and len(rows) == n

    with pytest.raises(AssertionError) as caught:
        assert_flat(engine, lambda k: rows.extend(range(k)), read)
    assert "6 statements at 5 rows, 51 at 50" in str(caught.value)
    assert "50x (was 5x) SELECT ?" in str(caught.value)


def test_a_flat_read_passes_and_reports_its_counts() -> None:
    engine = create_engine("sqlite://")
    rows: list[int] = []

    def read(n: int) -> None:
        with engine.connect() as conn:
            assert len(conn.execute(text("SELECT 1 UNION ALL SELECT 2")).all()) == 2
        assert len(rows) == n

    assert assert_flat(engine, lambda k: rows.extend(range(k)), read) == {5: 1, 50: 1}


def test_other_threads_statements_are_not_counted(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")

    def select_elsewhere() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 2"))

    elsewhere = threading.Thread(target=select_elsewhere)
    with counting(engine) as issued:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        elsewhere.start()
        elsewhere.join()
    assert issued == ["SELECT 1"]
