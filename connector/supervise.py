"""`connector serve`'s scheduler process: one `connector worker`, kept running.

With `server.schedulers = "worker"` (the default), `connector serve` runs no scheduler
in its web processes. It starts this supervisor as a child process, which starts
`connector worker` (Entra sync rounds, month closes, notifications, pruning), and:

- starts it again when it dies (a crash, an out-of-memory kill), after a pause that
  grows with repeated failures (1 s, 2 s, 5 s … up to a minute; back to 1 s once it
  has run for a minute), saying so on the terminal;
- stops it when the server stops: on SIGTERM or SIGINT (Ctrl-C reaches the whole
  process group; a container runtime signals PID 1, whose gunicorn `on_exit` hook
  passes it on, see `stop_supervisor`), and when its parent is gone (the server was
  killed). "Stop" is SIGTERM, then `connector worker` finishes the jobs it is running
  (a round in flight ends at its next page, and resumes from its last committed page
  at the next round anyway) for up to `server.worker_stop_seconds`, then SIGKILL.

A process rather than a thread of the server: the gunicorn master reaps every child
it has (os.waitpid(-1)) and may replace itself (the gevent path execs gunicorn), while
this small process owns its one child, whatever the server does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
HEALTHY_AFTER_S = 60.0  # a worker that ran this long is healthy: the next delay is 1 s
PARENT_CHECK_S = 0.5
ENV_PID = "CONNECTOR_SUPERVISOR_PID"  # set in the server's environment for its on_exit
ENV_STOP = "CONNECTOR_SUPERVISOR_STOP_SECONDS"  # and how long the worker may take


def say(text: str) -> None:
    # The terminal or the log reader may be gone (a closed pipe): the supervisor must
    # still stop `connector worker`, rather than die here and leave it running.
    with contextlib.suppress(OSError):
        print(f"[scheduler] {text}", file=sys.stderr, flush=True)


class Supervisor:
    """Run `command`, start it again when it dies, stop it on request."""

    def __init__(self, command: Sequence[str], stop_seconds: float,
                 parent_pid: int | None = None,
                 delays: Sequence[float] = RESTART_DELAYS) -> None:
        self.command = list(command)
        self.stop_seconds = stop_seconds
        self.parent_pid = parent_pid
        self.delays = list(delays)
        self.stopping = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Our own interpreter and module, fixed arguments: no shell, no outside input.
        child = subprocess.Popen(self.command)  # noqa: S603
        self.starts += 1
        if self.starts > 1:  # the first start is in the server's own serving line
            say(f"`connector worker` started again (pid {child.pid}).")
        return child

    def run(self) -> int:
        """Supervise until stopped; returns 0 (stopped as asked)."""
        failures = 0
        while not self.stopping.is_set():
            self.child = self._spawn()
            started = time.monotonic()
            code = self._wait_child()
            if self.stopping.is_set():
                break
            ran = time.monotonic() - started
            failures = 0 if ran >= HEALTHY_AFTER_S else failures + 1
            delay = self.delays[min(max(failures - 1, 0), len(self.delays) - 1)]
            say(f"`connector worker` (pid {self.child.pid}) stopped unexpectedly "
                f"({_exit_words(code)}) after {ran:.0f} s; starting it again in "
                f"{delay:g} s. Its log lines above say why.")
            self.stopping.wait(delay)
        self._stop_child()
        return 0

    def _wait_child(self) -> int | None:
        """Wait for the child to exit, or for a stop (our signal, our parent gone)."""
        assert self.child is not None
        while not self.stopping.is_set():
            try:
                return self.child.wait(timeout=PARENT_CHECK_S)
            except subprocess.TimeoutExpired:
                pass
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                say("the server stopped: stopping `connector worker`.")
                self.stopping.set()
        return None

    def _stop_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=self.stop_seconds)
        except subprocess.TimeoutExpired:
            say(f"`connector worker` did not stop within {self.stop_seconds:g} s: killed. "
                "A sync round it was running resumes from its last committed page.")
            child.kill()
            child.wait()

    def stop(self, *_: object) -> None:
        self.stopping.set()


def _exit_words(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def start(config: str | None, stop_seconds: float) -> subprocess.Popen[bytes]:
    """Start the supervisor process for this server (its parent: this process)."""
    command = [sys.executable, "-m", "connector.supervise", "--parent", str(os.getpid()),
               "--stop-seconds", str(stop_seconds), "--",
               sys.executable, "-m", "connector.cli",
               *(["--config", config] if config else []), "worker", "--supervised"]
    supervisor = subprocess.Popen(command)  # noqa: S603 - fixed arguments, no shell
    os.environ[ENV_PID] = str(supervisor.pid)
    return supervisor


def stop_supervisor(timeout: float) -> None:
    """Stop the supervisor this server started (gunicorn's on_exit): SIGTERM, then wait
    until it has stopped `connector worker` (up to `timeout` s more than its own)."""
    pid = int(os.environ.get(ENV_PID, "0") or 0)
    if pid <= 0:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already (by gunicorn), or not our child
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            done = 0
        if done:
            return
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m connector.supervise")
    parser.add_argument("--parent", type=int, help="stop when this process is gone")
    parser.add_argument("--stop-seconds", type=float, default=30.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to supervise")
    supervisor = Supervisor(command, args.stop_seconds, args.parent)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, supervisor.stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
