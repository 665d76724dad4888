"""Ingest users' activity (sign-in, visit, chat, notification) for `monthly_active`.

The workplace reports what its users did, in batches, with the instant each thing
happened; activity reported after its month closed becomes an adjustment at the next
close, like any late event. Every item of a batch is checked before any is stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.fold import ACTIVITY_KINDS
from connector import db
from connector.errors import InvalidSetting
from connector.models import Activity, User

MAX_BATCH = 1000
CLOCK_SKEW = dt.timedelta(minutes=5)


def parse_items(items: Any, now: dt.datetime) -> list[tuple[str, str, dt.datetime]]:
    """(user id, kind, occurred at) of each item, or InvalidSetting naming the first
    bad one. Items: {"userId", "type": sign_in|visit|chat|notification, "occurredAt"}."""
    if not isinstance(items, list) or not items:
        raise InvalidSetting("activity must be a non-empty list of {userId, type, occurredAt}.")
    if len(items) > MAX_BATCH:
        raise InvalidSetting(f"At most {MAX_BATCH} activity items per request.")
    parsed = []
    for index, item in enumerate(items):
        where = f"activity[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidSetting(f"{where} must be an object.")
        user_id, kind, when = item.get("userId"), item.get("type"), item.get("occurredAt")
        if not isinstance(user_id, str) or not user_id or len(user_id) > 36:
            raise InvalidSetting(f"{where}.userId must be a user id of this tenant.")
        if kind not in ACTIVITY_KINDS:
            raise InvalidSetting(f"{where}.type must be one of "
                                 f"{', '.join(sorted(ACTIVITY_KINDS))}.")
        occurred = _instant(when, where)
        if occurred > now + CLOCK_SKEW:
            raise InvalidSetting(f"{where}.occurredAt is in the future.")
        parsed.append((user_id, kind, occurred))
    return parsed


def _instant(value: Any, where: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is not None:
                return parsed.astimezone(dt.UTC)
        except (ValueError, OverflowError):
            pass
    raise InvalidSetting(f"{where}.occurredAt must be an ISO 8601 instant with a time zone, "
                         "e.g. 2026-11-03T08:15:00Z.")


def record_activity(session: Session, tenant_id: str,
                    items: Sequence[tuple[str, str, dt.datetime]], now: dt.datetime) -> int:
    """Store the items in the caller's transaction; unknown users refuse the batch."""
    ids = sorted({uid for uid, _, _ in items})
    known: set[str] = set()
    for i in range(0, len(ids), 500):
        known.update(session.scalars(select(User.id).where(User.tenant_id == tenant_id,
                                                           User.id.in_(ids[i:i + 500]))))
    missing = [uid for uid in ids if uid not in known]
    if missing:
        raise InvalidSetting(f"No user {missing[0]!r} in this tenant"
                             + (f" (and {len(missing) - 1} more)." if len(missing) > 1 else "."))
    db.insert_many(session, Activity.__table__, [
        {"tenant_id": tenant_id, "user_id": uid, "kind": kind, "occurred_at": occurred,
         "recorded_at": now} for uid, kind, occurred in items])
    return len(items)
