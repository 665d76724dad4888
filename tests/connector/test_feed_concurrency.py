"""The event feed's promise: a consumer that stores the cursor and polls never misses
nor repeats an event, even while transactions commit out of id order (connector.feed
explains how). Shown with two transactions held open by hand on PostgreSQL, and with
twenty concurrent SCIM writers and a poller on both databases."""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from connector import events, feed
from connector.db import make_sessionmaker
from connector.events import WriteContext
from connector.models import Event
from connector.status import Source
from tests.scim.factories import created, patch, user
from tests.support.clients import SCIM, make_tenant

ONLY_POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def write(s: Session, tenant_id: str, label: str) -> int:
    """One event in the session's transaction (left open); its id."""
    ctx = WriteContext(tenant_id, Source.ADMIN, "test", label, dt.datetime.now(dt.UTC))
    events.record(s, ctx, "tenant", tenant_id, events.MODULE_ADDED, None, label)
    return int(s.scalar(select(Event.id).where(Event.correlation_id == label)) or 0)


class Poller:
    """A consumer: stores the cursor, polls, remembers what it got."""

    def __init__(self, engine: Engine, tenant_id: str | None) -> None:
        self.maker = make_sessionmaker(engine)
        self.tenant_id = tenant_id
        self.cursor = feed.START
        self.got: list[dict[str, Any]] = []

    def poll(self) -> list[str]:
        """Read until the feed has nothing more now; the labels of what came."""
        came: list[dict[str, Any]] = []
        with self.maker() as s:
            while True:
                page = feed.read(s, self.tenant_id, feed.FeedQuery(after=self.cursor,
                                                                   limit=7))
                came += page.data
                self.cursor = page.next_cursor
                if not page.has_more:
                    break
        self.got += came
        return [e["data"]["new"] for e in came if e["type"] == "tenant.module_added"]


@ONLY_POSTGRESQL
@pytest.mark.postgresql
def test_an_open_transaction_holds_back_later_commits(engine: Engine) -> None:
    """A takes the smaller id and stays open while B commits: the feed does not serve B
    before A ends; then serves both, once."""
    tenant_id, _ = make_tenant(engine)
    maker = make_sessionmaker(engine)
    poller = Poller(engine, tenant_id)
    poller.poll()
    with maker() as a, maker() as b:
        a_id = write(a, tenant_id, "A")
        b_id = write(b, tenant_id, "B")
        b.commit()
        assert a_id < b_id
        with maker() as naive:  # what "after the last id seen" would have done
            seen = list(naive.scalars(select(Event.correlation_id).where(
                Event.tenant_id == tenant_id, Event.kind == events.MODULE_ADDED)
                .order_by(Event.id)))
        assert seen == ["B"]  # an id cursor would now stand past A, and never see it
        assert poller.poll() == []
        a.commit()
    assert poller.poll() == ["A", "B"]
    assert poller.poll() == []


@ONLY_POSTGRESQL
@pytest.mark.postgresql
def test_an_older_transaction_with_a_larger_id_is_served_first(engine: Engine) -> None:
    """B's transaction began writing first (smaller txid) but inserts its event after A
    (larger id) and commits while A is open: B is served at once, A once it commits,
    each once (the feed orders by transaction, then id)."""
    tenant_id, _ = make_tenant(engine)
    maker = make_sessionmaker(engine)
    poller = Poller(engine, tenant_id)
    poller.poll()
    with maker() as a, maker() as b:
        b.execute(text("SELECT pg_current_xact_id()"))  # B's transaction id comes first
        a_id = write(a, tenant_id, "A")
        b_id = write(b, tenant_id, "B")
        b.commit()
        assert a_id < b_id
        assert poller.poll() == ["B"]
        assert poller.poll() == []
        a.commit()
    assert poller.poll() == ["A"]
    assert [e["data"]["new"] for e in poller.got
            if e["type"] == "tenant.module_added"] == ["B", "A"]


@ONLY_POSTGRESQL
@pytest.mark.postgresql
def test_the_cursor_for_now_waits_for_open_transactions(engine: Engine) -> None:
    """A new consumer's start (feed.latest) lies before what open transactions write."""
    tenant_id, _ = make_tenant(engine)
    maker = make_sessionmaker(engine)
    with maker() as a:
        write(a, tenant_id, "A")
        with maker() as s:
            start = feed.latest(s, tenant_id)
        with maker() as b:
            write(b, tenant_id, "B")
            b.commit()
        a.commit()
    poller = Poller(engine, tenant_id)
    poller.cursor = start
    assert poller.poll() == ["A", "B"]


