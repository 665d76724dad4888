"""A close whose process died mid-way (its attempt left `building`, with lines), and a
close that stalled past [billing] close_lease_seconds, on both databases. The processes
themselves are killed in tests/connector/test_fleet_close.py; here the database states
they leave are made directly."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import Engine, delete, func, select, update

from billing.calendar import Month
from billing.catch_up import close_due
from billing.close import close_month, sweep_dead_attempts
from billing.lines import AttemptLost
from connector import events
from connector.config import BillingSettings
from connector.models import BillingClose, BillingLine, Event
from tests.billing.history import History, at

SETTINGS = BillingSettings(close_lease_seconds=60)
NOV = Month(2026, 11)
AFTER_NOV = at("2026-12-01T01:30:00")


def tenant(engine: Engine, users: int = 3) -> History:
    h = History(engine, "2026-11-01T00:00:00")
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"}])
    for n in range(users):
        h.create(f"2026-11-0{n + 2}T10:00:00", f"u{n}@x.io", modules=("Hybrid",))
    return h


def state(h: History) -> tuple[list[tuple[str, int]], int, int]:
    """(state, lines) per close row, closes announced, lines in all."""
    with h.maker() as s:
        rows = [(c.state, s.scalar(select(func.count()).where(BillingLine.close_id == c.id))
                 or 0) for c in s.scalars(select(BillingClose).order_by(BillingClose.id))]
        announced = s.scalar(select(func.count()).where(Event.kind == events.MONTH_CLOSED))
        lines = s.scalar(select(func.count()).select_from(BillingLine))
    return rows, announced or 0, lines or 0


def die_mid_close(h: History, silent_for: dt.timedelta) -> str:
    """Close November, then make it what a process killed before the flip leaves: the
    attempt `building`, its lines committed, no event; last alive `silent_for` ago.
    Return the hash the close had."""
    out = close_month(h.maker, h.tenant_id, NOV, SETTINGS, AFTER_NOV)
    assert out.created and out.close.content_hash
    with h.maker() as s:
        s.execute(update(BillingClose).where(BillingClose.id == out.close.id).values(
            state="building", content_hash=None, closed_at=None,
            alive_at=dt.datetime.now(dt.UTC) - silent_for))
        s.execute(delete(Event).where(Event.kind == events.MONTH_CLOSED))
        s.commit()
    return out.close.content_hash


def test_a_dead_close_is_swept_and_the_month_closed_again_once(engine: Engine) -> None:
    h = tenant(engine)
    closed_hash = die_mid_close(h, dt.timedelta(minutes=5))
    assert state(h) == ([("building", 3)], 0, 3)
    result = close_due(h.maker, SETTINGS, AFTER_NOV)
    assert [(m, o.created, o.close.content_hash) for _, m, o in result.closed] == [
        ("2026-11", True, closed_hash)]  # the hash of the close that was not killed
    assert state(h) == ([("closed", 3)], 1, 3)  # the dead attempt's lines are gone


def test_a_close_still_alive_is_not_swept(engine: Engine) -> None:
    """Within the lease the attempt may be a live process's (a rival building the same
    month): it is kept, and the month still closes once (the unique index)."""
    h = tenant(engine)
    die_mid_close(h, dt.timedelta(seconds=5))
    assert sweep_dead_attempts(h.maker, SETTINGS, AFTER_NOV) == 0
    result = close_due(h.maker, SETTINGS, AFTER_NOV)
    assert [o.created for _, _, o in result.closed] == [True]
    rows, announced, _ = state(h)
    assert sorted(rows) == [("building", 3), ("closed", 3)] and announced == 1
    # Silent for the lease since: the next pass sweeps it.
    later = dataclasses.replace(SETTINGS, close_lease_seconds=1)
    with h.maker() as s:
        s.execute(update(BillingClose).where(BillingClose.state == "building").values(
            alive_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)))
        s.commit()
    assert close_due(h.maker, later, AFTER_NOV).closed == []
    assert state(h) == ([("closed", 3)], 1, 3)


def test_a_close_swept_while_it_builds_announces_nothing(engine: Engine) -> None:
    """A close that stalled past the lease was swept by another pass: it finds out at
    its next chunk, fails, and writes no close and no event; the next pass closes the
    month once."""
    h = tenant(engine)

    def swept(done: int, total: int) -> None:  # another pass's sweep, mid-build
        with h.maker() as s:
            s.execute(delete(BillingClose).where(BillingClose.state == "building"))
            s.commit()

    with pytest.raises(AttemptLost):
        close_month(h.maker, h.tenant_id, NOV, SETTINGS, AFTER_NOV, progress=swept)
    assert state(h) == ([], 0, 0)
    result = close_due(h.maker, SETTINGS, AFTER_NOV)
    assert [o.created for _, _, o in result.closed] == [True]
    assert state(h) == ([("closed", 3)], 1, 3)
