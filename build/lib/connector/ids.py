"""Ids for new rows: time-ordered UUIDs (the layout of UUIDv7, RFC 9562 §5.7).

A user id is the second column of the users primary key, of `ix_users_live`, of the
user_values key and of the events' subject index. Random UUIDv4 ids put every new user
at a random place in each of those B-trees, so a sync page of 200 new users dirtied
pages all over them, and at a million users SQLite's commit (writing those pages to
the WAL) was a quarter of an initial round. Ids that start with the time in
milliseconds land next to each other: the page's inserts append to a few leaves.

The 74 bits after the timestamp are random (from `os.urandom`), so ids stay
unguessable; the creation millisecond they reveal is no secret (`meta.created`).
"""

from __future__ import annotations

import os
import time
import uuid

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62


def new_id(now_ns: int | None = None) -> str:
    """A new time-ordered UUID as a string (same form and length as str(uuid4()));
    `now_ns` (nanoseconds since the epoch) defaults to the clock."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (millis & ((1 << 48) - 1)) << 80 | _VERSION_7 | rand_a << 64 | _VARIANT_RFC | rand_b
    return str(uuid.UUID(int=value))
