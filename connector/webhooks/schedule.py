"""When to try a failing endpoint again: exponential backoff with jitter over about
three days (Stripe's retries are the reference), or what the receiver's Retry-After
asks for. Pure: no clock, no randomness of its own (both are passed in)."""

from __future__ import annotations

import datetime as dt
import random

from connector import outbound

# The wait after the n-th failure in a row (n = 1, 2, …); past the end, the last one.
# 5 s, 30 s, 2 min, 5 min, 15 min, 30 min, 1 h, 2 h, 4 h, 8 h, then every 12 h: about
# 16 hours for the first ten attempts, then twice a day until the endpoint is disabled
# (webhooks.disable_after_hours, 72 by default: about 16 attempts in all, the last
# at the 72-hour mark).
SCHEDULE = tuple(dt.timedelta(seconds=s) for s in (
    5, 30, 120, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200))
JITTER = 0.2  # each wait is drawn from ±20 % of the schedule's


def backoff(failures: int, rng: random.Random) -> dt.timedelta:
    """The wait after `failures` failures in a row (1 or more), with jitter."""
    base = SCHEDULE[min(max(failures, 1), len(SCHEDULE)) - 1]
    return base * rng.uniform(1 - JITTER, 1 + JITTER)


def next_attempt(now: dt.datetime, failures: int, retry_after: str | None,
                 cap: dt.timedelta, rng: random.Random) -> dt.datetime:
    """When to try again after the `failures`-th failure in a row: at the receiver's
    Retry-After (capped at `cap`) when it gave one, else after the backoff."""
    asked = outbound.retry_after_seconds(retry_after, now, cap.total_seconds())
    if asked is not None:
        return now + dt.timedelta(seconds=asked)
    return now + backoff(failures, rng)
