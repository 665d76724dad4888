"""A user's state at a month's end, kept with its line so the next close starts there.

A month close then reads only the month's own events (and folds from scratch just the
users something late was learned about), instead of every event since the tenant began:
its cost follows the tenant's size and the month's activity, not the length of its
history. The fold is a pure state machine, so starting from the state it reached at the
previous month's end is exactly folding from the beginning; a test and the bench's
re-verification hold the two to the same result. Pure.
"""

from __future__ import annotations

import json
from typing import Any

from billing.fold import UserState

VERSION = 1


def encode(state: UserState) -> str:
    """Compact JSON (a list, not an object): one per user and month."""
    return json.dumps([VERSION, state.user_name, state.exists, state.active, state.guest,
                       state.external_guest, sorted(state.own_modules), sorted(state.groups),
                       state.invited, state.claimed, state.frontline or None],
                      separators=(",", ":"), ensure_ascii=False)


def decode(text: str | None) -> UserState | None:
    """The state `encode` wrote, or None for one this version cannot read."""
    if not text:
        return None
    data: list[Any] = json.loads(text)
    if not isinstance(data, list) or len(data) != 11 or data[0] != VERSION:
        return None
    (_, name, exists, active, guest, external, modules, groups, invited, claimed,
     frontline) = data
    return UserState(user_name=name, exists=exists, active=active, guest=guest,
                     external_guest=external, own_modules=frozenset(modules),
                     groups=frozenset(groups), invited=invited, claimed=claimed,
                     frontline=frontline or {})
