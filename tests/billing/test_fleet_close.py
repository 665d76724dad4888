"""A close pass over a fleet of tenants: tenants side by side on PostgreSQL (serial on
SQLite), each tenant's months in order, results as a serial pass reports them."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from sqlalchemy import Engine, func, select, text, update

from billing import scheduler
from billing.catch_up import DueResult, close_due, parallel_tenants
from connector.config import BillingSettings
from connector.db import make_sessionmaker
from connector.models import BillingClose, BillingProfile, NotifyCondition, SyncRun, Tenant
from tests.billing.history import History, at

SERIAL = BillingSettings(close_parallel_tenants=1)
PARALLEL = BillingSettings(close_parallel_tenants=4)
DECEMBER = at("2026-12-01T02:00:00")  # October and November are due


def fleet(engine: Engine, n: int) -> list[History]:
    """n small tenants made on 1 October, each with its own few users and prices."""
    made = []
    for i in range(n):
        h = History(engine, "2026-10-01T00:00:00", f"T{i}")
        h.billing(policy="active_with_module",
                  prices=[{"unit": "Hybrid", "plan": "standard", "price": f"{i + 1}.00"}])
        for k in range(i % 3 + 1):
            user = h.create(f"2026-10-0{k + 2}T10:00:00", f"u{k}@t{i}.io", modules=("Hybrid",))
            if k == 1:
                h.set_active("2026-11-10T08:00:00", user, False)
        made.append(h)
    return made


def hashes(engine: Engine) -> dict[tuple[str, str], str | None]:
    with make_sessionmaker(engine)() as s:
        return {(t, m): h for t, m, h in s.execute(select(
            BillingClose.tenant_id, BillingClose.month, BillingClose.content_hash).where(
            BillingClose.state == "closed"))}


def reported(result: DueResult) -> list[tuple[str, str, bool, str | None]]:
    return [(t, m, o.created, o.close.content_hash) for t, m, o in result.closed]


def test_sqlite_closes_one_tenant_at_a_time_postgresql_several(engine: Engine) -> None:
    maker = make_sessionmaker(engine, writes=True)
    if engine.dialect.name == "sqlite":
        assert parallel_tenants(PARALLEL, maker) == 1
    else:  # each in a process of its own
        assert parallel_tenants(PARALLEL, maker) == 4
        assert parallel_tenants(replace(PARALLEL, close_parallel_tenants=12), maker) == 12
        assert parallel_tenants(BillingSettings(), maker) >= 2


def test_a_parallel_pass_closes_what_a_serial_pass_closes(engine: Engine) -> None:
    tenants = fleet(engine, 9)
    maker = tenants[0].maker
    serial = close_due(maker, SERIAL, DECEMBER)
    closed_serially = hashes(engine)
    assert len(closed_serially) == 18 and len(serial.closed) == 18
    with maker() as s:  # as if never closed: the same months again, side by side
        s.execute(BillingClose.__table__.delete())
        s.commit()
    seen: list[tuple[int, int]] = []
    parallel = close_due(maker, PARALLEL, DECEMBER,
                         tenants_progress=lambda done, total: seen.append((done, total)))
    assert hashes(engine) == closed_serially
    # Reported as a serial pass reports: tenants in the order they were made (all at
    # one instant here: then by id).
    assert [(t, m, c) for t, m, c, _ in reported(parallel)] == \
        [(t, m, c) for t, m, c, _ in reported(serial)]
    assert [t for t, _ in parallel.seconds] == sorted(h.tenant_id for h in tenants)
    assert seen[-1] == (9, 9) and sorted(d for d, _ in seen) == list(range(1, 10))


def test_tenants_close_side_by_side(engine: Engine) -> None:
    """The first tenant's close is held (a rival's uncommitted close of its month holds
    the flip on the unique index); the others close meanwhile, which one after another
    they could not."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite closes one tenant at a time")
    tenants = fleet(engine, 5)
    first = min(h.tenant_id for h in tenants)  # the first a pass takes (made at once)
    with engine.connect() as rival:
        rival.execute(text(
            "INSERT INTO billing_closes (tenant_id, month, version, state, started_at, "
            "closed_by, window_start, window_end, cutoff, event_high_water, "
            "activity_high_water, users_counted, users_billable, inputs, totals, invoice, "
            "report) VALUES (:t, '2026-10', 1, 'closed', now(), 'rival', now(), now(), "
            "now(), 0, 0, 0, 0, '{}', '[]', '{}', '{}')"),
            {"t": first})
        results: list[DueResult] = []
        runner = threading.Thread(target=lambda: results.append(
            close_due(tenants[0].maker, PARALLEL, DECEMBER)))
        runner.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with make_sessionmaker(engine)() as s:
                others = s.scalar(select(func.count()).select_from(BillingClose).where(
                    BillingClose.state == "closed", BillingClose.tenant_id != first))
            if others == 8:
                break
            time.sleep(0.1)
        assert others == 8 and runner.is_alive()  # the held tenant still waits
        rival.rollback()
    runner.join(60)
    assert not runner.is_alive()
    assert [(t, m) for t, m, _ in results[0].closed][:2] == [(first, "2026-10"),
                                                            (first, "2026-11")]
    assert len(hashes(engine)) == 10


