"""Month closes in /metrics: counted by result (closed, already closed, failed) with
their duration, through the scheduler's pass as it runs in `connector worker`."""

from __future__ import annotations

import dataclasses

from sqlalchemy import Engine, update

from billing import scheduler
from connector.app import create_app
from connector.config import BillingSettings, MetricsSettings, Settings
from connector.models import Tenant
from tests.billing.history import History, at
from tests.support.metrics import TOKEN, scrape, value

CLOSES = "connector_month_closes_total"


# In this process: on PostgreSQL a pass closes tenants in processes of its own, which count
# in the multiprocess files serve and worker set up (PROMETHEUS_MULTIPROC_DIR, inherited),
# not in this test's in-memory registry.
SERIAL = BillingSettings(close_parallel_tenants=1)


def test_month_closes_are_counted_by_result_with_their_duration(
        engine: Engine, settings: Settings) -> None:
    client = create_app(dataclasses.replace(settings, metrics=MetricsSettings(token=TOKEN)),
                        engine=engine).test_client()
    h = History(engine)
    h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
    before = scrape(client)
    scheduler.run_due(h.maker, SERIAL, clock=lambda: at("2026-12-01T02:00:00"))
    closed = scrape(client)
    months = value(closed, CLOSES, result="closed") - value(before, CLOSES, result="closed")
    assert months >= 1  # every month from the tenant's creation to November
    count = "connector_month_close_duration_seconds_count"
    assert value(closed, count, result="closed") - value(before, count, result="closed") == \
        months
    assert value(closed, CLOSES, result="failed") == value(before, CLOSES, result="failed")

    # A tenant whose months cannot be listed (a zone the system lacks) fails its close.
    broken = History(engine, name="Broken")
    with h.maker() as s:
        s.execute(update(Tenant).where(Tenant.id == broken.tenant_id).values(
            time_zone="Mars/Olympus_Mons"))
        s.commit()
    scheduler.run_due(h.maker, SERIAL, clock=lambda: at("2027-01-01T02:00:00"))
    after = scrape(client)
    assert value(after, CLOSES, result="failed") - value(closed, CLOSES, result="failed") == 1
    assert value(after, CLOSES, result="closed") - value(closed, CLOSES, result="closed") >= 1
