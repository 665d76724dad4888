"""Prometheus metrics: what each process counts, cheaply, where things happen.

    HTTP requests, SCIM errors ─┐
    Entra sync rounds ──────────┼─> prometheus_client metrics ─> in memory, or this
    month closes ───────────────┤                                process's files in
    database pool ──────────────┘                                [metrics] multiprocess_dir
                                                                        │
    /metrics (connector.metrics_export) adds up every process's files ──┘ and reads a
    few figures from the database at scrape time (sync lag, held and quarantined
    tenants, outbox backlogs).

prometheus_client decides when it is first imported whether values go to files (the
PROMETHEUS_MULTIPROC_DIR variable is set) or stay in memory. It is therefore imported on
first use only, and `connector serve` and `connector worker` call `prepare_directory`
before anything counts. Without it (tests, a bench in one process) the counts live in
this process's own registry, and /metrics reports that.

Every label value comes from a short fixed list, never a tenant id, a path or anything
a client sent: the number of series stays the same however many tenants there are.
What each metric means is in docs/operations.md, "Metrics"; a hook here costs a dict
lookup and one or two increments (docs/benchmarks.md has the SCIM figures).
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any

from connector.config import MetricsSettings

ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client's files of gauges that count only while their process lives.
LIVE_GAUGE_PREFIXES = ("gauge_livesum_", "gauge_liveall_", "gauge_livemin_", "gauge_livemax_",
                       "gauge_livemostrecent_")

# Where a request went, by path prefix (the admin UI is everything else).
SURFACES = (("/scim/", "scim"), ("/api/", "api"), ("/reporting/", "api"),
            ("/healthz", "health"), ("/readyz", "health"), ("/metrics", "health"))
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A tenant's class: how its directory is fed (its size would need a database read).
TENANT_CLASSES = ("scim", "entra", "none")

HTTP_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUND_BUCKETS = (0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
CLOSE_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

_process = "web"  # which kind of process counts: web | worker | cli


def enabled(settings: MetricsSettings) -> bool:
    """Whether /metrics is on: a token or a listener of its own is set."""
    return bool(settings.token or settings.bind)


def multiprocess() -> bool:
    """Whether this process writes its counts to files other processes read."""
    return bool(os.environ.get(ENV))


class Instruments:
    """The metric objects of this process, made once (`instruments()`)."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
            values,
        )

        if getattr(values.ValueClass, "_multiprocess", False) != multiprocess():
            raise RuntimeError(
                "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set (or "
                "unset) in this process: its counts would not reach /metrics. Set it before "
                "the process starts, or call connector.metrics.prepare_directory first.")
        # The *_created series (when a series first appeared) only double the output.
        disable_created_metrics()
        # In one process the metrics live in a registry of our own; with files, in
        # none (the files are what /metrics reads, connector.metrics_export).
        self.registry = None if multiprocess() else CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "connector_http_requests", "HTTP requests answered.",
            ["surface", "method", "status", "tenant_class"], registry=registry)
        self.latency = Histogram(
            "connector_http_request_duration_seconds",
            "Time from a request's arrival in the app to its response.",
            ["surface", "method", "tenant_class"], buckets=HTTP_BUCKETS, registry=registry)
        self.scim_errors = Counter(
            "connector_scim_errors", "SCIM error responses (RFC 7644 §3.12).",
            ["status", "scim_type"], registry=registry)
        self.sync_rounds = Counter(
            "connector_sync_rounds", "Entra ID sync rounds ended.", ["result"],
            registry=registry)
        self.sync_round_seconds = Histogram(
            "connector_sync_round_duration_seconds", "Duration of Entra ID sync rounds.",
            ["result"], buckets=ROUND_BUCKETS, registry=registry)
        self.month_closes = Counter(
            "connector_month_closes", "Month closes attempted.", ["result"],
            registry=registry)
        self.month_close_seconds = Histogram(
            "connector_month_close_duration_seconds", "Duration of month closes.",
            ["result"], buckets=CLOSE_BUCKETS, registry=registry)
        self.pool_checked_out = Gauge(
            "connector_db_pool_checked_out", "Database connections in use.",
            ["process", "pool"], multiprocess_mode="livesum", registry=registry)
        self.pool_size = Gauge(
            "connector_db_pool_size", "Database connections a pool keeps.",
            ["process", "pool"], multiprocess_mode="livesum", registry=registry)
        self.pool_max = Gauge(
            "connector_db_pool_max",
            "Database connections a pool may hold at once (kept and overflow).",
            ["process", "pool"], multiprocess_mode="livesum", registry=registry)
        # label values -> child: labels() validates and locks on every call.
        self.children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*values)
        return found


_instruments: Instruments | None = None
_lock = threading.Lock()
_watched: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def instruments() -> Instruments:
    """This process's metric objects (made on first use, after `prepare_directory`)."""
    global _instruments
    found = _instruments
    if found is None:
        with _lock:
            if _instruments is None:
                _instruments = Instruments()
            found = _instruments
    return found


