"""Billing policies: who is billable in a month, and why (PRODUCT.md, "Billing").

A policy is a small object with a name, a version (bumped whenever its rule changes, and
part of every snapshot's hash) and `decide`, a pure function of one user's month. A fifth
policy is one more class here and one line in `POLICIES`.

The rules every policy shares (the trial, guests from other companies, the frontline
plan, what a user is billed for) are in `decide_user`; a policy only answers its own
question.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from billing.fold import UserMonth

PER_USER = "user"  # the priced unit of the policies that bill users, not modules
STANDARD, FRONTLINE = "standard", "frontline"
REGULAR, GUEST = "regular", "guest"

# Frontline plan (seeds 000-003): deskless half the time or more, or paid hourly, or no
# e-mail address; and one of these roles, at any level including management.
FRONTLINE_ROLES = frozenset({"customerFacing", "backstage", "publicService", "medical"})


class Policy(Protocol):
    # Read-only members: the policies are frozen dataclasses, whose fields a caller
    # cannot set, and a settable protocol attribute would not match them.
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def uses_modules(self) -> bool: ...

    @property
    def description(self) -> str: ...

    def decide(self, month: UserMonth) -> tuple[bool, str]:
        """(billable, reason code) for one user's month."""
        ...


@dataclass(frozen=True)
class WholeMonth:
    name: str = "whole_month"
    version: int = 1
    uses_modules: bool = False
    description: str = ("Active for the whole calendar month; accounts created or closed "
                        "during the month are not billable.")

    def decide(self, month: UserMonth) -> tuple[bool, str]:
        if month.active_whole_month:
            return True, "active_whole_month"
        return False, "not_active_whole_month"


@dataclass(frozen=True)
class ActiveWithModule:
    name: str = "active_with_module"
    version: int = 1
    uses_modules: bool = True
    description: str = ("Active at the month's end with one or more modules; counted once "
                        "per module.")

    def decide(self, month: UserMonth) -> tuple[bool, str]:
        if not month.end.exists:
            return False, "removed"
        if not month.end.active:
            return False, "inactive_at_end"
        if not month.modules:
            return False, "no_module"
        return True, "active_with_module"


@dataclass(frozen=True)
class Invited:
    name: str = "invited"
    version: int = 1
    uses_modules: bool = False
    description: str = ("Invited to claim an account (claimed or not) by the month's end, "
                        "and active then; merely provisioned users are free.")

    def decide(self, month: UserMonth) -> tuple[bool, str]:
        if not month.end.exists:
            return False, "removed"
        if not month.end.invited:
            return False, "not_invited"
        if not month.end.active:
            return False, "inactive_at_end"
        return True, "claimed" if month.end.claimed else "invited"


@dataclass(frozen=True)
class MonthlyActive:
    name: str = "monthly_active"
    version: int = 1
    uses_modules: bool = False
    description: str = ("Had an account on the 1st and signed in, visited or used chat "
                        "during the month.")

    def decide(self, month: UserMonth) -> tuple[bool, str]:
        if not month.existed_first_day:
            return False, "no_account_on_first_day"
        if not month.used_in_month:
            return False, "no_activity"
        return True, "monthly_active"


POLICIES: Mapping[str, Policy] = {p.name: p for p in (
    WholeMonth(), ActiveWithModule(), Invited(), MonthlyActive())}


class Decision(NamedTuple):
    """One user's line in a closed month. (A tuple, like billing.fold.UserMonth: one
    per user per close.)"""

    user_id: str
    billable: bool
    reason: str
    plan: str  # standard | frontline
    audience: str  # regular | guest
    modules: tuple[str, ...]  # effective modules at the month's end
    units: tuple[str, ...]  # what is priced: modules, or (PER_USER,); empty if not billable

    def as_row(self) -> dict[str, object]:
        return {"user_id": self.user_id, "billable": self.billable, "reason": self.reason,
                "plan": self.plan, "audience": self.audience, "modules": list(self.modules),
                "units": list(self.units)}


def is_frontline(attributes: Mapping[str, object]) -> bool:
    """The frontline plan's test (exactly 50 % deskless qualifies)."""
    if not attributes:  # most users: no frontline attributes at all
        return False
    deskless = attributes.get("desklessPercent")
    works_away = isinstance(deskless, int | float) and deskless >= 50
    qualifies = (works_away or attributes.get("paidHourly") is True
                 or attributes.get("hasEmail") is False)
    return qualifies and attributes.get("frontlineRole") in FRONTLINE_ROLES


def billing_starts(trial_ends_on: dt.date | None) -> dt.date | None:
    """The first day billed: the 1st of the month after the trial's last day."""
    if trial_ends_on is None:
        return None
    return (trial_ends_on.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def decide_user(policy: Policy, month: UserMonth, month_first_day: dt.date,
                trial_ends_on: dt.date | None) -> Decision | None:
    """One user's decision, or None for a user with no account during the month."""
    if not month.existed_in_month:
        return None
    end = month.end
    plan = FRONTLINE if is_frontline(end.frontline) else STANDARD
    audience = GUEST if end.guest else REGULAR
    starts = billing_starts(trial_ends_on)
    if starts is not None and month_first_day < starts:
        billable, reason = False, "trial"
    elif end.external_guest:
        billable, reason = False, "external_company_guest"
    else:
        billable, reason = policy.decide(month)
    units: tuple[str, ...] = ()
    if billable:
        units = month.modules if policy.uses_modules else (PER_USER,)
    return Decision(month.user_id, billable, reason, plan, audience, month.modules, units)
