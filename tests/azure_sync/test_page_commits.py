"""A sync page's commit does not wait for the WAL to reach the disk on PostgreSQL
(`connector.db.commit_without_waiting_for_disk`): the page, with the cursor that moved
past it, is read from Graph again if a crash loses it. Everything else keeps waiting."""

from __future__ import annotations

from sqlalchemy import Engine, text

from azure_sync import rounds
from connector import db
from connector.db import make_sessionmaker
from tests.azure_sync.harness import Sync
from tests.support.statements import counting

RELAXED = "SET LOCAL synchronous_commit = off"


def test_only_the_transaction_that_asks_skips_the_wait(engine: Engine) -> None:
    maker = make_sessionmaker(engine)
    postgresql = engine.dialect.name == "postgresql"
    with maker() as s:
        db.commit_without_waiting_for_disk(s)
        if postgresql:
            assert s.scalar(text("SHOW synchronous_commit")) == "off"
        s.commit()
        if postgresql:  # the next transaction on the same connection waits again
            assert s.scalar(text("SHOW synchronous_commit")) == "on"


def test_every_page_of_a_round_commits_without_waiting_and_nothing_else_does(
        sync: Sync) -> None:
    sync.graph.knobs.page_size = 20
    sync.entra.seed_users(70)
    with counting(sync.engine) as seen:
        result = sync.service.run(sync.tenant_id, "manual",
                                  rounds.RoundOptions(pipeline=False),
                                  sleep=sync.sleeps.append)
    assert result.status == "succeeded", result.error
    relaxed = [s for s in seen if s == RELAXED]
    if sync.engine.dialect.name == "postgresql":
        # One per committed page (users and groups); the round's start and end wait.
        assert len(relaxed) == result.pages
        assert result.pages >= 4
    else:
        assert relaxed == []


def test_the_page_writer_commits_its_pages_without_waiting(engine: Engine) -> None:
    """The initial round's writer process (azure_sync.page_writer) commits as the round
    would: the same relaxed transaction, run here in-process."""
    from azure_sync import page_writer
    from connector.models import Base

    with counting(engine) as seen:
        page_writer.run_page(make_sessionmaker(engine, writes=True), Base.metadata.tables,
                             [("execute", "SELECT 1", None, False)])
    expected = [RELAXED, "SELECT 1"] if engine.dialect.name == "postgresql" else ["SELECT 1"]
    assert [s for s in seen if s in (RELAXED, "SELECT 1")] == expected
