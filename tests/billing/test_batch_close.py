"""Small tenants' months closed as a batch (billing.batch) are the closes one tenant at a
time makes (billing.close): the same hashes, inputs, lines, kept states, invoices and
events; what the batch cannot do alone goes back to the one-tenant close."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, text

from billing.batch import close_batch
from billing.calendar import Month
from billing.catch_up import DueResult, close_due
from billing.close import close_month
from connector import events
from connector.commands import UserFields
from connector.config import BillingSettings
from connector.db import make_sessionmaker
from connector.models import (
    BillingAdjustment,
    BillingClose,
    BillingLine,
    BillingProfile,
    Event,
    User,
)
from connector.status import Source
from tests.billing.history import History, at

SETTINGS = BillingSettings(close_parallel_tenants=1)
PRICES = [{"unit": "Hybrid", "plan": "standard", "price": "4.00"},
          {"unit": "Engage", "plan": "frontline", "price": "1.50"},
          {"unit": "user", "plan": "standard", "price": "3.00"}]
MONTHS = (("2026-09", "2026-10-01T02:00:00"), ("2026-10", "2026-11-01T02:00:00"),
          ("2026-11", "2026-12-01T02:00:00"))


def fleet(engine: Engine) -> dict[str, History]:
    """Tenants with the histories a close must get right, made on 15 September."""
    made = "2026-09-15T00:00:00"
    t = {name: History(engine, made, name) for name in (
        "plain", "whole", "invited", "late", "active", "empty")}
    t["kolkata"] = History(engine, made, "kolkata", time_zone="Asia/Kolkata")
    t["whole"].billing(policy="whole_month", prices=PRICES, trial_ends_on="2026-09-30")
    t["invited"].billing(policy="invited", prices=PRICES, non_profit=True, po_number="PO-7")
    t["late"].billing(policy="active_with_module", prices=PRICES)
    t["active"].billing(policy="monthly_active", prices=PRICES)
    t["kolkata"].billing(prices=PRICES, company_name="Kolkata Ltd")
    for name, h in t.items():
        if name == "empty":
            continue
        group = h.group("2026-09-16T09:00:00", "Ops", modules=("Engage",))
        a = h.create("2026-09-16T10:00:00", f"a@{name}.io", modules=("Hybrid",))
        b = h.create("2026-09-17T10:00:00", f"b@{name}.io", guest=True,
                     frontline={"frontlineRole": "Retail", "desklessPercent": 80})
        with h.directory("2026-09-18T10:00:00", Source.ADMIN) as d:  # the admins' to restore
            gone = d.create_user(UserFields(user_name=f"gone@{name}.io", modules=("Hybrid",))).id
        h.members("2026-09-20T10:00:00", group, "add", a, b)
        h.remove("2026-09-25T10:00:00", gone)  # no line in October: none kept
        h.set_active("2026-10-10T10:00:00", b, False)
        h.invite("2026-10-12T10:00:00", a, claim=True)
        h.restore("2026-11-03T10:00:00", gone)  # folded from its whole history
        new = h.create("2026-11-05T10:00:00", f"new@{name}.io", modules=("Hybrid",))
        h.members("2026-11-06T10:00:00", group, "add", new)
        h.set_active("2026-11-07T10:00:00", b, True)
        h.activity("2026-11-08T10:00:00", a)
    late = t["late"]  # a@late.io inactive from 20 October, learned in November
    with late.maker() as s:
        first = s.scalar(select(User.id).where(User.tenant_id == late.tenant_id,
                                               User.user_name == "a@late.io"))
    assert first is not None
    late.late_event("2026-10-20T00:00:00", "2026-11-20T00:00:00", first, "user.status",
                    True, False)
    return t


def closes_of(engine: Engine, month: str) -> dict[str, dict[str, Any]]:
    """Everything a month's closes left, by tenant (but their ids)."""
    with make_sessionmaker(engine)() as s:
        found = {}
        for c in s.scalars(select(BillingClose).where(BillingClose.month == month,
                                                      BillingClose.state == "closed")):
            lines = sorted((n.user_id, n.user_name, n.billable, n.reason, n.plan, n.audience,
                            n.modules, n.units, n.state) for n in s.scalars(
                select(BillingLine).where(BillingLine.close_id == c.id)))
            event = s.execute(select(Event).where(
                Event.kind == events.MONTH_CLOSED,
                Event.correlation_id == f"billing-close:{c.id}")).scalar_one()
            adjustments = sorted((a.month, a.user_id, a.sign, a.units, a.amount, a.reason)
                                 for a in s.scalars(select(BillingAdjustment).where(
                                     BillingAdjustment.close_id == c.id)))
            found[c.tenant_id] = {
                "hash": c.content_hash, "version": c.version, "by": c.closed_by,
                "times": (c.started_at, c.closed_at, c.window_start, c.window_end, c.cutoff),
                "marks": (c.event_high_water, c.activity_high_water), "inputs": c.inputs,
                "counts": (c.users_counted, c.users_billable), "totals": c.totals,
                "invoice": c.invoice, "report": c.report, "lines": lines,
                "adjustments": adjustments,
                "event": (event.subject_type, event.subject_id, event.source, event.actor,
                          event.effective_at, event.recorded_at,
                          {k: v for k, v in event.new_value.items() if k != "closeId"})}
        return found


