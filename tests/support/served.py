"""A live `connector serve` in a subprocess, for the tests that need a real gunicorn."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(database_url: str, tmp_path: Path, *args: str, log_name: str = "serve.log",
           **env_extra: str) -> Iterator[str]:
    """`connector serve *args` on a free port, with no scheduler process, until /readyz
    answers 200; yields its base URL, stops it (SIGTERM to its process group) after,
    and fails the test if its log holds a traceback."""
    port = free_port()
    env = {**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
           "CONNECTOR_DATABASE__URL": database_url, "CONNECTOR_LOGGING__ACCESS_LOG": "false",
           "CONNECTOR_SERVER__SCHEDULERS": "external", **env_extra}
    log = tmp_path / log_name
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "connector.cli", "serve",
                                   "--port", str(port), *args], env=env, cwd=tmp_path,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still starting
                pass
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.2)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert "Traceback" not in log.read_text()
