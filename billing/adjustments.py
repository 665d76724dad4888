"""Late adjustments: what a close learned about earlier closed months.

    late events since the last close ──> late users of each earlier closed month
        └─ within `adjustment_months`: refold them, and where that bills differently
           from what was billed so far, a reversal and the corrected line (rows of
           billing_adjustments) and their invoice lines at that month's prices
        └─ older: only reported (the close's report, `lateUnadjusted`)

A closed month never changes; its corrections land on the invoice of the close that
learned them, once.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing import invoice as inv
from billing import reader
from billing.fold import fold_month
from billing.lines import SEP, line_decision
from billing.planning import CloseInputs, inputs_of
from billing.policies import Decision, decide_user
from connector.config import BillingSettings
from connector.models import Activity, BillingAdjustment, BillingClose, BillingLine

REPORTED_USERS = 100  # late users of months out of reach listed in a close's report


def closed_before(s: Session, inputs: CloseInputs) -> list[BillingClose]:
    """Return the tenant's closed months before this one, latest first."""
    return list(s.scalars(
        select(BillingClose).where(BillingClose.tenant_id == inputs.tenant_id,
                                   BillingClose.state == "closed",
                                   BillingClose.month < str(inputs.month))
        .order_by(BillingClose.month.desc())))


def late_adjustments(s: Session, inputs: CloseInputs, settings: BillingSettings,
                     close_id: int, now: dt.datetime, earlier: list[BillingClose],
                     learned: list[reader.LateEvent]
                     ) -> tuple[list[dict[str, Any]], list[inv.Line], dict[str, Any]]:
    """Return the adjustment rows and invoice lines for what was learned, since they
    closed, about the last `adjustment_months` closed months before this one, and the
    close's report; older months' late events are only reported.

    `learned` holds what was recorded since the last close (`earlier[0]`): whatever
    came before it, that close (and those before it) already adjusted or reported, and
    a month never comes back into the look-back once it left it."""
    rows: list[dict[str, Any]] = []
    lines: list[inv.Line] = []
    report: dict[str, Any] = {"notes": list(inputs.notes), "lateUnadjusted": [],
                              "lateUnadjustedUsers": 0}
    since = earlier[0].cutoff if earlier else None
    for index, past in enumerate(earlier):
        late = _late_users(s, past, inputs.cutoff, since, learned)
        if not late:
            continue
        why = _correction_reasons(past, learned)
        if index >= settings.adjustment_months:
            _report_unadjusted(report, past, late, why)
            continue
        month_rows, month_lines = _correct_month(s, past, late, inputs.cutoff, close_id, now,
                                                 why)
        rows += month_rows
        lines += month_lines
    return rows, lines, report


def _report_unadjusted(report: dict[str, Any], past: BillingClose,
                       late: Mapping[str, set[str]], why: Mapping[str, set[str]]) -> None:
    # Counted in full, listed up to REPORTED_USERS over all months.
    report["lateUnadjustedUsers"] += len(late)
    room = REPORTED_USERS - len(report["lateUnadjusted"])
    for uid, kinds in sorted(late.items())[:max(room, 0)]:
        entry = {"month": past.month, "userId": uid, "kinds": sorted(kinds)}
        if why.get(uid):
            entry["reasons"] = sorted(why[uid])
        report["lateUnadjusted"].append(entry)


def _correction_reasons(past: BillingClose, learned: list[reader.LateEvent]
                        ) -> dict[str, set[str]]:
    """The reasons partner admins gave for the corrections of `past`, per user."""
    why: dict[str, set[str]] = {}
    for event in learned:
        if (event.reason and event.user_id is not None and event.recorded_at > past.cutoff
                and event.effective_at < past.window_end):
            why.setdefault(event.user_id, set()).add(event.reason)
    return why


def _late_users(s: Session, past: BillingClose, cutoff: dt.datetime,
                since: dt.datetime | None, learned: list[reader.LateEvent]
                ) -> dict[str, set[str]]:
    """Users with something recorded after `past` closed (its cut-off) and since the
    last close, before this close's cut-off, that happened before `past` ended: what
    they are, per user."""
    late: dict[str, set[str]] = {}
    group_changed = False
    for event in learned:
        if event.recorded_at <= past.cutoff or event.effective_at >= past.window_end:
            continue
        if event.user_id is None:
            group_changed = True
        else:
            late.setdefault(event.user_id, set()).add(event.kind)
    if group_changed:
        # A group's modules changed late: every member of the month may be affected.
        for uid in s.scalars(select(BillingLine.user_id).where(
                BillingLine.close_id == past.id)):
            late.setdefault(uid, set()).add("group.modules")
    if past.inputs.get("policy") == "monthly_active":
        after = max(past.cutoff, since) if since is not None else past.cutoff
        for (uid,) in s.execute(select(Activity.user_id).where(
                Activity.tenant_id == past.tenant_id, Activity.recorded_at > after,
                Activity.recorded_at <= cutoff, Activity.occurred_at >= past.window_start,
                Activity.occurred_at < past.window_end).distinct()):
            late.setdefault(uid, set()).add("activity")
    return late