def drop(engine: Engine, month: str, now: str) -> None:
    """Forget a month's closes: their rows, lines, adjustments and events."""
    with make_sessionmaker(engine)() as s:
        ids = select(BillingClose.id).where(BillingClose.month == month)
        s.execute(delete(Event).where(Event.kind == events.MONTH_CLOSED,
                                      Event.recorded_at == at(now)))
        s.execute(delete(BillingAdjustment).where(BillingAdjustment.close_id.in_(ids)))
        s.execute(delete(BillingLine).where(BillingLine.close_id.in_(ids)))
        s.execute(delete(BillingClose).where(BillingClose.month == month))
        s.commit()


def test_a_batch_closes_what_one_tenant_at_a_time_closes(engine: Engine) -> None:
    t = fleet(engine)
    maker = t["plain"].maker
    ids = [h.tenant_id for h in t.values()]
    for month, now in MONTHS:
        batch = close_batch(maker, ids, Month.parse(month), SETTINGS, at(now), "scheduler")
        # Handed back: a policy that counts activity, late events to adjust for.
        rest = {t["active"].tenant_id} | ({t["late"].tenant_id} if month == "2026-11" else set())
        assert set(batch.rest) == rest and set(batch.closed) == set(ids) - rest
        for tenant_id in batch.rest:
            close_month(maker, tenant_id, Month.parse(month), SETTINGS, at(now), "scheduler")
        together = closes_of(engine, month)
        assert {k: c.content_hash for k, c in batch.closed.items()} == {
            k: together[k]["hash"] for k in batch.closed}
        drop(engine, month, now)
        for tenant_id in ids:
            outcome = close_month(maker, tenant_id, Month.parse(month), SETTINGS, at(now),
                                  "scheduler")
            assert outcome.created
        alone = closes_of(engine, month)
        assert set(alone) == set(ids)
        for tenant_id in ids:
            assert together[tenant_id] == alone[tenant_id], (month, tenant_id)
    november = closes_of(engine, "2026-11")
    assert november[t["late"].tenant_id]["adjustments"]  # the batch left it to close_month
    assert november[t["plain"].tenant_id]["counts"][0] == 4  # the restored and new too


def test_a_pass_closes_tenants_in_batches_and_a_rival_close_wins(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """Two passes at once: every month closed once. On PostgreSQL, a rival's close of
    one tenant's month, uncommitted while the batch writes, holds the batch's write; once
    it commits, the batch's tenants close one by one and that tenant's month is the
    rival's."""
    t = fleet(engine)
    maker = t["plain"].maker
    ids = [h.tenant_id for h in t.values()]
    for _, now in MONTHS[:2]:
        close_due(maker, SETTINGS, at(now))
    december = at(MONTHS[2][1])
    held = t["whole"].tenant_id
    results: list[DueResult] = []
    caplog.set_level(logging.WARNING, "connector.billing")
    if engine.dialect.name == "postgresql":
        with engine.connect() as rival:
            rival.execute(text(
                "INSERT INTO billing_closes (tenant_id, month, version, state, started_at, "
                "closed_by, window_start, window_end, cutoff, event_high_water, "
                "activity_high_water, users_counted, users_billable, inputs, totals, "
                "invoice, report) VALUES (:t, '2026-11', 1, 'closed', now(), 'rival', now(), "
                "now(), now(), 0, 0, 0, 0, '{}', '[]', '{}', '{}')"), {"t": held})
            runner = threading.Thread(target=lambda: results.append(
                close_due(maker, SETTINGS, december)))
            runner.start()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not _waiting_on_a_lock(engine):
                time.sleep(0.05)
            rival.commit()
        runner.join(120)
        assert not runner.is_alive()
        (result,) = results
        created = {tid: o.created for tid, _, o in result.closed}
        assert created.pop(held) is False
        assert set(created) == set(ids) - {held} and all(created.values())
        # The batch's write was refused (the rival's committed close), not planned around.
        assert "its tenants close one by one" in caplog.text
    else:
        passes = [threading.Thread(target=lambda: results.append(
            close_due(maker, SETTINGS, december))) for _ in range(2)]
        for p in passes:
            p.start()
        for p in passes:
            p.join(120)
        assert len(results) == 2 and all(r.failed == [] for r in results)
        created = [tid for r in results for tid, _, o in r.closed if o.created]
        assert sorted(created) == sorted(ids)
    with make_sessionmaker(engine)() as s:
        rows = s.execute(select(BillingClose.tenant_id).where(
            BillingClose.month == "2026-11", BillingClose.state != "building")).all()
    assert sorted(r[0] for r in rows) == sorted(ids)


def _waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")))


def test_a_tenant_the_batch_cannot_plan_fails_alone(engine: Engine) -> None:
    t = fleet(engine)
    maker = t["plain"].maker
    with maker() as s:  # damaged behind the API's checks
        profile = s.get(BillingProfile, t["invited"].tenant_id)
        assert profile is not None
        profile.prices = [{"unit": "Hybrid", "plan": "standard", "price": "five"}]
        s.commit()
    result = close_due(maker, SETTINGS, at(MONTHS[0][1]))
    assert [(tid, m) for tid, m, _ in result.failed] == [(t["invited"].tenant_id, "2026-09")]
    assert "InvalidPrice" in result.failed[0][2]
    assert len(result.closed) == len(t) - 1
