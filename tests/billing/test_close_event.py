"""A month close in the event feed: one billing.month_closed event per close and
reissue, none for a close that was already there."""

from __future__ import annotations

from sqlalchemy import Engine

from billing.calendar import Month
from connector import feed
from tests.billing.history import History, at
from tests.billing.test_close import close

NOV = Month(2026, 11)


def test_a_close_and_a_reissue_are_events(engine: Engine) -> None:
    h = History(engine)
    h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
    first = close(h, NOV)
    assert not close(h, NOV, now=at("2026-12-02T00:00:00")).created  # no second event
    second = close(h, NOV, now=at("2026-12-03T00:00:00"), actor="partner@x.io",
                   reissue_reason="price list was missing")
    with h.maker() as s:
        page = feed.read(s, h.tenant_id, feed.FeedQuery(
            kinds=(feed.KINDS_OF_TYPE["billing.month_closed"],)))
    assert [(e["data"]["closeId"], e["data"]["version"], e["data"]["reissued"], e["source"])
            for e in page.data] == [(first.close.id, 1, False, "system"),
                                    (second.close.id, 2, True, "admin")]
    assert page.data[0]["data"]["month"] == "2026-11"
    assert page.data[0]["data"]["usersCounted"] == 1
    assert page.data[0]["subject"] == {"type": "tenant", "id": h.tenant_id}
