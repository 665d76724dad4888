"""Whom a webhook delivery trusts and which way it goes: a receiver over HTTPS with a
certificate from a private CA is delivered to once that CA is in `webhooks.ca_bundle`
(the OS store always counts too); without it the delivery fails in plain words, is
logged and retried, and nothing is dropped. Deliveries go through `webhooks.proxy` the
way Entra ID sync goes through `azure_sync.proxy` (one code path: connector.outbound)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from connector import events, feed, sealed
from connector.config import ConfigError
from connector.db import make_sessionmaker
from connector.events import WriteContext
from connector.models import WebhookAttempt, WebhookEndpoint
from connector.status import Source
from connector.webhooks import service
from connector.webhooks.dispatcher import Dispatcher
from connector.webhooks.sender import Sender
from tests.fakes.proxy import ConnectProxy
from tests.fakes.receiver import Receiver, verify
from tests.fakes.tls import LoopbackTLS, create_loopback_tls
from tests.support.clients import make_tenant
from tests.support.webhooks import receiving_settings

KEY = sealed.new_key()


class Clock:
    def __init__(self) -> None:
        self.at = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.at


@pytest.fixture
def tls(tmp_path: Path) -> LoopbackTLS:
    return create_loopback_tls(tmp_path)


@pytest.fixture
def https_receiver(tls: LoopbackTLS) -> Iterator[Receiver]:
    with Receiver(tls) as r:
        yield r



def endpoint(maker: sessionmaker[Session], settings: Any, tenant_id: str,
             url: str) -> tuple[str, str]:
    with maker() as s:
        made, secret = service.create_endpoint(s, settings, tenant_id, url,
                                               dt.datetime.now(dt.UTC))
        s.commit()
        return made.id, secret


def write(maker: sessionmaker[Session], tenant_id: str, n: int) -> None:
    with maker() as s:
        ctx = WriteContext(tenant_id, Source.ADMIN, "test", "c", dt.datetime.now(dt.UTC))
        for i in range(n):
            events.record(s, ctx, "user", "u1", events.USER_STATUS, {"n": i}, {"n": i + 1})
        s.commit()


def log_of(maker: sessionmaker[Session], endpoint_id: str) -> list[WebhookAttempt]:
    with maker() as s:
        return list(s.scalars(select(WebhookAttempt).where(
            WebhookAttempt.endpoint_id == endpoint_id).order_by(WebhookAttempt.id)))


def state(maker: sessionmaker[Session], endpoint_id: str) -> WebhookEndpoint:
    with maker() as s:
        found = s.get(WebhookEndpoint, endpoint_id)
        assert found is not None
        return found


def test_a_private_ca_in_ca_bundle_is_trusted_and_the_message_verifies(
        engine: Engine, database_url: str, tmp_path: Path, tls: LoopbackTLS,
        https_receiver: Receiver, no_env_proxy: Any) -> None:
    settings = receiving_settings(database_url, tmp_path, KEY, ca_bundle=str(tls.ca_path))
    maker = make_sessionmaker(engine)
    tenant_id, _ = make_tenant(engine)
    endpoint_id, secret = endpoint(maker, settings, tenant_id, https_receiver.url)
    assert https_receiver.url.startswith("https://")
    write(maker, tenant_id, 2)
    assert Dispatcher(maker, settings).run_pass() == 1
    [message] = https_receiver.accepted
    payload = verify(message, secret)  # standardwebhooks' own verifier
    assert payload["type"] == "batch" and len(payload["data"]["events"]) == 2
    [attempt] = log_of(maker, endpoint_id)
    assert (attempt.succeeded, attempt.status_code, attempt.error) == (True, 200, None)


def test_without_the_ca_the_delivery_fails_in_plain_words_and_keeps_retrying(
        engine: Engine, database_url: str, tmp_path: Path, tls: LoopbackTLS,
        https_receiver: Receiver, no_env_proxy: Any) -> None:
    settings = receiving_settings(database_url, tmp_path, KEY)  # the OS store only
    maker = make_sessionmaker(engine)
    tenant_id, _ = make_tenant(engine)
    endpoint_id, secret = endpoint(maker, settings, tenant_id, https_receiver.url)
    write(maker, tenant_id, 3)
    clock = Clock()
    untrusting = Dispatcher(maker, settings, clock=clock, rng=random.Random(1))
    for _ in range(2):
        assert untrusting.run_pass() == 1
        now = state(maker, endpoint_id)
        assert now.enabled and now.next_attempt_at > clock.at  # backing off, not dropped
        assert untrusting.run_pass() == 0  # not due yet
        clock.at = now.next_attempt_at
    assert https_receiver.received == []  # the handshake failed: nothing was sent
    log = log_of(maker, endpoint_id)
    assert [(a.attempt, a.succeeded, a.status_code) for a in log] == [(1, False, None),
                                                                      (2, False, None)]
    assert log[0].error == ("the TLS certificate of 127.0.0.1 is not trusted (add its CA to "
                            "the system's trust store or webhooks.ca_bundle)")
    assert state(maker, endpoint_id).consecutive_failures == 2
    # Once the CA is configured, the events that waited are delivered, in order. (On
    # PostgreSQL an endpoint may also start before the tenant's own creation event, when
    # another test worker's transaction held the feed's horizon back: feed.py, `_XMIN`.)
    trusting = Dispatcher(maker, receiving_settings(database_url, tmp_path, KEY,
                                                    ca_bundle=str(tls.ca_path)), clock=clock)
    assert trusting.run_pass() == 1
    [message] = https_receiver.accepted
    assert [e["data"]["new"] for e in verify(message, secret)["data"]["events"]
            if e["type"] == feed.PUBLIC_TYPES[events.USER_STATUS]] \
        == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert state(maker, endpoint_id).consecutive_failures == 0


def test_deliveries_go_through_the_proxy_setting_unless_no_proxy(
        engine: Engine, database_url: str, tmp_path: Path, tls: LoopbackTLS,
        https_receiver: Receiver, no_env_proxy: Any) -> None:
    maker = make_sessionmaker(engine)
    tenant_id, _ = make_tenant(engine)
    port = https_receiver.url.split(":")[2].split("/")[0]
    with ConnectProxy() as proxy:
        through = receiving_settings(database_url, tmp_path, KEY, ca_bundle=str(tls.ca_path),
                                     proxy=proxy.url)
        endpoint(maker, through, tenant_id, https_receiver.url)
        write(maker, tenant_id, 1)
        assert Dispatcher(maker, through).run_pass() == 1
        assert proxy.connects == [f"127.0.0.1:{port}"]
        direct = receiving_settings(database_url, tmp_path, KEY, ca_bundle=str(tls.ca_path),
                                    proxy=proxy.url, no_proxy="127.0.0.1")
        write(maker, tenant_id, 1)
        assert Dispatcher(maker, direct).run_pass() == 1
        assert proxy.connects == [f"127.0.0.1:{port}"]  # nothing more through the proxy
        no_env_proxy.setenv("HTTPS_PROXY", proxy.url)  # the environment, as for Entra sync
        write(maker, tenant_id, 1)
        assert Dispatcher(maker, receiving_settings(
            database_url, tmp_path, KEY, ca_bundle=str(tls.ca_path))).run_pass() == 1
        assert proxy.connects == [f"127.0.0.1:{port}"] * 2
    assert len(https_receiver.accepted) == 3


def test_a_proxy_that_cannot_be_reached_is_a_failure_in_plain_words(
        engine: Engine, database_url: str, tmp_path: Path, https_receiver: Receiver,
        no_env_proxy: Any) -> None:
    with ConnectProxy() as gone:
        url = gone.url  # a port nothing listens on once the block ends
    settings = receiving_settings(database_url, tmp_path, KEY, proxy=url)
    maker = make_sessionmaker(engine)
    tenant_id, _ = make_tenant(engine)
    endpoint_id, _ = endpoint(maker, settings, tenant_id, https_receiver.url)
    write(maker, tenant_id, 1)
    assert Dispatcher(maker, settings).run_pass() == 1
    [attempt] = log_of(maker, endpoint_id)
    assert attempt.error == "the outbound proxy did not connect to 127.0.0.1"
    assert state(maker, endpoint_id).enabled


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("proxy", "proxy.example:3128", r"webhooks\.proxy must be an http:// URL"),
    ("ca_bundle", "/nonexistent/ca.pem", r"webhooks\.ca_bundle: '/nonexistent/ca\.pem' is "
                                         "not a readable PEM file")])
def test_unusable_trust_or_proxy_settings_fail_at_start(
        tmp_path: Path, setting: str, value: str, message: str) -> None:
    settings = receiving_settings("sqlite://", tmp_path, KEY, **{setting: value})
    with pytest.raises(ConfigError, match=message):
        Sender(settings.webhooks)
