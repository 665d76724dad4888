"""Sync rounds in the event feed: a round that completes, and one held for approval,
each leave one event, in the transaction that ends the round."""

from __future__ import annotations

import datetime as dt
from typing import Any

from connector import feed
from tests.azure_sync.harness import Sync

T1 = dt.datetime(2030, 5, 6, 8, 0, tzinfo=dt.UTC)


def round_events(sync: Sync) -> list[dict[str, Any]]:
    with sync.session() as s:
        query = feed.FeedQuery(kinds=(feed.KINDS_OF_TYPE["sync.round_completed"],
                                      feed.KINDS_OF_TYPE["sync.round_held"]), limit=1000)
        return feed.read(s, sync.tenant_id, query).data


def test_rounds_completed_and_held_are_events(sync: Sync) -> None:
    ann = sync.entra.add_user("ann@contoso.example")
    first = sync.run(clock=lambda: T1)
    assert first.status == "succeeded"
    [done] = round_events(sync)
    assert done["type"] == "sync.round_completed" and done["source"] == "entra_sync"
    assert done["subject"] == {"type": "tenant", "id": sync.tenant_id}
    assert done["occurredAt"] == "2030-05-06T08:00:00Z"
    assert done["data"]["runId"] == first.run_id
    assert done["data"]["counts"]["created"] == 1
    assert set(done["data"]) == {"runId", "roundKind", "trigger", "outcome", "counts"}
    assert done["data"]["outcome"] == "applied"
    sync.register(threshold_count=0)  # any disable is held
    sync.entra.disable_user(ann)
    held = sync.run(clock=lambda: T1 + dt.timedelta(hours=1))
    assert held.status == "awaiting_approval"
    assert [e["type"] for e in round_events(sync)] == ["sync.round_completed",
                                                       "sync.round_held"]
    held_event = round_events(sync)[1]["data"]
    assert held_event["runId"] == held.run_id and "threshold" in held_event["reason"]
    assert held_event["outcome"] == "held"
