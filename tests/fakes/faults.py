"""One-shot faults a test queues on a fake: "the next 2 requests to /v1.0/users get 429".

Each fault matches requests by path prefix, lets `after` matching requests pass, then
answers the next `count` of them its way. Tests queue faults from their own thread while
the server's threads consume them, so every read and write holds the plan's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from tests.fakes.server import Request, Response


@dataclass
class Fault:
    """What to answer instead of the real response, and to which requests."""

    answer: Callable[[Request], Response | None]
    count: int = 1
    after: int = 0
    path: str = ""
    method: str | None = None

    def matches(self, request: Request) -> bool:
        return request.path.startswith(self.path) and self.method in (None, request.method)


class FaultPlan:
    """The queue of pending faults; the first matching one wins."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        if fault.count < 1 or fault.after < 0:
            raise ValueError("a fault needs count >= 1 and after >= 0")
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(f.count for f in self._faults)

    def take(self, request: Request) -> Fault | None:
        """The fault that applies to this request, consuming one use of it, if any."""
        with self._lock:
            for fault in self._faults:
                if not fault.matches(request):
                    continue
                if fault.after:
                    fault.after -= 1
                    continue
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                return fault
        return None