def test_a_failing_tenant_is_reported_and_the_others_close(engine: Engine) -> None:
    tenants = fleet(engine, 6)
    maker = tenants[0].maker
    close_due(maker, PARALLEL, at("2026-11-01T02:00:00"))  # October, for all
    broken = tenants[2].tenant_id
    with maker() as s:  # its prices, damaged in the database behind the API's checks
        s.execute(update(BillingProfile).where(BillingProfile.tenant_id == broken).values(
            prices=[{"unit": "Hybrid", "plan": "standard", "price": "five"}]))
        s.commit()
    result = close_due(maker, PARALLEL, DECEMBER)
    assert [(t, m) for t, m, _ in result.failed] == [(broken, "2026-11")]
    assert sorted(t for t, m, _ in result.closed) == sorted(
        h.tenant_id for h in tenants if h.tenant_id != broken)
    # The scheduler's pass tells a person: the tenant's month_close_failed condition.
    scheduler.run_due(maker, PARALLEL, clock=lambda: DECEMBER)
    with maker() as s:
        raised = s.scalars(select(NotifyCondition.tenant_id).where(
            NotifyCondition.kind == "month_close_failed",
            NotifyCondition.cleared_at.is_(None))).all()
    assert raised == [broken]


def test_a_waiting_month_keeps_the_tenants_later_months_open(engine: Engine) -> None:
    tenants = fleet(engine, 4)
    waiting = tenants[1].tenant_id
    with tenants[1].maker() as s:  # synced from Entra, no round since 1 November
        s.get(Tenant, waiting).entra_sync = True
        s.add(SyncRun(tenant_id=waiting, kind="incremental", status="succeeded",
                      trigger="schedule", started_at=at("2026-10-31T23:00:00"),
                      finished_at=at("2026-10-31T23:10:00"), pages=1, counts={}))
        s.commit()
    result = close_due(tenants[0].maker, PARALLEL, DECEMBER)
    assert [(t, m) for t, m, _ in result.waiting] == [(waiting, "2026-10")]
    assert "Entra sync round" in result.waiting[0][2]
    closed = hashes(engine)
    assert not any(t == waiting for t, _ in closed)  # November too stays open
    assert len(closed) == 6 and result.failed == []


def test_two_passes_at_once_close_each_month_once(engine: Engine) -> None:
    tenants = fleet(engine, 8)
    results: list[DueResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(close_due(tenants[0].maker, PARALLEL, DECEMBER))
        except BaseException as exc:  # noqa: BLE001 - shown by the assertion below
            errors.append(exc)

    passes = [threading.Thread(target=run) for _ in range(2)]
    for p in passes:
        p.start()
    for p in passes:
        p.join(120)
    assert errors == [] and len(results) == 2
    with make_sessionmaker(engine)() as s:
        rows = s.execute(select(BillingClose.tenant_id, BillingClose.month, func.count())
                         .where(BillingClose.state != "superseded")
                         .group_by(BillingClose.tenant_id, BillingClose.month)).all()
    assert len(rows) == 16 and all(n == 1 for _, _, n in rows)
    created = [(t, m) for r in results for t, m, o in r.closed if o.created]
    assert sorted(created) == sorted((t, m) for t, m, _ in rows)
    assert all(r.failed == [] for r in results)


class Jobs:
    """Records what is scheduled, as APScheduler's add_job takes it."""

    def __init__(self) -> None:
        self.added: list[tuple[object, dict[str, object]]] = []

    def add_job(self, func: object, trigger: str, **kwargs: object) -> None:
        assert trigger == "date"
        self.added.append((func, kwargs))


def test_a_pass_runs_when_the_next_collection_window_ends(engine: Engine) -> None:
    utc = History(engine, "2026-10-01T00:00:00", "UTC")
    History(engine, "2026-10-01T00:00:00", "Kolkata", time_zone="Asia/Kolkata")
    utc.create("2026-10-02T10:00:00", "a@x.io", modules=("Hybrid",))
    settings = BillingSettings()  # a window of 60 minutes
    # Kolkata's November begins at 18:30 UTC on 31 October: its window ends at 19:30.
    assert scheduler.next_window_end(utc.maker, settings, at("2026-10-31T12:00:00")) == \
        at("2026-10-31T19:30:00")
    # Between Kolkata's window end and UTC's midnight: UTC's window, at 01:00.
    assert scheduler.next_window_end(utc.maker, settings, at("2026-10-31T20:00:00")) == \
        at("2026-11-01T01:00:00")
    jobs = Jobs()
    clock = [at("2026-10-31T20:00:00")]
    run_at = scheduler.plan_window_pass(jobs, utc.maker, settings, lambda: clock[0])
    assert run_at == at("2026-10-31T21:00:00")  # replanned within the hour at the latest
    clock[0] = at("2026-11-01T00:30:00")
    scheduler.run_at_window_end(jobs, utc.maker, settings, lambda: clock[0])
    assert hashes(engine) == {}  # no window ended: nothing closed, the next one planned
    assert jobs.added[-1][1]["run_date"] == at("2026-11-01T01:00:05")
    clock[0] = at("2026-11-01T01:00:05")
    scheduler.run_at_window_end(jobs, utc.maker, settings, lambda: clock[0])
    assert sorted(m for _, m in hashes(engine)) == ["2026-10", "2026-10"]
    assert jobs.added[-1][1]["id"] == scheduler.WINDOW_JOB
