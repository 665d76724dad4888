"""gunicorn server hooks of `connector serve` (`--config python:connector.gunicorn_hooks`
on the gevent path; set on the config object on the others).

- `on_exit`: when the server stops, stop its scheduler process too, and wait for it,
  so that `connector worker` finishes its jobs before the server's process (PID 1 in a
  container, whose exit kills everything left in it) is gone.
- `child_exit`: a worker that exits takes its live gauges (database connections in use)
  out of /metrics; its counts stay (connector/metrics.py).
"""

from __future__ import annotations

import os
from typing import Any

from connector import supervise
from connector.metrics import child_exit

__all__ = ["child_exit", "on_exit"]


def on_exit(_server: Any) -> None:
    stop_seconds = float(os.environ.get(supervise.ENV_STOP, "30") or 30)
    supervise.stop_supervisor(stop_seconds + 5)
