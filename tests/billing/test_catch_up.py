"""Catch-up after downtime, the Entra collection window, the scheduler job and the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from billing import scheduler
from billing.calendar import Month
from billing.catch_up import close_due
from billing.close import close_month
from billing.verify import recompute_hash
from connector.config import BillingSettings
from connector.models import BillingClose, BillingLine, SyncRun, SyncState, Tenant
from tests.billing.history import History, at

SETTINGS = BillingSettings()
ROOT = Path(__file__).resolve().parents[2]


def story(h: History) -> None:
    h.billing(policy="whole_month", prices=[{"unit": "user", "plan": "standard",
                                              "price": "3.00"}])
    a = h.create("2026-07-03T10:00:00", "a@x.io")
    b = h.create("2026-08-01T00:00:00", "b@x.io")
    h.set_active("2026-09-15T12:00:00", a, False)
    h.set_active("2026-10-02T12:00:00", a, True)
    h.remove("2026-11-20T00:00:00", b)
    h.activity("2026-10-09T00:00:00", a)


def snapshot(h: History) -> list[tuple[str, object, object, object]]:
    with h.maker() as s:
        closes = list(s.scalars(select(BillingClose).where(
            BillingClose.tenant_id == h.tenant_id).order_by(BillingClose.month)))
        out = []
        for c in closes:
            got = sorted((line.user_name, line.billable, line.reason) for line in s.scalars(
                select(BillingLine).where(BillingLine.close_id == c.id)))
            out.append((c.month, c.totals, c.invoice, got))
        return out


def test_catching_up_after_downtime_equals_closing_on_time(engine: Engine) -> None:
    on_time, late = History(engine, "2026-07-01T09:00:00", "A"), \
        History(engine, "2026-07-01T09:00:00", "B")
    story(on_time)
    story(late)
    month = Month(2026, 7)
    while month <= Month(2026, 11):
        close_due(on_time.maker, SETTINGS, month.end("UTC") + dt.timedelta(minutes=61),
                  tenant_ids=[on_time.tenant_id])
        month = month.next()
    result = close_due(late.maker, SETTINGS, at("2027-01-05T00:00:00"),
                       tenant_ids=[late.tenant_id])
    assert [m for _, m, _ in result.closed] == ["2026-07", "2026-08", "2026-09", "2026-10",
                                                "2026-11", "2026-12"]
    assert snapshot(late)[:5] == snapshot(on_time)
    # Each close after the first started from the states its predecessor kept; folding
    # every month again from the whole log gives the same hashes.
    with late.maker() as s:
        for close in s.scalars(select(BillingClose).where(
                BillingClose.tenant_id == late.tenant_id)):
            assert recompute_hash(s, close) == close.content_hash, close.month
    sept = snapshot(late)[2]
    assert sept[3] == [("a@x.io", False, "not_active_whole_month"),
                       ("b@x.io", True, "active_whole_month")]


def test_an_entra_synced_tenant_waits_for_a_round_after_the_boundary(engine: Engine) -> None:
    h = History(engine, "2026-10-01T09:00:00")
    h.create("2026-10-03T10:00:00", "a@x.io", modules=("Hybrid",))
    with h.maker() as s:
        s.get(Tenant, h.tenant_id).entra_sync = True
        s.add(SyncRun(tenant_id=h.tenant_id, kind="incremental", status="succeeded",
                      trigger="schedule", started_at=at("2026-10-31T23:55:00"),
                      finished_at=at("2026-11-01T00:05:00"), pages=1, counts={}))
        s.commit()
    waiting = close_due(h.maker, SETTINGS, at("2026-11-01T03:00:00"))
    assert waiting.closed == [] and "Entra sync round" in waiting.waiting[0][2]
    with h.maker() as s:
        s.add(SyncRun(tenant_id=h.tenant_id, kind="incremental", status="succeeded",
                      trigger="schedule", started_at=at("2026-11-01T02:00:00"),
                      finished_at=at("2026-11-01T02:10:00"), pages=3, counts={}))
        s.commit()
    done = close_due(h.maker, SETTINGS, at("2026-11-01T03:00:00"))
    (_, month, outcome), = done.closed
    assert month == "2026-10" and outcome.close.cutoff == at("2026-11-01T02:10:00")


def test_a_quarantined_sync_does_not_hold_the_close_and_is_noted(engine: Engine) -> None:
    h = History(engine, "2026-10-01T09:00:00")
    with h.maker() as s:
        s.get(Tenant, h.tenant_id).entra_sync = True
        s.add(SyncState(tenant_id=h.tenant_id, quarantined_until=at("2026-11-02T00:00:00"),
                        failures=7, full_round=False))
        s.commit()
    out = close_month(h.maker, h.tenant_id, Month(2026, 10), SETTINGS,
                      at("2026-11-01T06:00:00"))
    assert "quarantined" in out.close.report["notes"][0]


def test_the_scheduler_job_closes_due_months_and_survives_errors(engine: Engine) -> None:
    h = History(engine, "2026-09-10T09:00:00")
    h.create("2026-09-11T10:00:00", "a@x.io", modules=("Hybrid",))
    scheduler.run_due(h.maker, SETTINGS, clock=lambda: at("2026-11-01T02:00:00"))
    with h.maker() as s:
        assert sorted(s.scalars(select(BillingClose.month))) == ["2026-09", "2026-10"]
    # A tenant whose zone this system does not know fails alone; the others close.
    History(engine, "2026-09-10T09:00:00", "Broken", time_zone="Mars/Olympus")
    other = History(engine, "2026-09-10T09:00:00", "Other")
    scheduler.run_due(h.maker, SETTINGS, clock=lambda: at("2026-12-01T02:00:00"))
    with h.maker() as s:
        months = sorted(s.scalars(select(BillingClose.month).where(
            BillingClose.tenant_id == other.tenant_id)))
    assert months == ["2026-09", "2026-10", "2026-11"]
    result = close_due(h.maker, SETTINGS, at("2026-12-01T02:00:00"))
    assert [(m, "Mars/Olympus" in e) for _, m, e in result.failed] == [("", True)]


def connector(database_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONNECTOR_DATABASE__URL": database_url,
           "CONNECTOR_CONFIG": str(cwd / "none.toml")}
    return subprocess.run([sys.executable, "-m", "connector.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow  # the commands in new interpreters
def test_the_billing_commands(database_url: str, engine: Engine, tmp_path: Path) -> None:
    h = History(engine, "2026-09-10T09:00:00")
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "7.50"}])
    h.create("2026-09-11T10:00:00", "a@x.io", modules=("Hybrid",))
    tenant = h.tenant_id
    first = connector(database_url, "billing", "close", "--tenant", tenant, "--month",
                      "2026-10", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    closed = json.loads(first.stdout)
    assert closed["created"] and closed["invoice"]["total"] == "7.50"
    again = connector(database_url, "billing", "close", "--tenant", tenant, "--month",
                      "2026-10", cwd=tmp_path)
    assert again.returncode == 0 and "Already closed 2026-10" in again.stdout
    assert "billing reissue" in again.stdout
    shown = json.loads(connector(database_url, "billing", "show", "--tenant", tenant,
                                 "--month", "2026-10", "--json", cwd=tmp_path).stdout)
    assert shown["hash"] == closed["hash"] and shown["versions"][0]["state"] == "closed"
    reissued = connector(database_url, "billing", "reissue", "--tenant", tenant, "--month",
                         "2026-10", "--reason", "new prices", "--json", cwd=tmp_path)
    assert json.loads(reissued.stdout)["version"] == 2
    preview = json.loads(connector(database_url, "billing", "preview", "--tenant", tenant,
                                   "--json", cwd=tmp_path).stdout)
    assert preview["usersBillable"] == 1 and preview["invoice"]["total"] == "7.50"
    bad = connector(database_url, "billing", "close", "--tenant", tenant, "--month", "10/2026",
                    cwd=tmp_path)
    assert bad.returncode == 1 and "YYYY-MM" in bad.stderr
    future = connector(database_url, "billing", "close", "--tenant", tenant, "--month",
                       "2099-01", cwd=tmp_path)
    assert future.returncode == 3 and "collection window" in future.stderr
    missing = connector(database_url, "billing", "show", "--tenant", tenant, "--month",
                        "2026-08", cwd=tmp_path)
    assert missing.returncode == 3 and "billing close --tenant" in missing.stderr


def test_the_preview_command_says_when_no_prices_are_set(engine: Engine) -> None:
    """`connector billing preview` estimated "USD 0.00" for units nobody priced, where the
    billing page (docs/billing.md) says "No prices set"; a unit with a price is estimated
    as before, and one without is named as such."""
    from billing.cli import preview_text
    from billing.preview import preview

    h = History(engine, "2026-09-10T09:00:00")
    h.create("2026-09-11T10:00:00", "a@x.io", modules=("Hybrid",))
    h.create("2026-09-11T10:00:00", "b@x.io", modules=("Engage",))
    now = at("2026-12-07T09:00:00")
    with h.maker() as s:
        unpriced = preview_text(preview(s, s.get(Tenant, h.tenant_id), now))
    assert "no prices set: 2 billable unit(s) have no price" in unpriced[0]
    assert "USD" not in unpriced[0]
    assert sorted(unpriced[1:]) == ["  Engage, regular, standard plan: 1 × no price set",
                                    "  Hybrid, regular, standard plan: 1 × no price set"]

    h.billing("2026-12-01T00:00:00",
              prices=[{"unit": "Hybrid", "plan": "standard", "price": "7.50"}])
    with h.maker() as s:
        partly = preview_text(preview(s, s.get(Tenant, h.tenant_id), now))
    assert "USD 7.50 estimated, not counting 1 unit(s) without a price." in partly[0]
    assert "  Hybrid, regular, standard plan: 1 × 7.50 = 7.50" in partly
