"""The child process of tests/azure_sync/test_crash.py: runs sync rounds that SIGKILL
themselves at a chosen point.

Started once per test module as `python -m tests.azure_sync.crash_child` (from the
repository root). It imports the connector once, then reads one JSON job per line from
stdin and runs each in a fork of itself, so that a job costs a fork instead of an
interpreter start (about a second). The fork opens its own engine (nothing is connected
before the fork), runs one round for the job's tenant against the fake Graph the test
process serves, and kills itself with SIGKILL at the job's kill point. For every job
this process writes one JSON line to stdout: how the fork ended (`signal`, `exit`).

Kill points (`kill`, with `page` where it applies):

- `after_page` N: right after page N committed (`RoundOptions.after_page`);
- `in_page` N: page N applied in its transaction, not committed (`PageApplier.apply`
  wrapped here, in the child only);
- `in_complete`: the round's end has applied the staged disables/deletions in its
  transaction, not committed (`staging.apply_staged` wrapped);
- `after_complete`: the round's end committed, the lease not released yet
  (`writer.log_event(..., "succeeded", ...)` wrapped);
- `piped` N: the Nth page handed to the page writer process (`azure_sync.pipeline`) is
  in flight, not yet answered: the round dies, the writer (its child, left running)
  commits the page whole or not at all. Before dying the fork writes `writer pid: P`
  to stderr, so that the test can wait for the writer to end;
- `in_resync`: Graph said the delta state is gone; the failed round is closed and the
  full round that replaces it started, in a transaction not committed (`rounds._start`
  wrapped).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Any

import msal  # noqa: F401  (imported before the fork: a job then costs no import)
import psycopg  # noqa: F401
import requests  # noqa: F401
import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401
import sqlalchemy.dialects.sqlite.pysqlite  # noqa: F401

from azure_sync import applier, pipeline, rounds, staging, writer
from azure_sync.service import SyncService
from connector.config import AzureSyncSettings, DatabaseSettings
from connector.db import make_engine, make_sessionmaker

KILL_POINTS = ("after_page", "in_page", "in_complete", "after_complete", "in_resync",
               "piped")


def die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(kill: str, page: int | None) -> Any:
    """Install the kill point; return the after_page hook (or None)."""
    if kill == "after_page":
        def after_page(pages: int, phase: str) -> None:
            if pages == page:
                die()
        return after_page
    if kill == "in_page":
        apply = applier.PageApplier.apply
        applied = [0]

        def apply_then_die(self: Any, phase: str, items: list[Any], careful: bool,
                           *args: Any, **kwargs: Any) -> None:
            apply(self, phase, items, careful, *args, **kwargs)
            if not careful:  # a page (the careful pass re-applies a failed one)
                applied[0] += 1
                if applied[0] == page:
                    die()
        applier.PageApplier.apply = apply_then_die  # type: ignore[method-assign]
    elif kill == "in_complete":
        apply_staged = staging.apply_staged

        def apply_staged_then_die(*args: Any, **kwargs: Any) -> dict[str, int]:
            apply_staged(*args, **kwargs)
            die()
            raise AssertionError("unreachable")
        staging.apply_staged = apply_staged_then_die
    elif kill == "after_complete":
        log_event = writer.log_event

        def log_event_then_die(tenant_id: str, run_id: int | None, what: str,
                               detail: str) -> None:
            log_event(tenant_id, run_id, what, detail)
            if what == "succeeded":
                die()
        writer.log_event = log_event_then_die
    elif kill == "in_resync":
        start = rounds._start

        def start_then_die(s: Any, state: Any, client: Any, now: Any, trigger: str) -> None:
            start(s, state, client, now, trigger)
            if trigger == "resync":
                die()
        rounds._start = start_then_die
    elif kill == "piped":
        send = pipeline.PageWriter.send
        sent = [0]

        def send_then_die(self: Any, captured: Any) -> None:
            send(self, captured)
            sent[0] += 1
            if sent[0] == page:
                print(f"writer pid: {self.process.pid}", file=sys.stderr)
                die()
        pipeline.PageWriter.send = send_then_die  # type: ignore[method-assign]
    else:
        raise ValueError(f"unknown kill point {kill!r}; one of {KILL_POINTS}")
    return None


def run_job(job: dict[str, Any]) -> int:
    after_page = arm(job["kill"], job.get("page"))
    settings = AzureSyncSettings(**job["settings"])
    engine = make_engine(DatabaseSettings(url=job["database_url"], pool_size=2))
    service = SyncService(settings, make_sessionmaker(engine),
                          make_sessionmaker(engine, writes=True), verify=job["ca_path"])
    result = service.run(job["tenant_id"], "manual", rounds.RoundOptions(
        lease_seconds=job["lease_seconds"], after_page=after_page))
    # Reaching this line means the kill point was never reached: say what happened.
    print(f"round ended without reaching {job['kill']} {job.get('page')}: {result}",
          file=sys.stderr)
    return 3


def main() -> None:
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 2
            try:
                os.dup2(2, 1)  # stdout is the protocol's: the fork writes to stderr only
                code = run_job(job)
            except BaseException:  # noqa: BLE001 - reported to the test, then exit
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)


if __name__ == "__main__":
    main()
