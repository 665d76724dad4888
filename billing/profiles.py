"""A tenant's billing info: read with defaults, changed with validation and an event.

The time zone a tenant's months are closed in is part of the billing info as admins see
it, but it is tenant policy: `connector.tenant_settings` checks and writes it (with its
own `tenant.settings` event)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from billing.invoice import InvalidPrice, parse_prices, prices_as_json
from billing.policies import PER_USER, POLICIES
from connector import events, tenant_settings
from connector.errors import FieldChecks, InvalidSetting
from connector.events import WriteContext
from connector.models import BillingProfile, Tenant
from connector.tenants import module_catalogue

TEXT_FIELDS = {"company_name": 200, "reference_number": 100, "customer_type": 100,
               "industry": 100, "po_number": 100}
DEFAULT_POLICY = "active_with_module"
# A trial is 30 days (seeds 000-003): from its first day, its last free day is 29 later.
TRIAL_DAYS = 30


def load_profile(session: Session, tenant_id: str) -> BillingProfile:
    """The tenant's billing info; an unsaved default one if none was ever set."""
    profile = session.get(BillingProfile, tenant_id)
    return profile if profile is not None else default_profile(tenant_id)


def default_profile(tenant_id: str) -> BillingProfile:
    """The billing info of a tenant that never set any (unsaved)."""
    return BillingProfile(tenant_id=tenant_id, company_name="", reference_number="",
                          customer_type="", industry="", po_number="", policy=DEFAULT_POLICY,
                          trial_ends_on=None, non_profit=False, prices=[], version=0)


def update_profile(session: Session, ctx: WriteContext, tenant: Tenant,
                   changes: Mapping[str, Any]) -> BillingProfile:
    """Apply `changes` (snake_case keys; time_zone goes to the tenant's settings) after
    checking every one of them: nothing is applied if one is wrong. Recorded as an
    event."""
    checked = _check(changes, _priceable_units(session, tenant.id) if "prices" in changes
                     else {})
    profile = session.get(BillingProfile, tenant.id)
    if profile is None:
        profile = load_profile(session, tenant.id)
        profile.version = 0
        session.add(profile)
    before = profile_json(profile, tenant)
    for key, value in checked.items():
        if key == "time_zone":
            tenant_settings.set_time_zone(session, tenant, ctx, value)
        else:
            setattr(profile, key, value)
    profile.updated_at = ctx.now
    profile.version = (profile.version or 0) + 1
    after = profile_json(profile, tenant)
    changed = {k: after[k] for k in after
               if after[k] != before[k] and k != "timeZone"}
    if changed:
        events.record(session, ctx, "tenant", tenant.id, events.BILLING_PROFILE,
                      {k: before[k] for k in changed}, changed)
    return profile


def trial_end(starts_on: dt.date) -> dt.date:
    """The last free day of a trial that starts on `starts_on` (day 1 of 30)."""
    return starts_on + dt.timedelta(days=TRIAL_DAYS - 1)


LABELS = {"company_name": "Company name", "reference_number": "Reference number",
          "customer_type": "Customer type", "industry": "Industry",
          "po_number": "Purchase order (PO) number"}


def _priceable_units(session: Session, tenant_id: str) -> dict[str, str]:
    """What a price may name (casefolded to spelling): `user`, which the policies that
    bill users price, and each module of the tenant's catalogue."""
    return {**module_catalogue(session, tenant_id), PER_USER: PER_USER}


def _check(changes: Mapping[str, Any], units: Mapping[str, str]) -> dict[str, Any]:
    """Every change checked; every wrong one said at once (`InvalidFields`), each in the
    words of the billing info form's labels. `units`: what a price may name."""
    checked: dict[str, Any] = {}
    fields = FieldChecks()
    if "trial_starts_on" in changes:
        with fields.field("trial_starts_on"):
            changes = _trial_from_start(changes)
        changes = {k: v for k, v in changes.items() if k != "trial_starts_on"}
    for key, value in changes.items():
        with fields.field(key):
            checked[key] = _check_one(key, value, units)
    fields.raise_any()
    return checked


def _check_one(key: str, value: Any, units: Mapping[str, str]) -> Any:
    if key in TEXT_FIELDS:
        if not isinstance(value, str) or len(value) > TEXT_FIELDS[key]:
            raise InvalidSetting(f"{LABELS[key]} must be text of at most {TEXT_FIELDS[key]} "
                                 "characters.")
        return value.strip()
    if key == "policy":
        if not isinstance(value, str) or value not in POLICIES:
            raise InvalidSetting(f"The policy must be one of {', '.join(sorted(POLICIES))}.")
        return value
    if key == "trial_ends_on":
        return _date(value, "The trial's end")
    if key == "non_profit":
        if not isinstance(value, bool):
            raise InvalidSetting("Verified non-profit must be true or false.")
        return value
    if key == "prices":
        if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
            raise InvalidSetting("The prices must be a list of {unit, plan, price}.")
        try:
            return prices_as_json(parse_prices(value, units))
        except InvalidPrice as exc:
            raise InvalidSetting(str(exc)) from exc
    if key == "time_zone":
        try:
            return tenant_settings.check_time_zone(value)
        except InvalidSetting:
            raise InvalidSetting(f"The time zone must be an IANA time zone such as "
                                 f"Europe/Amsterdam or UTC; {value!r} is not one.") from None
    raise InvalidSetting(f"{key} is not a billing setting.")


def _trial_from_start(changes: Mapping[str, Any]) -> Mapping[str, Any]:
    """`trial_starts_on` given: the trial's end is 29 days later (30 days in all). With
    `trial_ends_on` too, the two must agree."""
    if "trial_starts_on" not in changes:
        return changes
    rest = {k: v for k, v in changes.items() if k != "trial_starts_on"}
    starts_on = _date(changes["trial_starts_on"], "The trial's start")
    if starts_on is None:
        raise InvalidSetting("The trial's start must be a date (YYYY-MM-DD); to remove the "
                             "trial, leave its end empty.", "trial_starts_on")
    ends_on = trial_end(starts_on)
    given = _date(rest.get("trial_ends_on"), "The trial's end")
    if given is not None and given != ends_on:
        raise InvalidSetting(
            f"A trial starting on {starts_on.isoformat()} ends on {ends_on.isoformat()} "
            f"({TRIAL_DAYS} days), not {given.isoformat()}: give the start or the end, "
            "not both.", "trial_starts_on")
    rest["trial_ends_on"] = ends_on
    return rest


def _date(value: Any, label: str = "The trial's end") -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise InvalidSetting(f"{label} must be a date (YYYY-MM-DD) or empty.") from exc


def profile_json(profile: BillingProfile, tenant: Tenant) -> dict[str, Any]:
    return {"companyName": profile.company_name, "referenceNumber": profile.reference_number,
            "customerType": profile.customer_type, "industry": profile.industry,
            "poNumber": profile.po_number, "policy": profile.policy,
            "trialEndsOn": profile.trial_ends_on.isoformat() if profile.trial_ends_on
            else None, "nonProfit": profile.non_profit, "prices": list(profile.prices or []),
            "timeZone": tenant.time_zone, "currency": "USD", "version": profile.version}
