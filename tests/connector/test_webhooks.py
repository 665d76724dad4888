"""Webhooks delivered by the dispatcher to a real receiver on loopback: signed so that
standardwebhooks' own verifier accepts them, in feed order, batched when behind, retried
through outages (500s, timeouts, slow answers, Retry-After) without loss, disabled after
days of failure with the admins told, never to a private address unless allowed, and
never twice by two dispatchers side by side."""

from __future__ import annotations

import datetime as dt
import random
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from connector import events, feed, sealed
from connector.config import Settings, load_settings
from connector.db import make_sessionmaker
from connector.errors import InvalidSetting
from connector.events import WriteContext
from connector.models import NotifyCondition, WebhookAttempt, WebhookEndpoint
from connector.status import Source
from connector.webhooks import runner, service
from connector.webhooks.dispatcher import Dispatcher
from connector.webhooks.sender import Sender
from tests.fakes.receiver import Answer, Receiver, verify
from tests.support.clients import make_tenant

KEY = sealed.new_key()


def hook_settings(database_url: str, tmp_path: Path, **webhooks: Any) -> Settings:
    return load_settings(environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml")},
                         overrides={"database": {"url": database_url},
                                    "azure_sync": {"encryption_key": KEY},
                                    "webhooks": {"allow_private_targets": True,
                                                 "poll_interval_ms": 20,
                                                 "connect_timeout_seconds": 1.0,
                                                 # Roomy: a loopback receiver on a loaded
                                                 # 2-core CI machine once took over 1 s.
                                                 # The slow-answer test sets its own.
                                                 "read_timeout_seconds": 5.0,
                                                 "lease_seconds": 5, **webhooks}})


class Clock:
    """A clock the test moves (the dispatcher's `clock`), starting at the wall clock."""

    def __init__(self) -> None:
        self.at = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += dt.timedelta(**delta)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return hook_settings(database_url, tmp_path)


