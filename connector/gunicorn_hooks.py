"""gunicorn server hooks of `connector serve` (`--config python:connector.gunicorn_hooks`
on the gevent path; set on the config object on the others).

- `on_exit`: when the server stops, stop its scheduler process too, and wait for it,
  so that `connector worker` finishes its jobs before the server's process (PID 1 in a
  container, whose exit kills everything left in it) is gone; and remove a welcome
  never shown (a server stopped before its workers were all up), which holds a
  one-time password.
- `child_exit`: a worker that exits takes its live gauges (database connections in use)
  out of /metrics; its counts stay (connector/metrics.py).
- `post_worker_init`: with `connector serve --bootstrap` (`make run`), the worker whose
  start completes the server's `workers` shows what bootstrap made (the file
  `ENV_WELCOME` names, then removed): the last lines on the terminal, after every
  worker's "Booting worker" line and start-up log, whichever worker finishes last.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from connector import supervise
from connector.metrics import child_exit

__all__ = ["child_exit", "on_exit", "post_worker_init"]
ENV_WELCOME = "CONNECTOR_WELCOME_FILE"
WELCOME_PREFIX = "connector-welcome-"  # the file's name, made by `connector serve`


def on_exit(_server: Any) -> None:
    stop_seconds = float(os.environ.get(supervise.ENV_STOP, "30") or 30)
    supervise.stop_supervisor(stop_seconds + 5)
    path = os.environ.get(ENV_WELCOME)
    # Only a file serve made (tempfile, WELCOME_PREFIX): never whatever else the
    # variable might name.
    if path and os.path.basename(path).startswith(WELCOME_PREFIX):
        for name in (path, path + ".up"):
            with contextlib.suppress(OSError):  # shown and removed already
                os.unlink(name)


def post_worker_init(worker: Any) -> None:
    path = os.environ.get(ENV_WELCOME)
    if not path or not os.path.exists(path) or not _completes_the_start(path, worker):
        return
    try:
        with open(path) as shown:
            print(shown.read(), end="", flush=True)
        os.unlink(path)
        os.unlink(path + ".up")
    except OSError:  # shown already
        pass


def _completes_the_start(path: str, worker: Any) -> bool:
    """Count this worker as up, in a file beside the welcome: one byte appended (each
    append lands whole at the end, and this descriptor's offset after it is this
    worker's place in the count). True for the worker that makes the count the server's
    `workers`, in whatever order the workers finished starting."""
    try:
        fd = os.open(path + ".up", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        os.write(fd, b".")
        return bool(os.lseek(fd, 0, os.SEEK_CUR) == worker.cfg.workers)
    finally:
        os.close(fd)
