"""A full round's pages of new users committed by a writer process while the round builds
the next one (azure_sync.pipeline): the same database as a round writing every page
itself, a page the writer cannot commit applied again by the round, a lease lost
meanwhile writing nothing, and a round stopped between pages resumable."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, update

from azure_sync import pipeline, rounds
from connector import db
from connector.config import DatabaseSettings
from connector.db import make_sessionmaker
from connector.models import Event, ProvisioningEntry, SyncRun, SyncState, User
from tests.azure_sync.harness import Sync


def _run(sync: Sync, piped: bool, **options: Any) -> rounds.RoundResult:
    return sync.service.run(sync.tenant_id, "manual", rounds.RoundOptions(
        pipeline=piped, **options), sleep=sync.sleeps.append)


def _sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pages handed to the writer process."""
    sent: list[int] = []
    send = pipeline.PageWriter.send

    def counting(self: pipeline.PageWriter, captured: pipeline.Captured) -> None:
        sent.append(len(captured.page.items))
        send(self, captured)

    monkeypatch.setattr(pipeline.PageWriter, "send", counting)
    return sent


def _database(sync: Sync) -> dict[str, Any]:
    """What a round left, as comparable between two tenants."""
    with sync.session() as s:
        users = {u.external_id: (u.user_name, u.display_name, u.active, u.idp_active,
                                 u.data, u.seen_in_run is not None, u.origin)
                 for u in s.scalars(select(User).where(User.tenant_id == sync.tenant_id))}
        kinds = sorted(s.scalars(select(Event.kind).where(Event.tenant_id == sync.tenant_id)))
        log = sorted((e.operation, e.result) for e in s.scalars(select(ProvisioningEntry).where(
            ProvisioningEntry.tenant_id == sync.tenant_id)))
        words = s.scalar(select(func.count()).select_from(pipeline_words()).where(
            pipeline_words().c.tenant_id == sync.tenant_id))
        run = s.scalar(select(SyncRun).where(SyncRun.tenant_id == sync.tenant_id)
                       .order_by(SyncRun.id.desc()).limit(1))
        state = s.get(SyncState, sync.tenant_id)
        assert run is not None and state is not None
        return {"users": users, "events": kinds, "log": log, "words": words,
                "run": (run.status, run.pages, run.counts),
                "state": (state.phase, state.next_link, state.lease_owner)}


def pipeline_words() -> Any:
    from connector.models import Base

    return Base.metadata.tables["user_search_words"]


def _seed(sync: Sync, users: int) -> Any:
    sync.graph.knobs.page_size = 60  # pages of 60: COPY on PostgreSQL (50 rows and more)
    seeded = sync.entra.seed_users(users)
    sync.entra.add_user("off@contoso.example", accountEnabled=False)
    return seeded


def test_a_pipelined_round_writes_what_a_round_page_by_page_writes(
        sync: Sync, monkeypatch: pytest.MonkeyPatch) -> None:
    seeded = _seed(sync, 300)
    sent = _sent(monkeypatch)
    piped = _run(sync, piped=True)
    assert piped.status == "succeeded", piped.error
    # Every users page went through the writer but the last (one user: too small).
    assert sent == [60] * 5
    plain = sync.clone_tenant("Page by page")
    monkeypatch.undo()
    by_page = _run(plain, piped=False)
    assert by_page.status == "succeeded", by_page.error
    assert piped.counts == by_page.counts and piped.pages == by_page.pages
    assert _database(sync) == _database(plain)
    assert len(_database(sync)["users"]) == 301
    # An incremental round after it: nothing to pipeline, the same changes.
    sync.entra.update_user(seeded[7], jobTitle="CTO")
    assert _run(sync, piped=True).counts == _run(plain, piped=False).counts


