"""The webhook backlog in /metrics, on both databases: enabled endpoints with events not
delivered yet and the oldest such event's age (the `webhook` outbox), disabled endpoints;
a filtered endpoint is behind only on events it takes; delivery brings it back to zero.
No label names a tenant or an endpoint."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from connector import events, sealed
from connector.config import MetricsSettings, Settings
from connector.db import make_sessionmaker
from connector.events import WriteContext
from connector.metrics_export import DatabaseFigures
from connector.models import Event, WebhookEndpoint
from connector.status import Source
from connector.webhooks import service
from connector.webhooks.dispatcher import Dispatcher
from tests.fakes.receiver import Answer, Receiver
from tests.support.clients import make_tenant
from tests.support.metrics import TOKEN, Samples, scrape, value
from tests.support.webhooks import receiving_settings

KEY = sealed.new_key()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The app's settings with the metrics token set (cache off: every scrape reads)."""
    return dataclasses.replace(settings, metrics=MetricsSettings(token=TOKEN, cache_seconds=0))


def hooks(database_url: str, tmp_path: Path) -> Settings:
    return receiving_settings(database_url, tmp_path, KEY)


def endpoint(maker: sessionmaker[Session], settings: Settings, tenant_id: str, url: str,
             types: list[str] | None = None) -> str:
    with maker() as s:
        made, _ = service.create_endpoint(s, settings, tenant_id, url,
                                          dt.datetime.now(dt.UTC), event_types=types)
        s.commit()
        return made.id


def write(maker: sessionmaker[Session], tenant_id: str, at: dt.datetime, n: int = 1) -> None:
    with maker() as s:
        ctx = WriteContext(tenant_id, Source.ADMIN, "test", "c", at)
        for i in range(n):
            events.record(s, ctx, "user", "u1", events.USER_STATUS, {"n": i}, {"n": i + 1})
        s.commit()


def figures(maker: sessionmaker[Session], now: dt.datetime) -> Samples:
    collected = DatabaseFigures(maker, MetricsSettings(cache_seconds=0), now=lambda: now)
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in collected.collect() for sample in family.samples}


def backlog(samples: Samples) -> tuple[float, float, float]:
    return (value(samples, "connector_outbox_pending", outbox="webhook"),
            value(samples, "connector_outbox_oldest_pending_seconds", outbox="webhook"),
            value(samples, "connector_webhook_endpoints_disabled"))


def test_the_backlog_counts_enabled_endpoints_behind_and_the_oldest_events_age(
        engine: Engine, database_url: str, tmp_path: Path, receiver: Receiver) -> None:
    settings = hooks(database_url, tmp_path)
    maker = make_sessionmaker(engine)
    now = dt.datetime.now(dt.UTC)
    assert backlog(figures(maker, now)) == (0, 0, 0)
    first, _ = make_tenant(engine)
    second, _ = make_tenant(engine)
    endpoint(maker, settings, first, receiver.url)
    endpoint(maker, settings, first, receiver.url)  # the same stream: one probe, two behind
    endpoint(maker, settings, first, receiver.url, ["user.created"])  # takes none of them
    endpoint(maker, settings, second, receiver.url)  # nothing written for it
    off = endpoint(maker, settings, second, receiver.url)
    with maker() as s:
        found = s.get(WebhookEndpoint, off)
        assert found is not None
        service.set_enabled(s, found, False, now)
        s.commit()
    write(maker, first, now, 3)
    write(maker, second, now)  # for its enabled endpoint (the disabled one is not counted)
    with maker() as s:
        recorded = s.scalar(select(Event.recorded_at).where(Event.tenant_id == first)
                            .order_by(Event.id).limit(1))
    assert recorded is not None
    later = recorded + dt.timedelta(seconds=90)
    pending, oldest, disabled = backlog(figures(maker, later))
    assert (pending, disabled) == (3, 1)  # the first's two, the second's enabled one
    assert oldest == pytest.approx(90, abs=1)
    # A receiver that fails keeps its endpoint in the backlog; delivery empties it.
    receiver.answer = lambda _r: Answer(500)
    dispatcher = Dispatcher(maker, settings)
    dispatcher.run_pass()
    assert backlog(figures(maker, later))[:2] == (3, pytest.approx(90, abs=1))
    receiver.answer = lambda _r: Answer(200)
    with maker() as s:  # due again at once
        for row in s.scalars(select(WebhookEndpoint)):
            row.next_attempt_at = now
        s.commit()
    dispatcher.run_pass()
    assert backlog(figures(maker, later)) == (0, 0, 1)


def test_the_scrape_shows_the_webhook_outbox_with_fixed_labels_only(
        app: Flask, engine: Engine, database_url: str, tmp_path: Path,
        receiver: Receiver) -> None:
    maker = make_sessionmaker(engine)
    tenant_id, _ = make_tenant(engine)
    endpoint(maker, hooks(database_url, tmp_path), tenant_id, receiver.url)
    write(maker, tenant_id, dt.datetime.now(dt.UTC))
    samples = scrape(app.test_client())
    assert value(samples, "connector_outbox_pending", outbox="webhook") == 1
    assert value(samples, "connector_outbox_oldest_pending_seconds", outbox="webhook") >= 0
    assert ("connector_webhook_endpoints_disabled", frozenset()) in samples
    outboxes = {dict(labels).get("outbox") for (name, labels) in samples
                if name.startswith("connector_outbox_")}
    assert outboxes == {"notify", "billing_mail", "webhook"}
