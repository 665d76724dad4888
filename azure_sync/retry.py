"""When to try again: Retry-After, exponential backoff with jitter, a per-round budget.

Pure: the clock and the random source are passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from connector import outbound

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 3600.0  # a server asking for more than an hour is treated as an hour


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """Seconds to wait from Graph's Retry-After header, at most MAX_RETRY_AFTER (the
    parsing is shared with webhooks: connector.outbound)."""
    return outbound.retry_after_seconds(value, now, MAX_RETRY_AFTER)


def backoff_seconds(attempt: int, base: float, cap: float,
                    random: Callable[[], float]) -> float:
    """"Full jitter" exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random() * min(cap, base * (2 ** max(attempt, 0)))


@dataclass
class RetryBudget:
    """Retries one round may spend in all (throttling, 5xx, timeouts)."""

    remaining: int

    def spend(self) -> bool:
        """Take one retry; False when none are left."""
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True
