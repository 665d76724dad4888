"""Entra sync in /metrics: rounds counted by result with their duration, and the gauges
read at scrape time (held, quarantined, lagging tenants, the notification outbox)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from flask.testing import FlaskClient
from sqlalchemy import select, update

from connector.app import create_app
from connector.config import MetricsSettings, Settings
from connector.models import EntraRegistration, NotifyOutbox, SyncState
from tests.azure_sync.harness import Sync
from tests.support.clients import make_admin
from tests.support.metrics import TOKEN, Samples, scrape, value


def metrics_client(sync: Sync, settings: Settings, **changes: object) -> FlaskClient:
    chosen = MetricsSettings(**{"token": TOKEN, "cache_seconds": 0, **changes})  # type: ignore[arg-type]
    return create_app(dataclasses.replace(settings, metrics=chosen),
                      engine=sync.engine).test_client()


def gauge(samples: Samples, name: str) -> float:
    return value(samples, name)


def test_rounds_are_counted_by_result_with_their_duration(sync: Sync,
                                                          settings: Settings) -> None:
    client = metrics_client(sync, settings)
    before = scrape(client)
    sync.entra.seed_users(3)
    assert sync.run().status == "succeeded"
    sync.graph.deny(sync.app.client_id)
    assert sync.run().status == "failed"
    after = scrape(client)
    rounds = "connector_sync_rounds_total"
    for result in ("succeeded", "failed"):
        assert value(after, rounds, result=result) - value(before, rounds, result=result) == 1
    count = "connector_sync_round_duration_seconds_count"
    assert value(after, count, result="succeeded") - value(before, count,
                                                           result="succeeded") == 1
    assert value(after, "connector_sync_round_duration_seconds_sum", result="succeeded") > \
        value(before, "connector_sync_round_duration_seconds_sum", result="succeeded")


def test_held_quarantined_and_lagging_tenants_and_the_outbox(sync: Sync,
                                                             settings: Settings) -> None:
    client = metrics_client(sync, settings, sync_lag_minutes=30)
    fresh = scrape(client)
    assert gauge(fresh, "connector_sync_registered_tenants") == 1
    assert gauge(fresh, "connector_sync_never_succeeded_tenants") == 1
    assert gauge(fresh, "connector_sync_lagging_tenants") == 0
    assert gauge(fresh, "connector_sync_lag_threshold_seconds") == 1800
    assert 0 <= gauge(fresh, "connector_sync_max_lag_seconds") < 300

    ids = [sync.entra.add_user(f"u{i}@contoso.example") for i in range(40)]
    assert sync.run().status == "succeeded"
    for user_id in ids[:10]:  # a quarter of the tenant: over the deletion threshold
        sync.entra.disable_user(user_id)
    assert sync.run().status == "awaiting_approval"
    held = scrape(client)
    assert gauge(held, "connector_sync_held_tenants") == 1
    assert gauge(held, "connector_sync_never_succeeded_tenants") == 0

    # A second tenant, registered two hours ago, failing until quarantined; an admin to
    # tell, so the notification outbox fills.
    other = sync.clone_tenant("Other")
    make_admin(sync.engine, "ta@other.example", "tenant", other.tenant_id)
    sync.graph.deny(sync.app.client_id)
    for _ in range(5):
        assert other.run(quarantine_after=5).status == "failed"
    with sync.session() as s:
        s.execute(update(EntraRegistration).where(
            EntraRegistration.tenant_id == other.tenant_id).values(
            created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)))
        s.commit()
        state = s.get(SyncState, other.tenant_id)
        assert state is not None and state.quarantined_until is not None
        pending = len(list(s.scalars(select(NotifyOutbox).where(
            NotifyOutbox.state == "pending"))))
    assert pending >= 1
    seen = scrape(client)
    assert gauge(seen, "connector_sync_registered_tenants") == 2
    assert gauge(seen, "connector_sync_quarantined_tenants") == 1
    assert gauge(seen, "connector_sync_held_tenants") == 1
    assert gauge(seen, "connector_sync_lagging_tenants") == 1
    assert 7000 < gauge(seen, "connector_sync_max_lag_seconds") < 7500
    assert value(seen, "connector_outbox_pending", outbox="notify") == pending
    assert value(seen, "connector_outbox_pending", outbox="billing_mail") == 0

    # A paused tenant is left out of the lag figures (its rounds do nothing on purpose).
    other.set(provisioning_paused=True)
    paused = scrape(client)
    assert gauge(paused, "connector_sync_paused_tenants") == 1
    assert gauge(paused, "connector_sync_lagging_tenants") == 0
    assert gauge(paused, "connector_sync_max_lag_seconds") < 7000