# -- hooks ------------------------------------------------------------------------------


def surface_of(path: str) -> str:
    for prefix, surface in SURFACES:
        if path.startswith(prefix):
            return surface
    return "ui"


def tenant_class(tenant: Any) -> str:
    """"entra" or "scim" (how the tenant's directory is fed), "none" without a tenant."""
    if tenant is None:
        return "none"
    return "entra" if getattr(tenant, "entra_sync", False) else "scim"


def observe_request(path: str, method: str, status: int, tenant: Any, seconds: float) -> None:
    m = instruments()
    surface = surface_of(path)
    method = method if method in METHODS else "OTHER"
    kind = tenant_class(tenant)
    m.child(m.requests, surface, method, str(status), kind).inc()
    m.child(m.latency, surface, method, kind).observe(seconds)


def scim_error(status: int, scim_type: str | None) -> None:
    m = instruments()
    m.child(m.scim_errors, str(status), scim_type or "none").inc()


def sync_round(result: str, seconds: float) -> None:
    """A round ended: succeeded, failed, awaiting_approval, skipped, busy or crashed (it
    raised)."""
    m = instruments()
    m.child(m.sync_rounds, result).inc()
    m.child(m.sync_round_seconds, result).observe(seconds)


def month_close(result: str, seconds: float | None) -> None:
    """A close ended: closed, reissued, already_closed, not_due or failed (None: it never
    started, a tenant's months could not even be listed: counted, not timed)."""
    m = instruments()
    m.child(m.month_closes, result).inc()
    if seconds is not None:
        m.child(m.month_close_seconds, result).observe(seconds)


def set_process(kind: str) -> None:
    """Say which kind of process this is (web, worker, cli) before pools are watched."""
    global _process
    _process = kind


def watch_pool(engine: Any, name: str) -> None:
    """Report the engine's pool use as `pool=name` (app, sync or billing) of this process.

    The gauge is set from the pool's own count at every checkout and checkin: two
    writes per request, never a drift from a missed event.
    """
    from sqlalchemy import event

    m = instruments()
    pool = engine.pool
    with _lock:  # one pair of listeners per pool and name, however many apps share it
        watched = _watched.setdefault(pool, set())
        if name in watched:
            return
        watched.add(name)
    size = pool.size() if hasattr(pool, "size") else 1
    m.child(m.pool_size, _process, name).set(size)
    m.child(m.pool_max, _process, name).set(size + max(getattr(pool, "_max_overflow", 0), 0))
    checked_out = m.child(m.pool_checked_out, _process, name)
    count = getattr(pool, "checkedout", None)
    if count is None:  # a pool without a count (SQLite in memory): nothing to follow
        return

    def _moved(*_args: Any) -> None:
        checked_out.set(count())

    event.listen(pool, "checkout", _moved)
    event.listen(pool, "checkin", _moved)


# -- several processes -------------------------------------------------------------------


def prepare_directory(path: str, keep_counts: bool = False) -> Path:
    """Make `path` the directory this process and the processes it starts count in.

    Called by `connector serve` and `connector worker` before anything counts: creates
    the directory, removes what processes that are gone left there, then sets
    PROMETHEUS_MULTIPROC_DIR, which gunicorn's workers and the scheduler process inherit.

    `connector serve` (keep_counts False) starts the service: the files of processes
    that are gone go (a previous run's; the counters start again, which Prometheus reads
    as a restart), while a running `connector worker` keeps its own. `connector worker`
    (keep_counts True), also when its supervisor restarts it, removes only the live
    gauges of processes that are gone: removing counts would make the totals go down.
    """
    directory = Path(path).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for file in directory.glob("*.db"):
        pid = _pid_of(file)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        if not keep_counts or file.name.startswith(LIVE_GAUGE_PREFIXES):
            file.unlink(missing_ok=True)
    os.environ[ENV] = str(directory)
    return directory


def _pid_of(file: Path) -> int | None:
    """The process id in prometheus_client's file names (counter_123.db, gauge_livesum_123.db)."""
    tail = file.stem.rpartition("_")[2]
    return int(tail) if tail.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def mark_process_dead(pid: int, path: str | None = None) -> None:
    """Drop a stopped process's live gauges (its pool use); its counters stay counted.
    gunicorn's master calls it for each worker that exits (`child_exit`)."""
    path = path or os.environ.get(ENV)
    if not path:
        return
    from prometheus_client import multiprocess as prometheus_multiprocess

    prometheus_multiprocess.mark_process_dead(pid, path)


def child_exit(_server: Any, worker: Any) -> None:
    """gunicorn's `child_exit` hook (connector.cli serve, connector/gunicorn_hooks.py)."""
    mark_process_dead(worker.pid)
