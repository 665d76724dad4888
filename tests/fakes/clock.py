"""A clock the fakes share, which tests move forward instead of sleeping.

Access-token lifetimes, the seven-day life of delta tokens and the thirty days a
soft-deleted user stays restorable are all measured on it. It reads the wall clock plus
an offset, so fresh fakes agree with msal (which only knows `time.time()`) until a test
advances them.
"""

from __future__ import annotations

import threading
import time

DAY = 86_400.0


class FakeClock:
    """Wall-clock seconds since the epoch, plus whatever the test has added."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float = 0.0, *, days: float = 0.0) -> float:
        """Move time forward (never back) and return the new now."""
        step = seconds + days * DAY
        if step < 0:
            raise ValueError("the fake clock only moves forward")
        with self._lock:
            self._offset += step
        return self.now()