def test_a_page_naming_a_user_of_the_page_in_flight_waits_for_its_commit(
        sync: Sync, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new object on page 2 wants the name a user of page 1 took: page 2 is built
    once page 1 committed, so it sees the name taken and keeps the item, as page by
    page (built before, the writer's commit would fail on the unique index)."""
    sync.graph.knobs.page_size = 60
    first = sync.entra.seed_users(60)
    again = sync.entra.add_user(first.upn(5).upper())
    sync.entra.seed_users(70, prefix="more")
    answers: list[str] = []
    wait = pipeline.PageWriter.wait

    def watched(self: pipeline.PageWriter) -> Any:
        done = wait(self)
        if done is not None:
            answers.append(done[1])
        return done

    monkeypatch.setattr(pipeline.PageWriter, "wait", watched)
    piped = _run(sync, piped=True)
    assert answers and set(answers) == {"ok"}
    plain = sync.clone_tenant("Page by page")
    monkeypatch.undo()
    by_page = _run(plain, piped=False)
    assert piped.counts == by_page.counts and piped.counts.get("kept") == 1
    assert again not in sync.users()
    assert _database(sync)["users"] == _database(plain)["users"]


def test_a_page_the_writer_cannot_commit_is_applied_by_the_round(
        sync: Sync, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed(sync, 200)
    capture = rounds._capture_page
    calls: list[int] = []

    def broken_second(*args: Any) -> pipeline.Captured:
        captured = capture(*args)
        calls.append(1)
        if len(calls) == 2:  # the writer's transaction fails half way through page 2
            captured.ops.insert(2, ("execute", "INSERT INTO no_such_table VALUES (1)",
                                    {} if sync.engine.dialect.name == "postgresql" else (),
                                    False))
        return captured

    monkeypatch.setattr(rounds, "_capture_page", broken_second)
    piped = _run(sync, piped=True)
    assert piped.status == "succeeded", piped.error
    monkeypatch.undo()
    plain = sync.clone_tenant("Page by page")
    by_page = _run(plain, piped=False)
    assert piped.counts == by_page.counts
    assert _database(sync) == _database(plain)


def test_a_writer_killed_with_a_page_in_flight_leaves_the_page_to_the_round(
        sync: Sync, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer dies (SIGKILL) with page 2 sent: page 2 is committed whole or not at
    all; the round finds no answer and applies it itself, and finishes as page by page."""
    _seed(sync, 200)
    send = pipeline.PageWriter.send
    sent: list[int] = []

    def killing_second(self: pipeline.PageWriter, captured: pipeline.Captured) -> None:
        send(self, captured)
        sent.append(1)
        if len(sent) == 2:
            assert self.process is not None
            self.process.kill()

    monkeypatch.setattr(pipeline.PageWriter, "send", killing_second)
    piped = _run(sync, piped=True)
    assert piped.status == "succeeded", piped.error
    assert len(sent) == 2  # then the round wrote the rest itself
    monkeypatch.undo()
    plain = sync.clone_tenant("Page by page")
    by_page = _run(plain, piped=False)
    assert piped.counts == by_page.counts
    assert _database(sync) == _database(plain)


def test_a_lease_lost_while_a_page_is_in_flight_writes_nothing_of_it(sync: Sync) -> None:
    _seed(sync, 200)

    def taken_over(pages: int, phase: str) -> None:
        if pages == 1:  # page 2 is built; another process takes the round now
            with sync.session() as s:
                s.execute(update(SyncState).where(SyncState.tenant_id == sync.tenant_id)
                          .values(lease_owner="other-host:1:token"))
                s.commit()

    result = _run(sync, piped=True, after_page=taken_over)
    assert result.status == "busy"
    assert len(sync.users()) == 60  # page 1 only: page 2 was not written
    with sync.session() as s:
        state = s.get(SyncState, sync.tenant_id)
        run = s.get(SyncRun, result.run_id)
        assert state is not None and run is not None
        assert state.lease_owner == "other-host:1:token" and run.pages == 1


def test_a_round_stopped_between_pages_resumes_from_the_last_committed_one(
        sync: Sync) -> None:
    _seed(sync, 300)

    def stop_after_second(pages: int, phase: str) -> None:
        if pages == 2:  # page 3 is built (and not sent yet): the process stops
            raise RuntimeError("the process stops here")

    stopped = _run(sync, piped=True, after_page=stop_after_second)
    assert stopped.status == "failed" and stopped.pages == 2
    assert len(sync.users()) == 120
    with sync.session() as s:
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None
        state.lease_owner = state.lease_until = None  # as after the lease expired
        s.commit()
    result = _run(sync, piped=True)
    assert result.status == "succeeded", result.error
    assert len(sync.users()) == 301


def test_page_keys_name_object_ids_and_user_names() -> None:
    oid = str(uuid.UUID(int=7))
    assert pipeline.page_keys([{"id": oid, "userPrincipalName": "Kim@Contoso.example"},
                               {"no": "id"}, "junk"]) == {oid, "kim@contoso.example"}
    assert pipeline.has_managers([{"id": oid, "manager@delta": [{"id": oid}]}])
    assert not pipeline.has_managers([{"id": oid}])


def test_capturing_leaves_the_engines_listeners_as_they_are(database_url: str) -> None:
    """The capture's listeners exist from the engine's making: a capture registering them
    on first use changed SQLAlchemy's event list while another thread (the round's
    read-ahead, a request) iterated it, and that statement failed with "deque mutated
    during iteration"."""
    engine = db.make_engine(DatabaseSettings(url=database_url, pool_size=2))
    try:
        listeners = engine.dialect.dispatch
        before = (list(listeners.do_execute), list(listeners.do_executemany))
        assert before[0] and before[1]
        with pipeline.capturing(make_sessionmaker(engine)) as (s, ops):
            s.execute(update(SyncState).where(SyncState.tenant_id == "nobody")
                      .values(next_link=None))
        assert [op[0] for op in ops] == ["execute"]
        assert (list(listeners.do_execute), list(listeners.do_executemany)) == before
    finally:
        engine.dispose()


def test_an_engine_made_elsewhere_is_not_captured(database_url: str) -> None:
    """Its writes would run instead of being captured: the page goes the ordinary way."""
    engine = create_engine(database_url)
    try:
        with pytest.raises(pipeline.NotCapturable), \
                pipeline.capturing(make_sessionmaker(engine)):
            pass
    finally:
        engine.dispose()
