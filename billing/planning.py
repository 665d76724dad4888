"""Plan a month's close: the inputs it freezes, or why it is not due yet.

    plan_close ──> CloseInputs (window, cut-off, policy, prices, billing info, notes)
               └─> NotDue (the collection window is open, or an Entra round is pending)
    inputs_of(close) ──> the CloseInputs a stored close froze, to refold it as it was

Everything a close reads besides the logs is in its inputs, which go into its hash.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing import invoice as inv
from billing import reader
from billing.calendar import Month, Window
from billing.policies import POLICIES, Policy
from billing.profiles import load_profile
from billing.snapshot import ENGINE_VERSION
from connector import sync_status
from connector.config import BillingSettings
from connector.models import BillingClose, BillingProfile, Tenant


class NotDue(Exception):
    """The month cannot be closed yet; the message says why and until when."""

    def __init__(self, message: str, retry_at: dt.datetime | None = None):
        super().__init__(message)
        self.retry_at = retry_at


class BeforeTenant(NotDue):
    """The month ended before the tenant existed: it is never closed (a closed month
    is forever)."""


@dataclass(frozen=True)
class CloseInputs:
    """Everything a close reads besides the logs: frozen into the close and its hash."""

    tenant_id: str
    month: Month
    window: Window
    cutoff: dt.datetime
    policy: Policy
    prices: Mapping[tuple[str, str], Decimal]
    trial_ends_on: dt.date | None
    non_profit: bool
    po_number: str
    info: Mapping[str, str]
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "engineVersion": ENGINE_VERSION, "tenantId": self.tenant_id,
            "month": str(self.month), "timeZone": self.window.tz,
            "windowStart": self.window.start.isoformat(),
            "windowEnd": self.window.end.isoformat(), "cutoff": self.cutoff.isoformat(),
            "policy": self.policy.name, "policyVersion": self.policy.version,
            "prices": inv.prices_as_json(self.prices),
            "trialEndsOn": self.trial_ends_on.isoformat() if self.trial_ends_on else None,
            "nonProfit": self.non_profit, "poNumber": self.po_number,
            "billingInfo": dict(self.info), "notes": list(self.notes)}

    def scope(self, cutoff: dt.datetime | None = None) -> reader.Scope:
        return reader.Scope(self.tenant_id, self.window.start, self.window.end,
                            cutoff or self.cutoff, self.policy.name == "monthly_active")


def plan_close(session: Session, tenant: Tenant, month: Month, settings: BillingSettings,
               now: dt.datetime, cutoff: dt.datetime | None = None,
               profile: BillingProfile | None = None) -> CloseInputs:
    """Return the inputs of closing `month` now, or raise NotDue saying why not yet.
    `profile`: the tenant's billing info, when the caller has read it (a batch of
    tenants' at once, billing.batch)."""
    window = month.window(tenant.time_zone)
    if window.end <= tenant.created_at:
        first = Month.containing(tenant.created_at, tenant.time_zone)
        raise BeforeTenant(f"{month} ended before tenant {tenant.name!r} was created "
                           f"({tenant.created_at:%Y-%m-%d}): there is nothing to close. "
                           f"Its first month is {first}.")
    notes: list[str] = []
    if cutoff is None:
        cutoff = window.end + dt.timedelta(minutes=settings.grace_minutes)
        if now < cutoff:
            raise NotDue(f"{month} closes after its collection window, at "
                         f"{cutoff.isoformat()} ({settings.grace_minutes} minutes after "
                         "the month's end).", cutoff)
        if tenant.entra_sync:
            cutoff, note = _after_sync_round(session, tenant.id, window.end, cutoff, now)
            notes += [note] if note else []
    profile = profile if profile is not None else load_profile(session, tenant.id)
    return CloseInputs(
        tenant.id, month, window, cutoff, POLICIES[profile.policy],
        inv.parse_prices(profile.prices), profile.trial_ends_on, profile.non_profit,
        profile.po_number, {"companyName": profile.company_name,
                            "referenceNumber": profile.reference_number,
                            "customerType": profile.customer_type,
                            "industry": profile.industry}, tuple(notes))


def _after_sync_round(session: Session, tenant_id: str, boundary: dt.datetime,
                      cutoff: dt.datetime, now: dt.datetime) -> tuple[dt.datetime, str]:
    """A tenant fed by Entra sync closes once a round that started after the boundary has
    completed (Graph pages carry no timestamps: a change is dated when a round sees it),
    or right away if its sync is quarantined, which the close records."""
    finished = sync_status.first_round_completed_since(session, tenant_id, boundary)
    if finished is not None:
        return max(cutoff, finished), ""
    quarantined = sync_status.quarantined_until(session, tenant_id)
    if quarantined is not None and quarantined > now:
        return cutoff, (f"Entra sync was quarantined at the close (until "
                        f"{quarantined.isoformat()}): changes it has not read are not in.")
    raise NotDue("Waiting for an Entra sync round that started after the month's end to "
                 "complete; it runs on the tenant's schedule, or start one with "
                 f"`connector sync run --tenant {tenant_id}`.")


def latest_close(session: Session, tenant_id: str, month: Month) -> BillingClose | None:
    """Return the month's standing close (its latest version), if it is closed."""
    return session.scalar(
        select(BillingClose).where(BillingClose.tenant_id == tenant_id,
                                   BillingClose.month == str(month),
                                   BillingClose.state == "closed"))


def inputs_of(close: BillingClose) -> CloseInputs:
    """Return the inputs a close froze, to refold its month exactly as it was closed."""
    data = close.inputs
    month = Month.parse(data["month"])
    window = month.window(data["timeZone"])
    trial = data.get("trialEndsOn")
    return CloseInputs(
        close.tenant_id, month, window, close.cutoff, POLICIES[data["policy"]],
        inv.parse_prices(data.get("prices", [])),
        dt.date.fromisoformat(trial) if trial else None, bool(data.get("nonProfit")),
        data.get("poNumber", ""), data.get("billingInfo", {}), tuple(data.get("notes", ())))
