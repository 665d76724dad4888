"""Catch up: close every month that is due, for every tenant, oldest first.

    _plans ──> tenants in keyset batches, each with its due months (one query a batch)
    close_due ──> serial, or a bounded pool of spawned processes
                  (billing.close_parallel_tenants, each with its own engine): tenants
                  side by side, each tenant's months in order by one worker; a tenant
                  stops at its first NotDue or failure, the others go on (DueResult:
                  closed, waiting, failed, in tenant order whatever finished first)

What the scheduler's close job runs (billing.scheduler), and `connector billing
close-due`; after downtime, every missed month closes. Exactly once holds as for one
close (billing.close: the unique key on tenant, month, version), so two passes may run
at once, in one process or several.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Select, func, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from billing.batch import BATCH_TENANTS, close_batch
from billing.calendar import Month
from billing.close import Outcome, close_month, sweep_dead_attempts
from billing.planning import NotDue
from connector import db, logs, metrics
from connector.config import BillingSettings, DatabaseSettings
from connector.models import BillingClose, Tenant

log = logging.getLogger("connector.billing")
PLAN_BATCH = 500  # tenants planned per query: the pass never holds every tenant's rows
MAX_AUTO_PARALLEL = 8
_PROCESS: dict[str, Any] = {}  # a close process's session maker


def first_month(tenant: Tenant) -> Month:
    """Return the first month a tenant can be billed for: the one it was created in."""
    return Month.containing(tenant.created_at, tenant.time_zone)


def due_months(session: Session, tenant: Tenant, settings: BillingSettings,
               now: dt.datetime) -> list[Month]:
    """Return the months of the tenant whose collection window is over and that are not
    closed, in order: after downtime, every missed month."""
    closed = set(session.scalars(select(BillingClose.month).where(
        BillingClose.tenant_id == tenant.id, BillingClose.state == "closed")))
    return _due(tenant, closed, settings, now)


def _due(tenant: Tenant, closed: set[str], settings: BillingSettings,
         now: dt.datetime) -> list[Month]:
    grace = dt.timedelta(minutes=settings.grace_minutes)
    months, month = [], first_month(tenant)
    while month.end(tenant.time_zone) + grace <= now:
        if tenant.closed_at is not None and month.start(tenant.time_zone) > tenant.closed_at:
            break  # closed: the month it was closed in is its last
        if str(month) not in closed:
            months.append(month)
        month = month.next()
    return months


@dataclass
class DueResult:
    """What a catch-up pass did: the months it closed, and those waiting or failed (why);
    `seconds`: how long each tenant with due months took (its months, in order)."""

    closed: list[tuple[str, str, Outcome]] = field(default_factory=list)
    waiting: list[tuple[str, str, str]] = field(default_factory=list)  # tenant, month, why
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: list[tuple[str, float]] = field(default_factory=list)

    def add(self, other: DueResult) -> None:
        self.closed += other.closed
        self.waiting += other.waiting
        self.failed += other.failed
        self.seconds += other.seconds


UserProgress = Callable[[str, str, int, int], None]  # tenant, month, users done, of
TenantProgress = Callable[[int, int], None]  # tenants done, of


def parallel_tenants(settings: BillingSettings, maker: sessionmaker[Session]) -> int:
    """How many tenants a pass closes side by side: 1 on SQLite (one writer: see
    docs/billing.md, "Fleet closes"); on PostgreSQL the setting, or by default two per
    CPU (at most 8), each in a process of its own."""
    if _engine(maker).dialect.name != "postgresql":
        return 1
    return max(1, settings.close_parallel_tenants or min(2 * (os.cpu_count() or 1),
                                                         MAX_AUTO_PARALLEL))


def _engine(maker: sessionmaker[Session]) -> Engine:
    bind = maker.kw["bind"]
    return bind if isinstance(bind, Engine) else bind.engine


def close_due(maker: sessionmaker[Session], settings: BillingSettings, now: dt.datetime,
              tenant_ids: list[str] | None = None, actor: str = "scheduler",
              progress: UserProgress | None = None,
              tenants_progress: TenantProgress | None = None) -> DueResult:
    """Close every due month of every tenant, oldest first; a tenant's later months wait
    while an earlier one is not due (its Entra round is pending), so months always close
    in order and adjustments land where an on-time close would have put them. Tenants
    close side by side (`parallel_tenants`); the result lists them in the order they
    were created, as a serial pass would."""
    planned = DueResult()  # tenants whose months could not be listed
    swept = sweep_dead_attempts(maker, settings, now)
    if swept:  # what a process killed mid-close left: its months close again below
        logs.log(log, logging.WARNING, "billing: deleted the attempts of closes whose "
                 "process died mid-way", attempts=swept)
    total = _count(maker, tenant_ids)
    workers = parallel_tenants(settings, maker)
    done = 0

    def finished(part: DueResult) -> None:
        nonlocal done
        done += 1
        if tenants_progress:
            tenants_progress(done, total)

    plans = _plans(maker, settings, now, tenant_ids, planned)
    # Results are merged in plan order: the same lists, in the same order, as serially.
    parts: dict[int, DueResult] = {}
    if workers == 1:
        for jobs in _jobs(plans):
            for (index, _, _), part in zip(jobs, _close_jobs(
                    maker, jobs, settings, now, actor, progress), strict=True):
                parts[index] = part
                finished(part)
        return _merged(parts, planned)
    # The close processes connect as this one does (PgBouncer included), with a small pool.
    database = dataclasses.replace(db.settings_of(_engine(maker)), pool_size=2)
    context = multiprocessing.get_context("spawn")  # nothing of this process inherited
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_process_start,
                             initargs=(database, os.getpid())) as pool:
        pending: dict[Future[list[DueResult]], list[Job]] = {}

        def settle(block: bool) -> None:
            ready, _ = wait(pending, return_when=FIRST_COMPLETED) if block else (
                [f for f in pending if f.done()], None)
            for future in ready:
                jobs = pending.pop(future)
                try:
                    done = future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. a close process killed
                    done = [DueResult(failed=[(tenant_id, str(months[0]),
                                               f"{type(exc).__name__}: {exc}")])
                            for _, tenant_id, months in jobs]
                for (index, _, _), part in zip(jobs, done, strict=True):
                    parts[index] = part
                    finished(part)

        for jobs in _jobs(plans):
            if not jobs[0][2]:  # nothing due
                parts[jobs[0][0]] = DueResult()
                finished(parts[jobs[0][0]])
                continue
            while len(pending) >= 2 * workers:  # a bounded queue: bounded memory
                settle(block=True)
            pending[pool.submit(_close_jobs_in_process, jobs, settings, now, actor)] = jobs
            settle(block=False)
        while pending:
            settle(block=True)
    return _merged(parts, planned)


Job = tuple[int, str, list[Month]]  # (index in plan order, tenant, its due months)


def _jobs(plans: Iterator[tuple[str, list[Month]]]) -> Iterator[list[Job]]:
    """The plan's tenants as units of work: a tenant with one month due goes in a batch
    of up to `BATCH_TENANTS` with that month due (billing.batch closes them together);
    any other (several months due, or none) alone."""
    batches: dict[str, list[Job]] = {}
    for index, (tenant_id, months) in enumerate(plans):
        if len(months) != 1:
            yield [(index, tenant_id, months)]
            continue
        batch = batches.setdefault(str(months[0]), [])
        batch.append((index, tenant_id, months))
        if len(batch) >= BATCH_TENANTS:
            yield batches.pop(str(months[0]))
    yield from batches.values()


def _merged(parts: dict[int, DueResult], planned: DueResult) -> DueResult:
    result = DueResult()
    for index in sorted(parts):
        result.add(parts[index])
    result.failed[:0] = planned.failed  # planning failures are listed first
    return result


def _process_start(database: DatabaseSettings, parent: int) -> None:
    engine = db.make_engine(database)
    _PROCESS["maker"] = db.make_sessionmaker(engine, writes=True)
    # A pass killed (kill -9, the OOM killer) cannot shut its pool down, and the pool's
    # queue never reports the end to its processes: they follow their parent instead
    # (`parent` from the parent itself: it may be gone before this runs).
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _close_jobs_in_process(jobs: list[Job], settings: BillingSettings, now: dt.datetime,
                           actor: str) -> list[DueResult]:
    return _close_jobs(_PROCESS["maker"], jobs, settings, now, actor, None)


def _close_jobs(maker: sessionmaker[Session], jobs: list[Job], settings: BillingSettings,
                now: dt.datetime, actor: str, progress: UserProgress | None
                ) -> list[DueResult]:
    """Close a unit of work (`_jobs`): a batch together (billing.batch), then whichever
    of its tenants the batch handed back, and a lone tenant, one by one. One result
    per tenant, in the jobs' order; never raises."""
    if len(jobs) == 1:
        _, tenant_id, months = jobs[0]
        return [_close_tenant(maker, tenant_id, months, settings, now, actor, progress)]
    month = jobs[0][2][0]
    started = time.perf_counter()
    try:
        closed = close_batch(maker, [t for _, t, _ in jobs], month, settings, now,
                             actor).closed
    except Exception:  # noqa: BLE001 - the batch's reads failed: each tenant alone says why
        log.exception("billing: a batch of closes failed; its tenants close one by one")
        closed = {}
    seconds = time.perf_counter() - started
    results = []
    for _, tenant_id, months in jobs:
        close = closed.get(tenant_id)
        if close is None:
            results.append(_close_tenant(maker, tenant_id, months, settings, now, actor,
                                         progress))
            continue
        metrics.month_close("closed", seconds)
        if progress:
            progress(tenant_id, str(month), close.users_counted, close.users_counted)
        outcome = Outcome(close, True, 0, {"users": close.users_counted,
                                           "billable": close.users_billable})
        results.append(DueResult(closed=[(tenant_id, str(month), outcome)],
                                 seconds=[(tenant_id, seconds)]))
    return results


