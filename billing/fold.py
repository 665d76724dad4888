"""Point-in-time reconstruction: fold one user's history over a billing month.

The input is what the event log (and the activity log) says about one user, as `Fact`
values in order; the output is a `UserMonth`: the few things the billing policies ask
about that month. Nothing here reads a database or a clock, so the month close (which
streams the log user by user) and the tests' oracle can both drive it.

Facts about the groups a user belongs to come in as the user's own facts (`member.added`,
`member.removed` with the group id), and the modules of each group at the month's end
as a mapping: a user's effective modules are its own plus those of every group it is a
direct member of, as the admin UI shows them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from billing.calendar import Window

# The fact kinds the fold reads. User events keep their event-log names; memberships are
# the group events seen from the member's side; activity comes from the activity log.
CREATED = "user.created"
STATUS = "user.status"
REMOVED = "user.removed"
RESTORED = "user.restored"
GUEST = "user.guest"
EXTERNAL_GUEST = "user.external_guest"
MODULES = "user.modules"
INVITED = "user.invited"
CLAIMED = "user.claimed"
FRONTLINE = "user.frontline"
PROFILE = "user.profile"
JOINED = "member.added"
LEFT = "member.removed"
ACTIVITY = "activity"

USER_KINDS = (CREATED, STATUS, REMOVED, RESTORED, GUEST, EXTERNAL_GUEST, MODULES, INVITED,
              CLAIMED, FRONTLINE, PROFILE)

# Activity that makes a monthly active user (seeds 000-003): signing in, visiting, chat.
# Notifications are accepted by the ingestion endpoint but never count.
COUNTED_ACTIVITY = frozenset({"sign_in", "visit", "chat"})
ACTIVITY_KINDS = COUNTED_ACTIVITY | {"notification"}


class Fact(NamedTuple):
    """One thing that happened to a user: at `at` (the source's effective time), in
    log order `seq` among facts at the same instant.

    The fold reads facts by position only, so any sequence (at, seq, kind, value) is
    one: the close's reader hands the lists orjson parses from the database's JSON
    (billing.reader), with no Python per fact. Fact names the positions for everyone
    else."""

    at: dt.datetime
    seq: int
    kind: str
    # The event's JSON value, whose shape depends on `kind`: Any, because the hot loop
    # reads it as the kind says instead of narrowing every fact's value.
    value: Any = None


def fact_order(fact: Fact) -> tuple[dt.datetime, int, int]:
    # At one instant, log events before activity: an account removed at 10:00 did not
    # exist for a sign-in reported at 10:00; one created at 10:00 did.
    return (fact[0], fact[2] == ACTIVITY, fact[1])


@dataclass(slots=True)
class UserState:
    """A user's billing-relevant state at one instant."""

    user_name: str = ""
    exists: bool = False
    active: bool = False
    guest: bool = False
    external_guest: bool = False
    own_modules: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    invited: bool = False
    claimed: bool = False
    frontline: Mapping[str, object] = field(default_factory=dict)


class UserMonth(NamedTuple):
    """What a user's history says about one month. (A tuple: made once per user per
    close, in a third of a frozen dataclass's time.)"""

    user_id: str
    known: bool  # the user had been created before the month's end
    existed_in_month: bool  # existed at some instant of [start, end)
    existed_first_day: bool  # existed at some instant of the month's first local day
    active_whole_month: bool  # existed and was active at every instant of the month
    used_in_month: bool  # a counted activity while it existed, inside the month
    end: UserState  # the state just before the month's end
    modules: tuple[str, ...]  # effective modules at the month's end, sorted


def fold_month(user_id: str, facts: Iterable[Fact], window: Window,
               group_modules: Mapping[str, frozenset[str]],
               initial: UserState | None = None) -> UserMonth:
    """Fold a user's facts (in `fact_order`) over `window`.

    `initial`: the state at the window's start (the previous month's end, carried by
    its close); `facts` are then only those at or after the start. Facts at or after
    the window's end are ignored, so a caller may pass more.

    This is the hot loop of a month close (once per event it reads; a first close
    reads every user's whole history): one loop over the facts, the state in local
    variables (a mutable set for the groups), the kinds tested in the order of how
    often they come. Unknown kinds change nothing; activity only counts inside the
    month.
    """
    if initial is None:
        name, exists, active, guest, external = "", False, False, False, False
        own: frozenset[str] = frozenset()
        groups: set[str] = set()
        invited = claimed = known = False
        frontline: Mapping[str, object] = {}
    else:
        name, exists, active = initial.user_name, initial.exists, initial.active
        guest, external, own = initial.guest, initial.external_guest, initial.own_modules
        groups, invited, claimed = set(initial.groups), initial.invited, initial.claimed
        frontline, known = initial.frontline, True
    start, end, first_day_end = window.start, window.end, window.first_day_end
    existed_in_month = existed_first_day = used = False
    whole = None  # None until the month starts: then whether it held at every instant
    last = start  # the instant of the facts applied last
    for at, _, kind, value in facts:
        if at >= start:
            if at >= end:
                break
            if whole is None:
                # The state before the month's first facts; it holds at the start itself
                # only if those facts come later (a removal at 00:00 leaves no instant).
                whole = exists and active
                existed_in_month = existed_first_day = exists and at > start
            elif at != last:
                # Every fact at `last` is applied: that is the state at the instant
                # `last` (a change and its undoing at one instant leave no instant
                # between them).
                whole = whole and exists and active
                existed_in_month = existed_in_month or exists
                existed_first_day = existed_first_day or (exists and last < first_day_end)
            last = at
            if kind == ACTIVITY:
                if exists and value in COUNTED_ACTIVITY:
                    used = True
                continue
        # The fact's change of state (before the month, activity matches no kind).
        if kind == STATUS:
            active = bool(value)
        elif kind == JOINED:
            groups.add(value)
        elif kind == MODULES:
            own = frozenset(value or ())
        elif kind == LEFT:
            groups.discard(value)
        elif kind == GUEST:
            guest = bool(value)
        elif kind == PROFILE:
            if isinstance(value, dict) and "userName" in value:
                name = str(value["userName"])
        elif kind == CREATED:
            value = value if isinstance(value, dict) else {}
            known = exists = True
            name = str(value.get("userName", ""))
            active = bool(value.get("active", True))
            guest = bool(value.get("guest", False))
            external = bool(value.get("external_company_guest", False))
            own = frozenset(value.get("modules") or ())
            frontline = value.get("frontline") or {}
        elif kind == FRONTLINE:
            frontline = value if isinstance(value, dict) else {}
        elif kind == REMOVED:
            exists = False
            own = frozenset()
            groups = set()
        elif kind == RESTORED:
            exists = True
            modules = value.get("modules") if isinstance(value, dict) else None
            own = frozenset(modules or ())
        elif kind == EXTERNAL_GUEST:
            external = bool(value)
        elif kind == INVITED:
            invited = bool(value)
        elif kind == CLAIMED:
            claimed = bool(value)
            invited = invited or claimed
    if whole is None:  # nothing happened inside the month: the state at its start held
        whole = exists and active
        existed_in_month = existed_first_day = exists
    else:  # the state at the month's last instant with facts
        whole = whole and exists and active
        existed_in_month = existed_in_month or exists
        existed_first_day = existed_first_day or (exists and last < first_day_end)
    state = UserState(name, exists, active, guest, external, own, frozenset(groups),
                      invited, claimed, frontline)
    effective: tuple[str, ...] = ()
    if exists:
        modules = set(own)
        for group in groups:
            modules |= group_modules.get(group, frozenset())
        effective = tuple(sorted(modules))
    return UserMonth(user_id, known, existed_in_month, existed_first_day, whole, used,
                     state, effective)


def fold_group_modules(facts: Iterable[tuple[str, Fact]], end: dt.datetime
                       ) -> dict[str, frozenset[str]]:
    """Each group's modules just before `end`, from (group id, fact) pairs in log order.

    Kinds: `group.created` (value with `modules`), `group.modules` (the new list),
    `group.removed`."""
    modules: dict[str, frozenset[str]] = {}
    for group_id, fact in facts:
        if fact.at >= end:
            continue
        if fact.kind == "group.created":
            value = fact.value if isinstance(fact.value, dict) else {}
            modules[group_id] = frozenset(value.get("modules") or ())
        elif fact.kind == "group.modules":
            modules[group_id] = frozenset(fact.value or ())
        elif fact.kind == "group.removed":
            modules.pop(group_id, None)
    return modules
