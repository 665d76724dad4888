"""Read models for the billing pages and API: the live overview, closed months, lines."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, select, union
from sqlalchemy.orm import Session

from billing.calendar import Month
from billing.lines import SEP
from billing.planning import NotDue, plan_close
from connector.browse import Page
from connector.config import BillingSettings
from connector.models import (
    BillingAdjustment,
    BillingClose,
    BillingLine,
    GroupModule,
    Membership,
    Tenant,
    User,
    UserModule,
)
from connector.text import digits


def live_overview(session: Session, tenant_id: str) -> dict[str, Any]:
    """The quick overview (seed 004): active users per module, regular and guest, from
    the current state (effective modules: own ∪ groups'), in two statements."""
    own = select(UserModule.user_id.label("uid"), UserModule.module.label("module")).where(
        UserModule.tenant_id == tenant_id)
    via = (select(Membership.member_id.label("uid"), GroupModule.module.label("module"))
           .join(GroupModule, and_(GroupModule.tenant_id == Membership.tenant_id,
                                   GroupModule.group_id == Membership.group_id))
           .where(Membership.tenant_id == tenant_id))
    assigned = union(own, via).subquery()
    live_active = and_(User.tenant_id == tenant_id, User.removed_at.is_(None),
                       User.active.is_(True))
    rows = session.execute(
        select(assigned.c.module, User.guest, func.count())
        .join(User, and_(User.tenant_id == tenant_id, User.id == assigned.c.uid))
        .where(live_active).group_by(assigned.c.module, User.guest))
    modules: dict[str, dict[str, int]] = {}
    for module, guest, count in rows:
        modules.setdefault(module, {"regular": 0, "guest": 0})["guest" if guest else
                                                               "regular"] = int(count)
    people = session.execute(
        select(User.guest, User.active, func.count()).where(
            User.tenant_id == tenant_id, User.removed_at.is_(None))
        .group_by(User.guest, User.active))
    users = {"regular": 0, "guest": 0, "inactive": 0}
    for guest, active, count in people:
        if active:
            users["guest" if guest else "regular"] += int(count)
        else:
            users["inactive"] += int(count)
    return {"modules": [{"module": m, **c} for m, c in sorted(modules.items())],
            "activeUsers": users}


def closed_months(session: Session, tenant_id: str) -> list[BillingClose]:
    """The tenant's closed months, newest first (the current version of each)."""
    return list(session.scalars(select(BillingClose).where(
        BillingClose.tenant_id == tenant_id, BillingClose.state == "closed")
        .order_by(BillingClose.month.desc())))


def months_awaiting_close(session: Session, tenant: Tenant, settings: BillingSettings,
                          now: dt.datetime, closed: Sequence[BillingClose],
                          limit: int = 12) -> list[tuple[str, str]]:
    """The months that have ended but are not closed (yet), newest first, each with why
    (its collection window, a pending Entra round, or due at the close job's next pass):
    until then its numbers are not final, and the page must not let it pass for closed
    nor leave it out unsaid. At most `limit` (the scheduler being down for years)."""
    done = {c.month for c in closed}
    month = Month.containing(now, tenant.time_zone).previous()
    first = Month.containing(tenant.created_at, tenant.time_zone)
    waiting: list[tuple[str, str]] = []
    while len(waiting) < limit and month.first_day() >= first.first_day():
        ended_before_closing = (tenant.closed_at is not None
                                and month.start(tenant.time_zone) > tenant.closed_at)
        if str(month) not in done and not ended_before_closing:
            try:
                plan_close(session, tenant, month, settings, now)
                why = ("Due: the close job (every "
                       f"{settings.close_check_minutes} minutes) closes it on its next pass.")
            except NotDue as exc:
                why = str(exc)
            waiting.append((str(month), why))
        month = month.previous()
    return waiting


def month_versions(session: Session, tenant_id: str, month: str) -> list[BillingClose]:
    return list(session.scalars(select(BillingClose).where(
        BillingClose.tenant_id == tenant_id, BillingClose.month == month,
        BillingClose.state != "building").order_by(BillingClose.version)))


def pick_version(versions: Sequence[BillingClose], asked: str) -> BillingClose | None:
    """The version of a month `asked` names ("": the standing one, the last), or None if
    the month has no such version."""
    if not asked:
        return versions[-1] if versions else None
    if not digits(asked):
        return None
    return next((v for v in versions if v.version == int(asked)), None)


def lines_page(session: Session, close_id: int, page: int, per_page: int,
               billable: bool | None = None, search: str = "") -> Page:
    """A close's per-user lines in user name order, filtered, one page."""
    where = [BillingLine.close_id == close_id]
    if billable is not None:
        where.append(BillingLine.billable.is_(billable))
    if search:
        escaped = search.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(func.lower(BillingLine.user_name).like(f"%{escaped}%", escape="\\"))
    total = session.scalar(select(func.count()).select_from(BillingLine).where(*where)) or 0
    rows = session.scalars(select(BillingLine).where(*where)
                           .order_by(BillingLine.user_name, BillingLine.user_id)
                           .offset((page - 1) * per_page).limit(per_page))
    return Page([line_json(r) for r in rows], int(total), page, per_page, False)


def line_json(line: BillingLine) -> dict[str, Any]:
    return {"userId": line.user_id, "userName": line.user_name, "billable": line.billable,
            "reason": line.reason, "plan": line.plan, "audience": line.audience,
            "modules": _split(line.modules), "units": _split(line.units)}


def adjustments_of(session: Session, close_id: int) -> list[BillingAdjustment]:
    return list(session.scalars(select(BillingAdjustment).where(
        BillingAdjustment.close_id == close_id).order_by(BillingAdjustment.id)))


def adjustment_json(a: BillingAdjustment) -> dict[str, Any]:
    return {"month": a.month, "userId": a.user_id, "userName": a.user_name, "sign": a.sign,
            "units": _split(a.units), "audience": a.audience, "plan": a.plan,
            "reason": a.reason, "amount": a.amount}


def close_json(close: BillingClose) -> dict[str, Any]:
    return {"tenantId": close.tenant_id, "month": close.month, "version": close.version,
            "state": close.state, "closedAt": close.closed_at.isoformat()
            if close.closed_at else None, "closedBy": close.closed_by, "reason": close.reason,
            "hash": close.content_hash, "cutoff": close.cutoff.isoformat(),
            "windowStart": close.window_start.isoformat(),
            "windowEnd": close.window_end.isoformat(), "usersCounted": close.users_counted,
            "usersBillable": close.users_billable, "totals": close.totals,
            "invoice": close.invoice, "inputs": close.inputs, "report": close.report}


def history_series(closes: Sequence[BillingClose]) -> list[dict[str, Any]]:
    """Oldest first: month, billable users, total amount, for the history chart."""
    return [{"month": c.month, "billable": c.users_billable,
             "total": (c.invoice or {}).get("total", "0.00")} for c in reversed(closes)]


def _split(text: str) -> list[str]:
    return [part for part in text.split(SEP) if part]