def _close_tenant(maker: sessionmaker[Session], tenant_id: str, months: list[Month],
                  settings: BillingSettings, now: dt.datetime, actor: str,
                  progress: UserProgress | None) -> DueResult:
    """Close one tenant's due months in order; stop at the first not due or failed.
    Never raises: a failure is this tenant's alone."""
    out = DueResult()
    if not months:
        return out
    started = time.perf_counter()
    for month in months:
        report = (lambda done, total, t=tenant_id, m=str(month):
                  progress(t, m, done, total)) if progress else None
        try:
            outcome = close_month(maker, tenant_id, month, settings, now, actor,
                                  progress=report)
        except NotDue as exc:
            out.waiting.append((tenant_id, str(month), str(exc)))
            break
        except Exception as exc:  # noqa: BLE001 - one tenant's failure stops only it
            out.failed.append((tenant_id, str(month), f"{type(exc).__name__}: {exc}"))
            break
        out.closed.append((tenant_id, str(month), outcome))
    out.seconds.append((tenant_id, time.perf_counter() - started))
    return out


def _tenants(tenant_ids: list[str] | None) -> Select[Tenant]:
    query = select(Tenant)
    return query if tenant_ids is None else query.where(Tenant.id.in_(tenant_ids))


def _count(maker: sessionmaker[Session], tenant_ids: list[str] | None) -> int:
    with maker() as s:
        return int(s.scalar(select(func.count()).select_from(
            _tenants(tenant_ids).subquery())) or 0)