@pytest.fixture
def maker(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def endpoint(maker: sessionmaker[Session], settings: Settings, tenant_id: str | None,
             url: str, types: list[str] | None = None) -> tuple[str, str]:
    with maker() as s:
        made, secret = service.create_endpoint(s, settings, tenant_id, url,
                                               dt.datetime.now(dt.UTC), event_types=types)
        s.commit()
        return made.id, secret


def write(maker: sessionmaker[Session], tenant_id: str, user: str, n: int = 1,
          kind: str = events.USER_STATUS) -> None:
    """n events about `user`, one transaction."""
    with maker() as s:
        ctx = WriteContext(tenant_id, Source.ADMIN, "test", "c", dt.datetime.now(dt.UTC))
        for i in range(n):
            events.record(s, ctx, "user", user, kind, {"n": i}, {"n": i + 1})
        s.commit()


def drain(dispatcher: Dispatcher) -> None:
    """Passes until nothing is due (a pass gives each endpoint one turn, which a busy
    machine may end before the endpoint has caught up)."""
    for _ in range(50):
        if not dispatcher.run_pass():
            return
    raise AssertionError("the dispatcher never caught up")


def passes_until_attempted(dispatcher: Dispatcher, maker: sessionmaker[Session],
                           endpoint_id: str) -> None:
    """Passes until the endpoint has an attempt. On PostgreSQL the feed holds an event
    back while a transaction it cannot place in another database is open (connector/
    feed.py, `_XMIN`): the other test workers' transactions, now and then."""
    for _ in range(50):
        dispatcher.run_pass()
        if attempts(maker, endpoint_id):
            return
        time.sleep(0.05)
    raise AssertionError("the dispatcher never attempted the endpoint")


def ids(received: list[dict[str, Any]]) -> list[int]:
    return [int(e["id"].removeprefix("evt_")) for e in received]


def stored_ids(maker: sessionmaker[Session], tenant_id: str | None = None) -> list[int]:
    with maker() as s:
        page = feed.read(s, tenant_id, feed.FeedQuery(limit=feed.MAX_LIMIT))
        return ids(page.data)


def attempts(maker: sessionmaker[Session], endpoint_id: str) -> list[WebhookAttempt]:
    with maker() as s:
        return list(s.scalars(select(WebhookAttempt).where(
            WebhookAttempt.endpoint_id == endpoint_id).order_by(WebhookAttempt.id)))


def get(maker: sessionmaker[Session], endpoint_id: str) -> WebhookEndpoint:
    with maker() as s:
        found = s.get(WebhookEndpoint, endpoint_id)
        assert found is not None
        return found


def test_a_message_verifies_with_standardwebhooks_and_carries_the_feed_event(
        engine: Engine, maker: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    tenant_id, _ = make_tenant(engine)
    endpoint_id, secret = endpoint(maker, settings, tenant_id, receiver.url)
    write(maker, tenant_id, "u1")
    dispatcher = Dispatcher(maker, settings)
    assert dispatcher.run_pass() == 1
    [message] = receiver.accepted
    payload = verify(message, secret)  # standardwebhooks.Webhook.verify
    with maker() as s:
        [event] = feed.read(s, tenant_id, feed.FeedQuery(kinds=(events.USER_STATUS,))).data
    assert payload == {"type": "user.status_changed", "timestamp": payload["timestamp"],
                       "data": event}
    assert message.headers["webhook-id"] == event["id"]
    with pytest.raises(Exception, match="signature"):
        verify(message, "whsec_" + "A" * 43 + "=")
    [attempt] = attempts(maker, endpoint_id)
    assert (attempt.succeeded, attempt.status_code, attempt.event_count,
            attempt.manual, attempt.attempt) == (True, 200, 1, False, 1)
    assert get(maker, endpoint_id).lease_owner is None
    assert dispatcher.run_pass() == 0  # caught up: nothing sent twice
    assert len(receiver.received) == 1


def test_a_receiver_behind_gets_batches_in_order(
        engine: Engine, maker: sessionmaker[Session], database_url: str, tmp_path: Path,
        receiver: Receiver) -> None:
    settings = hook_settings(database_url, tmp_path, max_batch=10)
    tenant_id, _ = make_tenant(engine)
    _, secret = endpoint(maker, settings, tenant_id, receiver.url)
    write(maker, tenant_id, "u1", 25)
    drain(Dispatcher(maker, settings))
    assert [len(r.events) for r in receiver.accepted] == [10, 10, 5]
    first = verify(receiver.accepted[0], secret)
    assert first["type"] == "batch" and len(first["data"]["events"]) == 10
    assert ids(receiver.events()) == stored_ids(maker, tenant_id)[-25:]


def test_filters_and_scopes(engine: Engine, maker: sessionmaker[Session], settings: Settings,
                            receiver: Receiver) -> None:
    """A tenant endpoint gets its tenant's events of its types; a partner-wide one every
    tenant's."""
    a, _ = make_tenant(engine, "A")
    b, _ = make_tenant(engine, "B")
    only_status, _ = endpoint(maker, settings, a, receiver.url + "?a",
                              ["user.status_changed"])
    everything, _ = endpoint(maker, settings, None, receiver.url + "?all")
    write(maker, a, "u1", 2)
    write(maker, a, "u1", 1, events.USER_GUEST)
    write(maker, b, "u2", 3)
    drain(Dispatcher(maker, settings))
    guest = [e for e in receiver.events() if e["type"] == "user.guest_changed"]
    assert len(guest) == 1  # only the partner-wide endpoint takes the guest change
    assert {e["tenantId"] for e in receiver.events() if e["type"] == "user.status_changed"
            } == {a, b}
    assert sum(a_row.event_count for a_row in attempts(maker, only_status)) == 2
    assert sum(a_row.event_count for a_row in attempts(maker, everything)) == 6


def test_an_outage_then_recovery_loses_nothing(
        engine: Engine, maker: sessionmaker[Session], database_url: str, tmp_path: Path,
        receiver: Receiver) -> None:
    """500s, a Retry-After in seconds and as a date, an answer slower than the read
    timeout, a redirect, then recovery: every event once accepted, in order; each
    failure logged in plain words; the backoff honoured."""
    settings = hook_settings(database_url, tmp_path, read_timeout_seconds=1.0)
    tenant_id, _ = make_tenant(engine)
    endpoint_id, _ = endpoint(maker, settings, tenant_id, receiver.url)
    clock = Clock()
    dispatcher = Dispatcher(maker, settings, clock=clock, rng=random.Random(1))
    retry_at = (clock.at + dt.timedelta(seconds=90)).replace(microsecond=0)
    retry_date = retry_at.strftime("%a, %d %b %Y %H:%M:%S GMT")
    script = [Answer(500, body=b"boom"), Answer(503, {"Retry-After": "7"}),
              Answer(429, {"Retry-After": retry_date}), Answer(200, delay=1.6),
              Answer(302, {"Location": "https://elsewhere.example/"}), Answer(200)]
    receiver.answer = lambda _r: script.pop(0) if script else Answer(200)
    write(maker, tenant_id, "u1", 3)
    waits, due = [], []
    for _ in range(5):
        dispatcher.run_pass()
        state = get(maker, endpoint_id)
        waits.append((state.next_attempt_at - clock.at).total_seconds())
        due.append(state.next_attempt_at)
        assert dispatcher.run_pass() == 0  # not due yet: nothing sent
        clock.at = state.next_attempt_at
        write(maker, tenant_id, "u1")  # the outage does not stop the writers
    drain(dispatcher)
    assert 4 <= waits[0] <= 6  # 5 s ±20 %
    assert waits[1] == 7  # Retry-After: 7
    assert due[2] == retry_at  # Retry-After as an HTTP date
    log = attempts(maker, endpoint_id)
    errors = [a.error for a in log if not a.succeeded]
    assert errors[:3] == ["the receiver answered 500 Internal Server Error",
                          "the receiver answered 503 Service Unavailable",
                          "the receiver answered 429 Too Many Requests"]
    assert "did not answer in time" in (errors[3] or "")
    assert "redirects are not followed" in (errors[4] or "")
    assert [a.attempt for a in log][:6] == [1, 2, 3, 4, 5, 6]
    assert all(a.succeeded for a in log[5:]) and not any(a.succeeded for a in log[:5])
    assert log[0].response_excerpt == "boom"
    accepted = ids(receiver.events())
    assert sorted(set(accepted)) == stored_ids(maker, tenant_id)[-8:]
    assert accepted == sorted(accepted)  # the slow answer's message came again, in order
    state = get(maker, endpoint_id)
    assert (state.consecutive_failures, state.failing_since) == (0, None)


def test_retry_after_is_capped(engine: Engine, maker: sessionmaker[Session],
                               database_url: str, tmp_path: Path, receiver: Receiver) -> None:
    settings = hook_settings(database_url, tmp_path, max_retry_after_seconds=60)
    tenant_id, _ = make_tenant(engine)
    endpoint_id, _ = endpoint(maker, settings, tenant_id, receiver.url)
    receiver.answer = lambda _r: Answer(503, {"Retry-After": "86400"})
    clock = Clock()
    write(maker, tenant_id, "u1")
    Dispatcher(maker, settings, clock=clock).run_pass()
    assert (get(maker, endpoint_id).next_attempt_at - clock.at).total_seconds() == 60


def test_failing_for_days_disables_the_endpoint_and_tells_its_admins(
        engine: Engine, maker: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    tenant_id, _ = make_tenant(engine)
    endpoint_id, _ = endpoint(maker, settings, tenant_id, receiver.url)
    receiver.answer = lambda _r: Answer(500)
    write(maker, tenant_id, "u1")
    clock = Clock()
    started = clock.at
    dispatcher = Dispatcher(maker, settings, clock=clock, rng=random.Random(2))
    tries = 0
    while get(maker, endpoint_id).enabled:
        assert dispatcher.run_pass() == 1
        tries += 1
        clock.at = max(get(maker, endpoint_id).next_attempt_at, clock.at)
        assert tries < 40
    state = get(maker, endpoint_id)
    assert state.disabled_at is not None
    assert state.disabled_at - started == dt.timedelta(hours=72)  # the last try, on time
    assert "No delivery succeeded for 72 hours" in (state.disabled_reason or "")
    assert 10 <= tries <= 20  # the schedule: about three days of backoff
    with maker() as s:
        [condition] = s.scalars(select(NotifyCondition))
    assert (condition.tenant_id, condition.kind, condition.key) == (
        tenant_id, "webhook_disabled", endpoint_id)
    assert dispatcher.run_pass() == 0  # disabled: nothing sent
    # Enabled again: the waiting event goes out, the notice clears.
    receiver.answer = lambda _r: Answer(200)
    with maker() as s:
        found = s.get(WebhookEndpoint, endpoint_id)
        assert found is not None
        service.set_enabled(s, found, True, clock())
        s.commit()
    assert dispatcher.run_pass() == 1
    assert len(receiver.accepted) == 1
    with maker() as s:
        assert s.scalar(select(NotifyCondition.cleared_at)) is not None


def test_a_partner_wide_endpoint_disabled_tells_the_partner_admins(
        engine: Engine, maker: sessionmaker[Session], database_url: str, tmp_path: Path,
        receiver: Receiver) -> None:
    settings = hook_settings(database_url, tmp_path, disable_after_hours=1)
    tenant_id, _ = make_tenant(engine)
    endpoint_id, _ = endpoint(maker, settings, None, receiver.url)
    receiver.answer = lambda _r: Answer(500)
    write(maker, tenant_id, "u1")
    clock = Clock()
    dispatcher = Dispatcher(maker, settings, clock=clock)
    while get(maker, endpoint_id).enabled:
        dispatcher.run_pass()
        clock.at = max(get(maker, endpoint_id).next_attempt_at, clock.at)
    with maker() as s:
        [condition] = s.scalars(select(NotifyCondition))
    assert (condition.tenant_id, condition.key) == ("", endpoint_id)


def test_private_addresses_are_refused_unless_allowed(
        engine: Engine, maker: sessionmaker[Session], database_url: str, tmp_path: Path,
        receiver: Receiver) -> None:
    strict = hook_settings(database_url, tmp_path, allow_private_targets=False)
    tenant_id, _ = make_tenant(engine)
    with maker() as s:
        for url in (receiver.url, "https://127.0.0.1/hook", "https://10.1.2.3/x",
                    "https://[::1]/x", "https://169.254.169.254/latest", "https://localhost/",
                    "https://[64:ff9b::a9fe:a9fe]/latest", "https://[2002:a01:203::]/x",
                    "http://hooks.example.com/x", "ftp://hooks.example.com/",
                    "https://user:pw@hooks.example.com/"):
            with pytest.raises(InvalidSetting):
                service.create_endpoint(s, strict, tenant_id, url, dt.datetime.now(dt.UTC))
    # Made while allowed, then sent with the setting off: refused before a byte is sent.
    endpoint_id, _ = endpoint(maker, hook_settings(database_url, tmp_path), tenant_id,
                              receiver.url.replace("http:", "https:"))
    write(maker, tenant_id, "u1")
    passes_until_attempted(Dispatcher(maker, strict), maker, endpoint_id)
    [attempt] = attempts(maker, endpoint_id)
    assert attempt.status_code is None
    assert "does not connect there" in (attempt.error or "") or "private" in (
        attempt.error or "")
    assert receiver.received == []


def test_a_name_that_resolves_to_a_private_address_is_refused_at_connection() -> None:
    """The guard checks the address actually connected to, not the URL's spelling."""
    name = socket.gethostname()
    try:
        address = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)[0][4][0]
    except OSError:
        pytest.skip("this machine's own name does not resolve")
    from connector.outbound import is_public
    if is_public(str(address)):
        pytest.skip("this machine's own name resolves to a public address")
    with socket.socket() as listener:  # something listening there, so only the guard refuses
        listener.bind((str(address), 0))
        listener.listen()
        port = listener.getsockname()[1]
        strict = load_settings(environ={"CONNECTOR_CONFIG": "/nonexistent-none.toml"},
                               overrides={"webhooks": {"allow_private_targets": False}})
        outcome = Sender(strict.webhooks).post(f"https://{name}:{port}/", b"{}", {})
    assert outcome.status is None
    assert "does not connect there" in (outcome.error or ""), outcome.error


def test_two_dispatchers_side_by_side_never_deliver_an_event_twice(
        engine: Engine, maker: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    tenant_id, _ = make_tenant(engine)
    endpoints = [endpoint(maker, settings, tenant_id, f"{receiver.url}?n={n}")[0]
                 for n in range(4)]
    first, second = Dispatcher(maker, settings), Dispatcher(maker, settings)
    delivered = {first.owner: 0, second.owner: 0}
    stop = threading.Event()

    def run(dispatcher: Dispatcher) -> None:
        while not stop.is_set():
            delivered[dispatcher.owner] += sum(dispatcher.deliver(e) for e in
                                               dispatcher.due())

    threads = [threading.Thread(target=run, args=(d,)) for d in (first, second)]
    for thread in threads:
        thread.start()
    for i in range(30):
        write(maker, tenant_id, f"u{i % 5}", 2)
    total = 60 * len(endpoints)
    receiver.wait_for(lambda r: len(r.events()) >= total, timeout=30)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert all(delivered.values()), delivered  # both delivered
    for endpoint_id in endpoints:
        assert sum(a.event_count for a in attempts(maker, endpoint_id) if a.succeeded) == 60
    everything = ids(receiver.events())
    assert len(everything) == total
    # Each event reached each endpoint exactly once: 4 copies of every id, no more.
    counts: dict[int, int] = defaultdict(int)
    for event_id in everything:
        counts[event_id] += 1
    assert set(counts.values()) == {len(endpoints)}


def test_a_dispatcher_loop_delivers_within_a_second(
        engine: Engine, maker: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    tenant_id, _ = make_tenant(engine)
    endpoint(maker, settings, tenant_id, receiver.url)
    running = runner.start(maker, settings)
    assert running is not None
    try:
        write(maker, tenant_id, "u1")
        assert receiver.wait_for(lambda r: len(r.events()) == 1, timeout=5)
    finally:
        running.stop()


def test_type_filtered_endpoints_move_past_what_they_do_not_take(
        engine: Engine, maker: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    tenant_id, _ = make_tenant(engine)
    endpoint_id, _ = endpoint(maker, settings, tenant_id, receiver.url, ["billing.month_closed"])
    write(maker, tenant_id, "u1", 5)
    before = get(maker, endpoint_id)
    Dispatcher(maker, settings).run_pass()
    after = get(maker, endpoint_id)
    assert (after.cursor_txid, after.cursor_id) > (before.cursor_txid, before.cursor_id)
    assert receiver.received == []
    write(maker, tenant_id, "t", 1, events.MONTH_CLOSED)
    Dispatcher(maker, settings).run_pass()
    assert [e["type"] for e in receiver.events()] == ["billing.month_closed"]


def test_the_delivery_log_is_pruned_after_its_retention(
        engine: Engine, maker: sessionmaker[Session], settings: Settings,
        receiver: Receiver) -> None:
    tenant_id, _ = make_tenant(engine)
    endpoint_id, _ = endpoint(maker, settings, tenant_id, receiver.url)
    clock = Clock()
    write(maker, tenant_id, "u1")
    Dispatcher(maker, settings, clock=clock).run_pass()
    clock.advance(days=31)
    write(maker, tenant_id, "u1")
    Dispatcher(maker, settings, clock=clock).run_pass()
    with maker() as s:
        assert service.prune_attempts(s, clock(), 30) == 1
        s.commit()
    assert [a.attempted_at for a in attempts(maker, endpoint_id)] == [clock()]


def test_a_partner_wide_notice_goes_to_partner_admins_only(
        engine: Engine, maker: sessionmaker[Session], settings: Settings) -> None:
    from connector import notify
    from connector.notify_messages import compose, partner_wide
    from tests.support.clients import make_admin

    tenant_id, _ = make_tenant(engine)
    make_admin(engine, "partner@example.com")
    make_admin(engine, "tenant@example.com", "tenant", tenant_id)
    now = dt.datetime.now(dt.UTC)
    with maker() as s:
        assert notify.raise_condition(s, "", "webhook_disabled", "It failed for days.", now,
                                      "e1")
        s.commit()
        assert [a.email for a in notify.recipients(s, "", "webhook_disabled")] == [
            "partner@example.com"]
        condition = s.scalars(select(NotifyCondition)).one()
        message = compose(settings, condition, partner_wide(), "partner@example.com",
                          "raised", now)
    assert message["Subject"] == "Webhook endpoint disabled for all tenants (partner-wide)"
    assert "/admin/webhooks/e1" in message.get_body(("plain",)).get_content()
