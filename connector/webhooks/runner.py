"""The dispatcher's loop in a process: a thread that looks for work every
`webhooks.poll_interval_ms`, a pool of
`webhooks.workers` threads delivering to different endpoints side by side, and the
delivery log's pruning once an hour. Started by `connector worker`, and by `connector
serve` where the schedulers run in the web process."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from connector.clock import now as wall_clock
from connector.config import Settings
from connector.webhooks import service
from connector.webhooks.dispatcher import Dispatcher

log = logging.getLogger("connector.webhooks")
PRUNE_SECONDS = 3600.0


class Running:
    """A started dispatcher loop; `stop()` ends it (waiting for deliveries under way)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        cfg = dispatcher.cfg
        self.interval = max(cfg.poll_interval_ms, 10) / 1000
        self.pool = ThreadPoolExecutor(max(cfg.workers, 1), thread_name_prefix="webhooks")
        self.in_flight: dict[str, Future[int]] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="webhooks-dispatcher",
                                       daemon=True)
        self._pruned = 0.0

    def start(self) -> Running:
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        self.thread.join(timeout)
        self.pool.shutdown(wait=True)
        self.dispatcher.sender.close()

    def _submit(self, endpoint_id: str) -> None:
        if endpoint_id in self.in_flight:
            return
        self.in_flight[endpoint_id] = self.pool.submit(self.dispatcher.deliver, endpoint_id)

    def _loop(self) -> None:
        """A pass, then a pause. A delivery goes on until its endpoint has caught up
        (Dispatcher.deliver), so a pass need not come round again sooner."""
        while not self.stopping.is_set():
            for endpoint_id, future in list(self.in_flight.items()):
                if future.done():
                    del self.in_flight[endpoint_id]
            self.dispatcher.run_pass(self._submit, frozenset(self.in_flight))
            self._prune_now_and_then()
            self.stopping.wait(self.interval)

    def _prune_now_and_then(self) -> None:
        if time.monotonic() - self._pruned < PRUNE_SECONDS:
            return
        self._pruned = time.monotonic()
        try:
            prune(self.dispatcher.maker, self.dispatcher.settings)
        except Exception:  # noqa: BLE001 - pruning again in an hour
            log.exception("webhook delivery log: pruning failed")


def prune(maker: sessionmaker[Session], settings: Settings) -> int:
    """Delete delivery-log rows older than `webhooks.attempt_retention_days`, in
    bounded batches (short transactions); how many."""
    removed = 0
    while True:
        with maker() as s:
            gone = service.prune_attempts(s, wall_clock(),
                                          settings.webhooks.attempt_retention_days)
            s.commit()
        removed += gone
        if gone < 5000:
            return removed


def start(maker: sessionmaker[Session], settings: Settings) -> Running | None:
    """Start delivering from this process, unless `webhooks.enabled` is off."""
    if not settings.webhooks.enabled:
        return None
    return Running(Dispatcher(maker, settings)).start()