def _plans(maker: sessionmaker[Session], settings: BillingSettings, now: dt.datetime,
           tenant_ids: list[str] | None, result: DueResult
           ) -> Iterator[tuple[str, list[Month]]]:
    """Each tenant's due months, tenants in the order they were created, read
    `PLAN_BATCH` tenants at a time (keyset), their closed months in one query a batch;
    a tenant whose months cannot be listed (e.g. a zone the system lacks) goes to
    `result.failed` (and comes with no months)."""
    after: tuple[dt.datetime, str] | None = None
    while True:
        with maker() as s:
            query = _tenants(tenant_ids).order_by(Tenant.created_at, Tenant.id)
            if after is not None:
                query = query.where(tuple_(Tenant.created_at, Tenant.id) > after)
            tenants = list(s.scalars(query.limit(PLAN_BATCH)))
            if not tenants:
                return
            closed: dict[str, set[str]] = {}
            for tenant_id, month in s.execute(select(BillingClose.tenant_id,
                                                     BillingClose.month).where(
                    BillingClose.tenant_id.in_([t.id for t in tenants]),
                    BillingClose.state == "closed")):
                closed.setdefault(tenant_id, set()).add(month)
            batch = []
            for tenant in tenants:
                try:
                    batch.append((tenant.id, _due(tenant, closed.get(tenant.id, set()),
                                                  settings, now)))
                except Exception as exc:  # noqa: BLE001 - e.g. a zone the system lacks
                    result.failed.append((tenant.id, "", f"{type(exc).__name__}: {exc}"))
                    metrics.month_close("failed", None)
                    batch.append((tenant.id, []))
            after = (tenants[-1].created_at, tenants[-1].id)
        yield from batch
