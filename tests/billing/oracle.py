"""A deliberately simple billing oracle, independent of `billing.fold`.

It answers each policy's question literally from PRODUCT.md ("Billing", "Precise
readings") by replaying a user's whole history from scratch for every instant it asks
about. It is slow on purpose: nothing is carried from one instant to the next, so there is
no incremental bookkeeping to get wrong the same way as the engine.

How instants are checked: a history's state is piecewise constant and changes only at
event instants, so "at every instant of [a, b)" is "at `a` and just after every event
instant in (a, b)", and "at some instant" likewise. The state *at* an instant `t` is the
state after every log event with `at <= t` (a removal at `t` means the user does not exist
at `t`); the state *just before* `t` is the replay of the events with `at < t`.

Conventions (PRODUCT.md, pinned by the engine examples):
- months are `[local 00:00 on the 1st, local 00:00 on the next 1st)`; where local midnight
  does not exist the month starts when the gap ends, where it occurs twice at the earlier;
- `whole_month` also needs the state just before the month's start: an account created at
  exactly 00:00 on the 1st was created during that month;
- activity counts when the account exists at the activity's instant (so one at the same
  instant as a creation counts, one at the same instant as a removal does not);
- guest, external-company guest, frontline plan and modules are read at the month's end.

Only the fact kinds (the event-log names) are shared with the engine, as plain strings.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

UTC = dt.UTC
LOG_KINDS = ("user.created", "user.status", "user.removed", "user.restored", "user.guest",
             "user.external_guest", "user.modules", "user.invited", "user.claimed",
             "user.frontline", "user.profile", "member.added", "member.removed")
ACTIVITY = "activity"
USED = ("sign_in", "visit", "chat")  # a notification never counts
ROLES = ("customerFacing", "backstage", "publicService", "medical")
POLICY_NAMES = ("whole_month", "active_with_module", "invited", "monthly_active")


@dataclass(frozen=True)
class Ev:
    """One event of a user's history: `seq` orders events at the same instant."""

    at: dt.datetime
    seq: int
    kind: str
    value: Any = None


# -- months -------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def midnight(day: dt.date, tz: str) -> dt.datetime:
    """Brute force: the earliest instant whose local wall time is at or after 00:00 of
    `day`, found by a scan in minutes (then seconds) across the day boundary."""
    zone = ZoneInfo(tz)
    wall = dt.datetime(day.year, day.month, day.day)
    # Offsets lie within [-12 h, +14 h]: 15 hours before naive-as-UTC, the wall is earlier.
    instant = wall.replace(tzinfo=UTC) - dt.timedelta(hours=15)
    step = dt.timedelta(minutes=1)
    while instant.astimezone(zone).replace(tzinfo=None) < wall:
        instant += step
    back = instant - step  # a transition may fall between two whole minutes
    for seconds in range(1, 60):
        candidate = back + dt.timedelta(seconds=seconds)
        if candidate.astimezone(zone).replace(tzinfo=None) >= wall:
            return candidate
    return instant


@dataclass(frozen=True)
class OracleMonth:
    year: int
    month: int
    tz: str
    start: dt.datetime
    end: dt.datetime
    first_day_end: dt.datetime

    @property
    def first_day(self) -> dt.date:
        return dt.date(self.year, self.month, 1)


def oracle_month(year: int, month: int, tz: str) -> OracleMonth:
    first = dt.date(year, month, 1)
    following = dt.date(year + (month == 12), month % 12 + 1, 1)
    return OracleMonth(year, month, tz, midnight(first, tz), midnight(following, tz),
                       midnight(dt.date(year, month, 2), tz))


# -- a user's state at an instant ---------------------------------------------------------


@dataclass
class State:
    exists: bool = False
    active: bool = False
    guest: bool = False
    external: bool = False
    own: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    invited: bool = False
    claimed: bool = False
    frontline: dict[str, Any] = field(default_factory=dict)
    user_name: str = ""


def replay(events: Sequence[Ev], upto: dt.datetime, inclusive: bool) -> State:
    """The state from every log event before `upto` (or at it too, if `inclusive`),
    in (instant, seq) order. Activity changes no state."""
    s = State()
    chosen = [e for e in events if e.kind != ACTIVITY
              and (e.at <= upto if inclusive else e.at < upto)]
    for e in sorted(chosen, key=lambda e: (e.at, e.seq)):
        v = e.value
        if e.kind == "user.created":
            s = State(exists=True, active=v["active"], guest=v["guest"],
                      external=v["external_company_guest"], own=set(v["modules"]),
                      frontline=dict(v["frontline"]), user_name=v["userName"],
                      groups=s.groups, invited=s.invited, claimed=s.claimed)
        elif e.kind == "user.status":
            s.active = v
        elif e.kind == "user.removed":  # memberships and assignments go with the user
            s.exists, s.own, s.groups = False, set(), set()
        elif e.kind == "user.restored":  # same id; its own modules come back
            s.exists, s.own = True, set(v["modules"])
        elif e.kind == "user.guest":
            s.guest = v
        elif e.kind == "user.external_guest":
            s.external = v
        elif e.kind == "user.modules":
            s.own = set(v)
        elif e.kind == "user.invited":
            s.invited = v
        elif e.kind == "user.claimed":
            s.claimed = v
        elif e.kind == "user.frontline":
            s.frontline = dict(v)
        elif e.kind == "user.profile":
            s.user_name = v["userName"]
        elif e.kind == "member.added":
            s.groups.add(v)
        elif e.kind == "member.removed":
            s.groups.discard(v)
    return s


