"""What keeps the dispatcher's cost per event rather than per endpoint, without giving up
a guarantee: endpoints of one stream at different positions share the pages read (each
still gets exactly its events, in order, once); caught-up endpoints share one probe; an
endpoint is read once per delivery turn, yet an admin's change during a turn is seen
after at most one more message."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from connector import events, sealed
from connector.config import Settings
from connector.db import make_sessionmaker
from connector.events import WriteContext
from connector.models import Event, WebhookEndpoint
from connector.status import Source
from connector.webhooks import service
from connector.webhooks.dispatcher import Dispatcher
from tests.fakes.receiver import Answer, Received, Receiver
from tests.support.clients import make_tenant
from tests.support.statements import counting
from tests.support.webhooks import receiving_settings

KEY = sealed.new_key()


def endpoint(maker: sessionmaker[Session], settings: Settings, tenant_id: str,
             url: str) -> str:
    with maker() as s:
        made, _ = service.create_endpoint(s, settings, tenant_id, url,
                                          dt.datetime.now(dt.UTC))
        s.commit()
        return made.id


def write(maker: sessionmaker[Session], tenant_id: str, n: int) -> list[int]:
    """n events about three users, one transaction; their ids."""
    with maker() as s:
        before = s.scalar(select(func.max(Event.id))) or 0
        ctx = WriteContext(tenant_id, Source.ADMIN, "test", "c", dt.datetime.now(dt.UTC))
        for i in range(n):
            events.record(s, ctx, "user", f"u{i % 3}", events.USER_STATUS, None, i)
        s.commit()
        return list(s.scalars(select(Event.id).where(Event.id > before).order_by(Event.id)))


def numbers(received: list[Received]) -> list[int]:
    return [int(e["id"].removeprefix("evt_")) for r in received for e in r.events]


def feed_reads(issued: list[str]) -> int:
    return sum(1 for sql in issued if "FROM events" in sql)


def drain(dispatcher: Dispatcher) -> None:
    for _ in range(50):
        if not dispatcher.run_pass():
            return
    raise AssertionError("the dispatcher never caught up")


def test_endpoints_at_different_positions_share_reads_and_each_gets_its_events(
        engine: Engine, database_url: str, tmp_path: Path) -> None:
    settings = receiving_settings(database_url, tmp_path, KEY, max_batch=10)
    maker = make_sessionmaker(engine)
    tenant_id, _ = make_tenant(engine)
    receivers = [Receiver().__enter__() for _ in range(6)]
    try:
        owed: list[list[int]] = []
        for r in receivers:  # each endpoint starts 5 events after the previous one
            endpoint(maker, settings, tenant_id, r.url)
            owed.append([])
            ids = write(maker, tenant_id, 5)
            owed = [o + ids for o in owed]
        ids = write(maker, tenant_id, 30)
        owed = [o + ids for o in owed]
        dispatcher = Dispatcher(maker, settings)
        with counting(engine) as issued:
            drain(dispatcher)
        for r, expected in zip(receivers, owed, strict=True):
            assert numbers(r.accepted) == expected  # exactly its events, in order, once
        # Each endpoint reading its own pages of 10: 6 + 5 + 5 + 4 + 4 + 3 = 27 reads,
        # and probes. Shared: the first endpoint's 6, one look past the end for each
        # of the others (a shared page may have left newer events out), and probes.
        assert feed_reads(issued) <= 20, feed_reads(issued)
        with counting(engine) as issued:
            assert dispatcher.run_pass() == 0
        assert feed_reads(issued) == 1  # six caught-up endpoints, one probe
    finally:
        for r in receivers:
            r.__exit__(None, None, None)


def test_an_admin_change_during_a_turn_is_seen_after_one_more_message(
        engine: Engine, database_url: str, tmp_path: Path, receiver: Receiver) -> None:
    settings = receiving_settings(database_url, tmp_path, KEY, max_batch=2)
    maker = make_sessionmaker(engine)
    tenant_id, _ = make_tenant(engine)
    endpoint_id = endpoint(maker, settings, tenant_id, receiver.url)
    ids = write(maker, tenant_id, 8)
    with Receiver() as moved_to:
        def move(_got: Received) -> Answer:  # the admin changes the URL as message 1 arrives
            if len(receiver.received) == 0:
                with maker() as s:
                    found = s.get(WebhookEndpoint, endpoint_id)
                    assert found is not None
                    service.update_endpoint(s, settings, found, dt.datetime.now(dt.UTC),
                                            url=moved_to.url)
                    s.commit()
            return Answer()

        receiver.answer = move
        Dispatcher(maker, settings).deliver(endpoint_id)
        assert numbers(receiver.accepted) == ids[:2]  # the message under way
        assert numbers(moved_to.accepted) == ids[2:]  # every later one: the new URL