@ONLY_POSTGRESQL
@pytest.mark.postgresql
def test_every_tenants_feed_holds_back_and_orders_across_tenants(engine: Engine) -> None:
    """The partner-wide feed keeps the promise across tenants: tenant 1's open
    transaction holds back tenant 2's later commit; then both come, in transaction
    order, each once."""
    first, _ = make_tenant(engine)
    second, _ = make_tenant(engine)
    maker = make_sessionmaker(engine)
    poller = Poller(engine, None)
    poller.poll()
    with maker() as a, maker() as b:
        write(a, first, "A")
        write(b, second, "B")
        b.commit()
        assert poller.poll() == []
        a.commit()
    assert poller.poll() == ["A", "B"]
    assert poller.poll() == []


@ONLY_POSTGRESQL
@pytest.mark.postgresql
def test_every_tenants_page_is_one_range_of_one_index(engine: Engine) -> None:
    """A partner-wide page reads one range of (txid, id), not a range per tenant: with
    10,000 tenants the per-tenant merge took 1-3 s a page (docs/benchmarks.md). With
    sorts and table scans priced out, the plan must still find the page's order in
    ix_events_feed, and never read the tenants."""
    for _ in range(3):
        make_tenant(engine)
    statement = feed._statement(True, False, tuple(feed.PUBLIC_TYPES), False, False)
    compiled = statement.compile(dialect=engine.dialect)
    params = compiled.construct_params({"after_txid": 0, "after_id": 0, "limit": 101})
    with engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_sort = off")
        plan = "\n".join(row[0] for row in conn.exec_driver_sql(
            f"EXPLAIN {compiled.string}", params))
        conn.rollback()
    assert "using ix_events_feed on events" in plan, plan
    assert "tenants" not in plan, plan
    assert "Sort" not in plan, plan


WRITERS = 20
USERS_EACH = 3
DEACTIVATE = patch({"op": "replace", "path": "active", "value": False})
ACTIVATE = patch({"op": "replace", "path": "active", "value": True})


def test_twenty_writers_and_a_poller_miss_and_repeat_nothing(app: Flask, engine: Engine
                                                             ) -> None:
    tenant_id, token = make_tenant(engine)
    headers = {"Authorization": f"Bearer {token}"}
    poller = Poller(engine, None)  # every tenant's feed, as a partner reads it
    done = threading.Event()
    failures: list[BaseException] = []
    start = threading.Barrier(WRITERS + 1)

    def writer() -> None:
        client = app.test_client()
        try:
            start.wait()
            for _ in range(USERS_EACH):
                answer = client.post(SCIM + "/Users", json=user(), headers=headers)
                uid = created(answer)["id"]
                for change in (DEACTIVATE, ACTIVATE):
                    answer = client.patch(f"{SCIM}/Users/{uid}", json=change, headers=headers)
                    assert answer.status_code == 200, answer.json
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    def poll() -> None:
        try:
            start.wait()
            while not done.is_set():
                poller.poll()
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    polling = threading.Thread(target=poll)
    for thread in [*threads, polling]:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    done.set()
    polling.join(timeout=60)
    assert not failures, failures
    poller.poll()  # what the last writers committed after the poller's last read

    with make_sessionmaker(engine)() as s:
        stored = list(s.execute(select(Event.id, Event.subject_id).order_by(Event.id)))
    got = [int(e["id"].removeprefix(feed.ID_PREFIX)) for e in poller.got]
    assert len(got) == len(set(got)), "an event was served twice"
    assert sorted(got) == [row.id for row in stored], "an event was missed"
    assert len(stored) == 1 + WRITERS * USERS_EACH * 5  # tenant; created, 2×(status, list)
    by_user: dict[str, list[int]] = defaultdict(list)
    for event_id in got:
        by_user[next(row.subject_id for row in stored if row.id == event_id)].append(event_id)
    for subject, ids in by_user.items():
        assert ids == sorted(ids), f"{subject}'s events came out of order"