def at_instant(events: Sequence[Ev], t: dt.datetime) -> State:
    return replay(events, t, inclusive=True)


def just_before(events: Sequence[Ev], t: dt.datetime) -> State:
    return replay(events, t, inclusive=False)


def checkpoints(events: Sequence[Ev], lo: dt.datetime, hi: dt.datetime) -> list[dt.datetime]:
    """`lo` and every event instant in (lo, hi): the instants where [lo, hi)'s state
    can differ."""
    return [lo, *sorted({e.at for e in events if lo < e.at < hi and e.kind != ACTIVITY})]


def exists_sometime(events: Sequence[Ev], lo: dt.datetime, hi: dt.datetime) -> bool:
    return any(at_instant(events, t).exists for t in checkpoints(events, lo, hi))


def active_throughout(events: Sequence[Ev], m: OracleMonth) -> bool:
    """Existed and active at every instant of the month, and already just before it."""
    instants = checkpoints(events, m.start, m.end)
    states = [just_before(events, m.start), *(at_instant(events, t) for t in instants)]
    return all(s.exists and s.active for s in states)


def used_in_month(events: Sequence[Ev], m: OracleMonth) -> bool:
    return any(e.kind == ACTIVITY and e.value in USED and m.start <= e.at < m.end
               and at_instant(events, e.at).exists for e in events)


# -- commercial rules ------------------------------------------------------------------


def frontline(attributes: Mapping[str, Any]) -> bool:
    deskless = attributes.get("desklessPercent")
    half_or_more = deskless is not None and not isinstance(deskless, bool) and deskless >= 50
    qualifies = half_or_more or attributes.get("paidHourly") is True \
        or attributes.get("hasEmail") is False
    return qualifies and attributes.get("frontlineRole") in ROLES


def first_billed_day(trial_ends_on: dt.date | None) -> dt.date | None:
    if trial_ends_on is None:
        return None
    if trial_ends_on.month == 12:
        return dt.date(trial_ends_on.year + 1, 1, 1)
    return dt.date(trial_ends_on.year, trial_ends_on.month + 1, 1)


@dataclass(frozen=True)
class Verdict:
    billable: bool
    reasons: frozenset[str]  # the reason codes that would be right (one if billable)
    plan: str
    audience: str
    modules: tuple[str, ...]
    units: tuple[str, ...]


def decide(policy: str, events: Sequence[Ev], m: OracleMonth,
           group_modules: Mapping[str, frozenset[str]],
           trial_ends_on: dt.date | None) -> Verdict | None:
    """The oracle's decision for one user's month, or None: no account at any instant."""
    if not exists_sometime(events, m.start, m.end):
        return None
    end = just_before(events, m.end)
    modules: set[str] = set()
    if end.exists:
        modules = set(end.own)
        for group in end.groups:
            modules |= set(group_modules.get(group, ()))
    plan = "frontline" if frontline(end.frontline) else "standard"
    audience = "guest" if end.guest else "regular"

    refusals: set[str] = set()
    starts = first_billed_day(trial_ends_on)
    if starts is not None and m.first_day < starts:
        refusals.add("trial")
    if end.external:
        refusals.add("external_company_guest")
    granted = ""
    if policy == "whole_month":
        if active_throughout(events, m):
            granted = "active_whole_month"
        else:
            refusals.add("not_active_whole_month")
    elif policy == "active_with_module":
        if not end.exists:
            refusals.add("removed")
        elif not end.active:
            refusals.add("inactive_at_end")
        elif not modules:
            refusals.add("no_module")
        else:
            granted = "active_with_module"
    elif policy == "invited":
        invited = end.invited or end.claimed
        if not end.exists:
            refusals.add("removed")
        if not invited:
            refusals.add("not_invited")
        if end.exists and not end.active:
            refusals.add("inactive_at_end")
        if end.exists and invited and end.active:
            granted = "claimed" if end.claimed else "invited"
    elif policy == "monthly_active":
        if not exists_sometime(events, m.start, m.first_day_end):
            refusals.add("no_account_on_first_day")
        if not used_in_month(events, m):
            refusals.add("no_activity")
        if not refusals & {"no_account_on_first_day", "no_activity"}:
            granted = "monthly_active"
    else:
        raise ValueError(policy)

    billable = not refusals
    units: tuple[str, ...] = ()
    if billable:
        units = tuple(sorted(modules)) if policy == "active_with_module" else ("user",)
    return Verdict(billable, frozenset({granted}) if billable else frozenset(refusals),
                   plan, audience, tuple(sorted(modules)), units)


def totals(verdicts: Sequence[Verdict | None]) -> Counter[tuple[str, str, str]]:
    """Billed units per (unit, audience, plan), counted one by one."""
    counted: Counter[tuple[str, str, str]] = Counter()
    for verdict in verdicts:
        if verdict is None or not verdict.billable:
            continue
        for unit in verdict.units:
            counted[(unit, verdict.audience, verdict.plan)] += 1
    return counted
