"""Catch up: close every month that is due, for every tenant, oldest first.

    due_months(tenant) ──> months whose collection window is over, not closed yet
    close_due ──> close_month each, in order; a tenant stops at its first NotDue or
                  failure, the others go on (DueResult: closed, waiting, failed)

What the scheduler's close job runs (billing.scheduler), and `connector billing
close-due`; after downtime, every missed month closes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from billing.calendar import Month
from billing.close import Outcome, close_month
from billing.planning import NotDue
from connector import metrics
from connector.config import BillingSettings
from connector.models import BillingClose, Tenant


def first_month(tenant: Tenant) -> Month:
    """Return the first month a tenant can be billed for: the one it was created in."""
    return Month.containing(tenant.created_at, tenant.time_zone)


def due_months(session: Session, tenant: Tenant, settings: BillingSettings,
               now: dt.datetime) -> list[Month]:
    """Return the months of the tenant whose collection window is over and that are not
    closed, in order: after downtime, every missed month."""
    closed = set(session.scalars(select(BillingClose.month).where(
        BillingClose.tenant_id == tenant.id, BillingClose.state == "closed")))
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
    """What a catch-up pass did: the months it closed, and those waiting or failed (why)."""

    closed: list[tuple[str, str, Outcome]] = field(default_factory=list)
    waiting: list[tuple[str, str, str]] = field(default_factory=list)  # tenant, month, why
    failed: list[tuple[str, str, str]] = field(default_factory=list)


def close_due(maker: sessionmaker[Session], settings: BillingSettings, now: dt.datetime,
              tenant_ids: list[str] | None = None, actor: str = "scheduler",
              progress: Callable[[str, str, int, int], None] | None = None) -> DueResult:
    """Close every due month of every tenant, oldest first; a tenant's later months wait
    while an earlier one is not due (its Entra round is pending), so months always close
    in order and adjustments land where an on-time close would have put them."""
    result = DueResult()
    for tenant_id, months in _plan(maker, settings, now, tenant_ids, result):
        for month in months:
            report = (lambda done, total, t=tenant_id, m=str(month):
                      progress(t, m, done, total)) if progress else None
            try:
                outcome = close_month(maker, tenant_id, month, settings, now, actor,
                                      progress=report)
            except NotDue as exc:
                result.waiting.append((tenant_id, str(month), str(exc)))
                break
            except Exception as exc:  # noqa: BLE001 - one tenant's failure stops only it
                result.failed.append((tenant_id, str(month), f"{type(exc).__name__}: {exc}"))
                break
            result.closed.append((tenant_id, str(month), outcome))
    return result


def _plan(maker: sessionmaker[Session], settings: BillingSettings, now: dt.datetime,
          tenant_ids: list[str] | None, result: DueResult) -> list[tuple[str, list[Month]]]:
    """Each tenant's due months, tenants in the order they were created; a tenant whose
    months cannot be listed (e.g. a zone the system lacks) goes to `result.failed`."""
    plan: list[tuple[str, list[Month]]] = []
    with maker() as s:
        tenants = [t for t in s.scalars(select(Tenant).order_by(Tenant.created_at, Tenant.id))
                   if tenant_ids is None or t.id in tenant_ids]
        for tenant in tenants:
            try:
                plan.append((tenant.id, due_months(s, tenant, settings, now)))
            except Exception as exc:  # noqa: BLE001 - e.g. a zone the system lacks
                result.failed.append((tenant.id, "", f"{type(exc).__name__}: {exc}"))
                metrics.month_close("failed", None)
    return plan
