"""gunicorn server hooks of `connector serve` (`--config python:connector.gunicorn_hooks`
on the gevent path; set on the config object on the others).

- `on_exit`: when the server stops, stop its scheduler process too, and wait for it,
  so that `connector worker` finishes its jobs before the server's process (PID 1 in a
  container, whose exit kills everything left in it) is gone.
- `child_exit`: a worker that exits takes its live gauges (database connections in use)
  out of /metrics; its counts stay (connector/metrics.py).
- `post_worker_init`: with `connector serve --bootstrap` (`make run`), the first worker
  shows what bootstrap made once it listens (the file `ENV_WELCOME` names, then removed).
"""

from __future__ import annotations

import os
from typing import Any

from connector import supervise
from connector.metrics import child_exit

__all__ = ["child_exit", "on_exit", "post_worker_init"]
ENV_WELCOME = "CONNECTOR_WELCOME_FILE"


def on_exit(_server: Any) -> None:
    stop_seconds = float(os.environ.get(supervise.ENV_STOP, "30") or 30)
    supervise.stop_supervisor(stop_seconds + 5)


def post_worker_init(worker: Any) -> None:
    path = os.environ.get(ENV_WELCOME)
    if not path or worker.age != 1:
        return
    try:
        with open(path) as shown:
            print(shown.read(), end="", flush=True)
        os.unlink(path)
    except OSError:  # shown already (a restarted first worker)
        pass