def _correct_month(s: Session, past: BillingClose, late: Mapping[str, set[str]],
                   cutoff: dt.datetime, close_id: int, now: dt.datetime,
                   why: Mapping[str, set[str]]
                   ) -> tuple[list[dict[str, Any]], list[inv.Line]]:
    """Refold `past` for the late users with what is known now; where that bills
    differently from what was billed so far, a reversal and the corrected line, and
    their invoice lines at that month's prices."""
    inputs = inputs_of(past)
    scope = inputs.scope(cutoff)
    groups = reader.group_modules(s, scope)
    ids = sorted(late)
    facts = reader.facts_of(s, scope, ids)
    billed = _billed_so_far(s, past, ids, now)
    rows = []
    quantities: Counter[inv.Key] = Counter()
    first_day = inputs.month.first_day()
    window = reader.comparable(s.get_bind().dialect.name, inputs.window)
    for uid in ids:
        month = fold_month(uid, facts.get(uid, []), window, groups)
        corrected = decide_user(inputs.policy, month, first_day, inputs.trial_ends_on)
        before, name = billed.get(uid, (None, month.end.user_name))
        reason = (f"late: {', '.join(sorted(late[uid]))} recorded after {past.month} closed"
                  + "".join(f"; correction: {text}" for text in sorted(why.get(uid, ()))))
        for adj in inv.adjustments_for(past.month, before, corrected, reason):
            amount = Decimal("0.00")
            for unit in adj.units:
                key = (unit, adj.audience, adj.plan)
                quantities[key] += adj.sign
                amount += inv.price_line(key, adj.sign, inputs.prices, inputs.non_profit).amount
            rows.append({"close_id": close_id, "tenant_id": past.tenant_id,
                         "month": past.month, "user_id": uid,
                         "user_name": name or month.end.user_name, "sign": adj.sign,
                         "units": SEP.join(adj.units), "audience": adj.audience,
                         "plan": adj.plan, "reason": adj.reason, "amount": str(amount)})
    return rows, _invoice_lines(past.month, inputs, quantities)


def _invoice_lines(month: str, inputs: CloseInputs, quantities: Mapping[inv.Key, int]
                   ) -> list[inv.Line]:
    """The invoice's adjustment lines for one earlier month, at that month's prices."""
    lines = []
    for key, quantity in sorted(quantities.items()):
        if quantity:
            line = inv.price_line(key, quantity, inputs.prices, inputs.non_profit, month)
            lines.append(inv.Line(f"Adjustment {month}: {line.description}", line.unit,
                                  line.audience, line.plan, quantity, line.unit_price,
                                  line.amount, line.priced, month))
    return lines


def _billed_so_far(s: Session, past: BillingClose, ids: list[str], now: dt.datetime
                   ) -> dict[str, tuple[Decision | None, str]]:
    """What each user is billed for `past` now: its line, or the latest adjustment a
    close after it issued (a +1 line, or nothing after a lone reversal)."""
    billed: dict[str, tuple[Decision | None, str]] = {}
    issued_after = select(BillingClose.id).where(
        BillingClose.tenant_id == past.tenant_id, BillingClose.state != "building",
        BillingClose.closed_at > past.closed_at, BillingClose.closed_at <= now)
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        for line in s.scalars(select(BillingLine).where(BillingLine.close_id == past.id,
                                                        BillingLine.user_id.in_(part))):
            billed[line.user_id] = (line_decision(line), line.user_name)
        for adj in s.scalars(select(BillingAdjustment).where(
                BillingAdjustment.tenant_id == past.tenant_id,
                BillingAdjustment.month == past.month, BillingAdjustment.user_id.in_(part),
                BillingAdjustment.close_id.in_(issued_after))
                .order_by(BillingAdjustment.id)):
            units = tuple(filter(None, adj.units.split(SEP)))
            billed[adj.user_id] = (
                Decision(adj.user_id, True, "adjusted", adj.plan, adj.audience, units, units)
                if adj.sign > 0 else None, adj.user_name)
    return billed
