"""A user's state at a month's end, kept with its line so the next close starts there.

A month close then reads only the month's own events (and folds from scratch just the
users something late was learned about), instead of every event since the tenant began:
its cost follows the tenant's size and the month's activity, not the length of its
history. The fold is a pure state machine, so starting from the state it reached at the
previous month's end is exactly folding from the beginning; a test and the bench's
re-verification hold the two to the same result. Pure.

Format 2 (written since 2026-11-30) is a few fields between unit separators, the user
name last so that it may hold anything:

    2 ␟ flags ␟ own modules (␞-joined) ␟ groups (␞-joined) ␟ frontline JSON ␟ user name

flags are six 0/1 digits: exists, active, guest, external guest, invited, claimed. A
close encodes or decodes one per user; this costs a third of JSON's time. Format 1, a
JSON list, is still read (states kept by earlier closes), and written for the rare state
whose module names hold a separator.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from billing.fold import UserState

VERSION = 2
FIELD, ITEM = "\x1f", "\x1e"
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(state: UserState) -> str:
    """One user's state as text."""
    modules, groups = sorted(state.own_modules), sorted(state.groups)
    names = "".join(modules) + "".join(groups)
    if FIELD in names or ITEM in names:
        return _encode_v1(state, modules, groups)
    # printf-style: half an f-string's time with six format specs, once per user.
    flags = "%d%d%d%d%d%d" % (  # noqa: UP031
        bool(state.exists), bool(state.active), bool(state.guest),
        bool(state.external_guest), bool(state.invited), bool(state.claimed))
    frontline = _json(state.frontline) if state.frontline else ""
    return FIELD.join(("2", flags, ITEM.join(modules), ITEM.join(groups), frontline,
                       state.user_name))


def _json(value: Any) -> str:
    """`value` as JSON text that json.loads reads back as the same value: orjson's (a
    tenth of the standard encoder's time), unless it refuses the value (an integer
    beyond 64 bits, a lone surrogate) or wrote null, which it also writes for NaN and
    infinities: then the standard encoder's, which keeps them."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        return _JSON.encode(value)
    return _JSON.encode(value) if "null" in text else text


def decode(text: str | None) -> UserState | None:
    """The state `encode` wrote (either format), or None for one this code cannot read."""
    if not text:
        return None
    if text.startswith("2" + FIELD):
        parts = text.split(FIELD, 5)
        if len(parts) != 6 or len(parts[1]) != 6:
            return None
        _, flags, modules, groups, frontline, name = parts
        return UserState(user_name=name, exists=flags[0] == "1", active=flags[1] == "1",
                         guest=flags[2] == "1", external_guest=flags[3] == "1",
                         own_modules=frozenset(modules.split(ITEM)) if modules else frozenset(),
                         groups=frozenset(groups.split(ITEM)) if groups else frozenset(),
                         invited=flags[4] == "1", claimed=flags[5] == "1",
                         frontline=json.loads(frontline) if frontline else {})
    return _decode_v1(text)


def _encode_v1(state: UserState, modules: list[str], groups: list[str]) -> str:
    return _JSON.encode([1, state.user_name, state.exists, state.active, state.guest,
                         state.external_guest, modules, groups, state.invited,
                         state.claimed, state.frontline or None])


def _decode_v1(text: str) -> UserState | None:
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, list) or len(data) != 11 or data[0] != 1:
        return None
    (_, name, exists, active, guest, external, modules, groups, invited, claimed,
     frontline) = data
    return UserState(user_name=name, exists=exists, active=active, guest=guest,
                     external_guest=external, own_modules=frozenset(modules),
                     groups=frozenset(groups), invited=invited, claimed=claimed,
                     frontline=frontline or {})
