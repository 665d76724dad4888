"""The round reads Graph's next page while it applies the current one (azure_sync.ahead):
the same result as reading page by page, what was prepared ahead used only while it
holds, and a failure reading ahead is the round's failure, raised where the round would
have read the page itself."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from azure_sync import ahead, mapping, rounds
from connector.models import Event, User
from tests.azure_sync.harness import Sync


def _graph_user(n: int, **extra: Any) -> dict[str, Any]:
    upn = f"user{n}@contoso.example"
    return {"id": str(uuid.UUID(int=n)), "userPrincipalName": upn, "mail": upn,
            "givenName": f"Given{n}", "surname": f"Surname{n}", "accountEnabled": True,
            "mobilePhone": f"+1 555 {n:07d}", "businessPhones": [f"+1 444 {n:07d}"],
            "officeLocation": "Building 1", **extra}


def test_prepared_fields_are_the_appliers_own() -> None:
    items: list[Any] = [_graph_user(1), {"no": "id"}, _graph_user(2),
                        _graph_user(3, **{"manager@delta": [{"id": str(uuid.UUID(int=1))}]}),
                        {"id": str(uuid.UUID(int=4)), "@removed": {"reason": "deleted"}}]
    prepared = ahead.prepare_users(items, mapping.DEFAULT_RULES)
    assert [d.object_id if d else None for d in prepared.deltas] == [
        str(uuid.UUID(int=1)), None, str(uuid.UUID(int=2)), str(uuid.UUID(int=3)),
        str(uuid.UUID(int=4))]
    first = prepared.deltas[0]
    assert first is not None
    assert prepared.fields_for(first, mapping.DEFAULT_RULES) == mapping.user_fields(
        first.object_id, None, first.changes, mapping.DEFAULT_RULES)
    # A manager is resolved by a lookup, a removal creates nothing: left to the applier.
    for delta in prepared.deltas[3:]:
        assert delta is not None and prepared.fields_for(delta, mapping.DEFAULT_RULES) is False
    # Another mapping table than the one prepared under: not used.
    other = mapping.Rules.of({**mapping.DEFAULT_TABLE, "jobTitle": "nickName"})
    assert prepared.fields_for(first, other) is False


def _run_all(sync: Sync, read_ahead: bool) -> rounds.RoundResult:
    # Every page written by the round's process (test_pipeline.py: by a writer process).
    return sync.service.run(sync.tenant_id, "manual", rounds.RoundOptions(
        read_ahead=read_ahead, pipeline=False), sleep=sync.sleeps.append)


def _profiles(sync: Sync) -> dict[str, tuple[Any, ...]]:
    with sync.session() as s:
        return {u.external_id: (u.user_name, u.display_name, u.active, u.data)
                for u in s.scalars(select(User).where(User.tenant_id == sync.tenant_id))}


def test_a_round_read_ahead_writes_what_a_round_page_by_page_writes(
        sync: Sync, monkeypatch: pytest.MonkeyPatch) -> None:
    sync.graph.knobs.page_size = 7
    sync.entra.seed_users(40)
    sync.entra.add_user("off@contoso.example", accountEnabled=False)
    commit = rounds._commit_page
    served_at_commit: list[int] = []

    def watch(*args: Any) -> None:
        # Before the page commits, the next one is asked for (waits up to 10 s for the
        # thread reading it: a round page by page never gets there).
        deadline = time.monotonic() + 10
        while (sync.graph.counters["pages:users"] <= len(served_at_commit) + 1
               and time.monotonic() < deadline and len(served_at_commit) < 1):
            time.sleep(0.01)
        served_at_commit.append(sync.graph.counters["pages:users"])
        commit(*args)

    monkeypatch.setattr(rounds, "_commit_page", watch)
    ahead_result = _run_all(sync, read_ahead=True)
    monkeypatch.undo()
    assert ahead_result.status == "succeeded", ahead_result.error
    # While page 1 applied, page 2 was already asked for (a user page's nextLink).
    assert served_at_commit[0] == 2
    plain = sync.clone_tenant("Page by page")
    plain_result = _run_all(plain, read_ahead=False)
    assert plain_result.status == "succeeded", plain_result.error
    assert ahead_result.counts == plain_result.counts
    assert _profiles(sync) == _profiles(plain) and len(_profiles(sync)) == 41


def test_a_page_laid_over_a_kept_item_is_mapped_again(sync: Sync) -> None:
    """An item kept from an earlier round is merged with the page's item: what was
    prepared from the page alone does not hold, and is not used."""
    sync.graph.knobs.page_size = 3
    holder = sync.entra.add_user("taken@contoso.example")
    assert _run_all(sync, read_ahead=True).status == "succeeded"
    # A new object wants the name a live user holds: kept, with its given name.
    newcomer = sync.entra.add_user("taken@contoso.example", givenName="Kim")
    assert _run_all(sync, read_ahead=True).status == "succeeded"
    assert newcomer not in sync.users()
    # Later, on the round's third page (read ahead): the holder moves away and the
    # newcomer changes its job title; its page item is laid over the kept one.
    sync.entra.seed_users(6)
    sync.entra.update_user(holder, userPrincipalName="moved@contoso.example")
    sync.entra.update_user(newcomer, jobTitle="Engineer")
    result = _run_all(sync, read_ahead=True)
    assert result.status == "succeeded", result.error
    users = sync.users()
    assert users[newcomer].user_name == "taken@contoso.example"
    assert users[newcomer].data.get("title") == "Engineer"
    assert users[newcomer].data["name"].get("givenName") == "Kim"
    assert users[holder].user_name == "moved@contoso.example"


def test_a_failure_reading_ahead_fails_the_round_where_the_page_is_due(
        sync: Sync, monkeypatch: pytest.MonkeyPatch) -> None:
    sync.graph.knobs.page_size = 5
    sync.entra.seed_users(20)
    sync.graph.fail(403, count=1, after=2, path="/v1.0/users/delta")  # the third page
    result = _run_all(sync, read_ahead=True)
    assert result.status == "failed"
    assert result.error and "refused access" in result.error
    # The two pages before it were applied and committed, the third was not.
    assert result.pages == 2
    with sync.session() as s:
        created = s.scalars(select(Event.subject_id).where(
            Event.tenant_id == sync.tenant_id, Event.kind == "user.created")).all()
    assert len(created) == 10


def test_the_round_resumes_at_a_page_read_ahead_and_never_applied(sync: Sync) -> None:
    """The round stops after page 1 (page 2 already read ahead, in memory only): the
    next round reads page 2 again from its cursor and misses no one."""
    sync.graph.knobs.page_size = 5
    sync.entra.seed_users(12)

    def stop_after_first(pages: int, phase: str) -> None:
        if pages == 1:
            raise RuntimeError("the process stops here")

    try:
        stopped = sync.service.run(sync.tenant_id, "manual", rounds.RoundOptions(
            after_page=stop_after_first, pipeline=False), sleep=sync.sleeps.append)
        assert stopped.status == "failed"
    except RuntimeError:
        pass
    assert len(sync.users()) == 5
    assert sync.graph.counters["pages:users"] == 2  # page 2 was read ahead, then dropped
    result = _run_all(sync, read_ahead=True)
    assert result.status == "succeeded", result.error
    assert len(sync.users()) == 12


def test_a_page_is_read_ahead_only_when_the_cursor_would_follow_its_link(
        sync: Sync) -> None:
    """A nextLink to another host is never read ahead: the cursor refuses it with its
    reason when it gets there."""
    sync.graph.knobs.page_size = 5
    sync.entra.seed_users(12)
    sync.graph.knobs.next_link_host = "graph.evil.example"
    result = _run_all(sync, read_ahead=True)
    assert result.status == "failed"
    assert result.error and "another host" in result.error
    assert sync.graph.counters["pages:users"] == 1
