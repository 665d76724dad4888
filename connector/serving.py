"""How `connector serve` runs gunicorn: worker classes, and what gevent needs.

Three gunicorn worker classes are supported:

- ``gevent`` (the default): one event loop per process, a greenlet per connection,
  keep-alive. While one request waits for PostgreSQL another runs its Python, without
  the thread hand-offs gthread pays; on the 2-core bench machine it is the fastest of
  the three on both databases (docs/benchmarks.md), and a slow client costs the others
  nothing. A greenlet is never preempted, so a CPU-bound scheduler job would stall every
  request: with gevent the schedulers must run in ``connector worker``, as they must with
  several web processes anyway, and so must the rounds an admin starts ("Run now" is a
  request that a worker takes, azure_sync/on_demand.py).
- ``gthread``: OS threads in each process, keep-alive. The only one that can also run
  the schedulers inside the web process (``schedulers = "web"``), because a scheduler
  job (an Entra round, a month close) is long and CPU-bound, and threads share the CPU
  with requests preemptively.
- ``sync``: one request at a time per process, ``Connection: close``.

Where the schedulers run is `server.schedulers`: by default (``"worker"``) `connector
serve` starts ``connector worker`` as a supervised child process (connector/supervise.py)
whatever the worker class, so the web processes serve requests only.

`gunicorn -k gevent wsgi:app` works too: `wsgi.py` never starts a scheduler.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, get_args
from wsgiref.types import StartResponse, WSGIEnvironment

from connector.config import Settings, WorkerClass

WORKER_CLASSES: tuple[WorkerClass, ...] = get_args(WorkerClass)

# How long a URL (path and query string) may be. The application answers a longer one
# with a 414 in the error format of the surface it names (SCIM error JSON under
# /scim/v2, a problem under /api/v1). gunicorn refuses request lines beyond its own
# limit before the application sees them, with an HTML page a SCIM client cannot read:
# its limit is raised to the largest it keeps bounded (8,190 bytes; 0 would read a line
# of any length into memory), so that every URL from 4 KB to 8 KB gets our answer, and
# its worker classes answer a longer line in JSON too (connector/workers.py).
MAX_URL_BYTES = 4096
GUNICORN_LIMIT_REQUEST_LINE = 8190


def url_bytes(environ: WSGIEnvironment) -> int:
    """The length of the request's URL as the client sent it (path and query string;
    gunicorn's RAW_URI has both, other servers' may have the path alone)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    query = environ.get("QUERY_STRING", "")
    parts = len(environ.get("PATH_INFO", "")) + (len(query) + 1 if query else 0)
    return max(len(raw), parts)


def worker_class_problem(settings: Settings, worker_class: str) -> str | None:
    """Why `connector serve` cannot run with this worker class, or None."""
    if worker_class not in WORKER_CLASSES:
        return (f"server.worker_class: {worker_class!r} is not one of "
                f"{', '.join(WORKER_CLASSES)}.")
    if worker_class != "gevent" or settings.server.schedulers != "web":
        return None
    in_web = [section for section, on in (("azure_sync", settings.azure_sync.scheduler_in_web),
                                          ("billing", settings.billing.scheduler_in_web)) if on]
    if in_web:
        return ("The gevent worker (server.worker_class, the default) cannot run the "
                "schedulers: a long Entra round or month close would stall every request "
                "of the process. Set scheduler_in_web = "
                f"false in [{'] and ['.join(in_web)}] (or CONNECTOR_"
                f"{'__SCHEDULER_IN_WEB=false, CONNECTOR_'.join(s.upper() for s in in_web)}"
                "__SCHEDULER_IN_WEB=false) and run `connector worker` beside `connector "
                "serve`, or set schedulers = \"worker\" in [server] (the default: serve "
                "runs `connector worker` itself), or serve with --worker-class gthread.")
    return None


# The web processes `[server] workers = 0` gives on PostgreSQL: one per CPU core, at most
# this many. Each keeps its own pool (up to pool_size + 10 connections under gevent), so
# four of them already ask for 60 of PostgreSQL's default max_connections of 100.
MAX_AUTO_WORKERS = 4
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cpu_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPU cores this process may use: those it may be scheduled on, or fewer where a
    cgroup (v2) quota says so (a container given 2 CPUs on a 32-core host), rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(min(cores, _quota_cores(cpu_max)), 1)


def _quota_cores(cpu_max: Path) -> int:
    """The cores a cgroup's `cpu.max` ("QUOTA PERIOD", or "max PERIOD": no quota)
    grants, rounded up; a very large number where there is no such file or quota."""
    unlimited = 1 << 16
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return math.ceil(int(quota) / int(period)) if quota != "max" else unlimited
    except (OSError, ValueError, ZeroDivisionError):
        return unlimited


def web_processes(configured: int) -> int:
    """How many web processes `connector serve` starts: as configured, or for 0 (the
    default) one per CPU core, at most MAX_AUTO_WORKERS, on either database.

    PostgreSQL serves several processes' writes at once: on the 2-core bench machine two
    gevent processes served 1.66x the GETs by id and 1.33x the PATCHes of one
    (docs/benchmarks.md). SQLite takes one writer at a time; its writers of every
    process queue on a lock file (`connector.db`), so a second process doubles the
    reads and costs the writes nothing (before that queue, SQLite's busy handler
    tripled their tail latency)."""
    if configured > 0:
        return configured
    return min(cpu_cores(), MAX_AUTO_WORKERS)


def gevent_patched() -> bool:
    """True in a process whose sockets gevent has made cooperative."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("socket"))


def database_waits() -> str:
    """How psycopg waits for the server in this process: "cooperative" (other greenlets
    run meanwhile) or "blocking" (the C wait; right for threads, stalls a gevent loop)."""
    try:
        from psycopg import waiting
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return "blocking"
    # wait_c exists only where psycopg's C extension does.
    return "blocking" if waiting.wait is getattr(waiting, "wait_c", None) else "cooperative"


class WsgiApp(Protocol):
    """A WSGI application (PEP 3333) such as Flask's `app.wsgi_app`. (A protocol, not
    wsgiref's Callable alias: the parameters' names are part of the type, so a wrapper
    can take the method's place.)"""

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse
                 ) -> Iterable[bytes]: ...


def cooperative(app: WsgiApp) -> WsgiApp:
    """Under gevent, let every other ready connection run before a request starts.

    A greenlet keeps the loop until it blocks. On a keep-alive connection whose client
    sends its next request as soon as it has the answer, the next request is often
    already there, so the greenlet never blocks and one connection is served while the
    others wait, and the tail latency grows by orders of magnitude. One yield per
    request puts the connections back in turn, for about a microsecond (figures in
    docs/benchmarks.md, "Measurements behind the code").
    Without gevent the app is returned unchanged.
    """
    if not gevent_patched():
        return app
    import gevent

    def app_taking_turns(environ: WSGIEnvironment, start_response: StartResponse
                         ) -> Iterable[bytes]:
        gevent.sleep(0)
        return app(environ, start_response)

    return app_taking_turns
