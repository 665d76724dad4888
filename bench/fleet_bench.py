#!/usr/bin/env python3
"""Several connector processes on one PostgreSQL database, at fleet size (issue 19, point 3).

    .venv/bin/python bench/fleet_bench.py                      # 1,000 tenants, 3 + 2
    .venv/bin/python bench/fleet_bench.py --tenants 100 --interval-minutes 1 \\
        --rounds-to-watch 2                                    # a quick look
    .venv/bin/python bench/fleet_bench.py --no-pgbouncer --no-scim-load --no-kill

What it does:

1. starts bench/fake_graph_server.py with --tenants Entra tenants of --users users each
   (a process of its own: the connector shares no interpreter with it);
2. creates the PostgreSQL database --pg-name (dropped first), migrates it, creates the
   tenants, registers each for Entra sync against the fake (--interval-minutes; the
   product's interval is in whole minutes, 1 at the least) and dates them 40 days back,
   so that their earlier months are due to close (after each tenant's first round,
   as billing waits for a round that started after the month's end); and a few
   SCIM-fed tenants for the SCIM load;
3. with --pgbouncer (the default), starts Debian's pgbouncer in transaction pooling
   mode (--pgbouncer-pool server connections) between the processes and PostgreSQL;
4. starts --serve `connector serve` processes (server.schedulers = "external") and
   --workers `connector worker` processes, all on that database;
5. with --scim-load, a thread sends SCIM writes and reads to the serve processes in
   turn while it runs (requests and errors counted);
6. watches for --rounds-to-watch intervals after the first rounds, printing progress;
   with --kill, SIGKILLs a worker holding a round half way through the first watched
   interval and starts another one in its place (as `connector serve`'s supervisor
   would), then checks that another process took those rounds over;
7. reports, from the database: rounds per tenant per interval (min / max), consecutive
   rounds closer than DUE_SHARE of the interval (since a late round counts from when
   its job was due, only right after a round that started late: a catch-up, not a
   tenant synced twice in an interval),
   runs of one tenant that overlapped (must be 0), starved tenants (a gap over 1.5
   intervals between rounds, or fewer rounds than intervals watched less one: must be
   0), the sync lag (now −
   last successful round, sampled at each interval's end) p50 / p99 / max, the gap
   between consecutive rounds p50 / p99 / max, round durations, month closes (every
   due month closed exactly once, one billing.month_closed event each) and the kill's
   result (rounds taken over, seconds from the kill to the takeover).

Results go to bench/results/fleet_bench[-TAG].json and a summary on the terminal. The
machine is shared: the summary includes the load average, read it with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import requests  # noqa: E402
from sqlalchemy import func, select, update  # noqa: E402

from azure_sync import secrets  # noqa: E402
from azure_sync.scheduler import DUE_SHARE  # noqa: E402
from azure_sync.service import register  # noqa: E402
from billing.catch_up import first_month  # noqa: E402
from connector import events, migrate, tenants  # noqa: E402
from connector.config import AzureSyncSettings, BillingSettings, DatabaseSettings  # noqa: E402
from connector.db import make_engine, make_sessionmaker  # noqa: E402
from connector.events import WriteContext  # noqa: E402
from connector.models import BillingClose, Event, SyncRun, SyncState, Tenant  # noqa: E402
from connector.status import Source  # noqa: E402
from tests.support.served import free_port  # noqa: E402

T0 = time.monotonic()
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
RESULTS = ROOT / "bench" / "results"


def say(msg: str) -> None:
    print(f"[fleet {time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- set-up ---------------------------------------------------------------------------------


def start_fake_graph(args: argparse.Namespace) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    fake = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "fake_graph_server.py"), "--tenants",
         str(args.tenants), "--users", str(args.users), "--disabled", "0",
         "--page-size", "100", "--latency-ms", str(args.graph_latency_ms)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert fake.stdout is not None
    ready = json.loads(fake.stdout.readline())
    say(f"fake Graph up: {len(ready['tenants']) if 'tenants' in ready else 1} Entra "
        f"tenant(s) of {args.users} users")
    return fake, ready


def fresh_database(name: str) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f'ALTER DATABASE "{name}" SET jit = off')
    return PG_URL.format(db=name)


def seed(url: str, fake: dict[str, Any], args: argparse.Namespace, key: str
         ) -> tuple[list[str], list[str]]:
    """The synced tenants and the SCIM-fed ones' tokens."""
    engine = make_engine(DatabaseSettings(url=url))
    migrate.upgrade(engine)
    settings = AzureSyncSettings(encryption_key=key, allow_private_hosts=True)
    maker = make_sessionmaker(engine)
    apps = fake.get("tenants") or [[fake["tenant_id"], fake["client_id"],
                                    fake["client_secret"]]]
    synced, tokens = [], []
    now = dt.datetime.now(dt.UTC)
    with maker() as s:
        for n, (directory_id, client_id, secret) in enumerate(apps):
            tenant, _ = tenants.create_tenant(s, f"Fleet {n:05d}", now)
            s.flush()
            register(s, settings, WriteContext(tenant.id, Source.ADMIN, "bench", "bench", now),
                     directory_id=directory_id, client_id=client_id, secret=secret,
                     authority_host=fake["authority_host"],
                     graph_base_url=fake["graph_base_url"],
                     interval_minutes=args.interval_minutes)
            synced.append(tenant.id)
            if n % 200 == 199:
                s.commit()
                say(f"seeded {n + 1} synced tenants")
        for n in range(args.scim_tenants):
            _, issued = tenants.create_tenant(s, f"SCIM {n:03d}", now)
            tokens.append(issued.token)
        s.execute(update(Tenant).values(created_at=now - dt.timedelta(days=40)))
        s.commit()
    engine.dispose()
    return synced, tokens


@contextlib.contextmanager
def maybe_pgbouncer(url: str, args: argparse.Namespace) -> Iterator[str]:
    """The URL the processes use: through a pgbouncer of the bench's own, or direct."""
    if not args.pgbouncer:
        yield url
        return
    from tests.support import pgbouncer

    with pgbouncer.pgbouncer_process(args.pgbouncer_pool) as port:
        yield url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")


class Processes:
    def __init__(self, url: str, env: dict[str, str], workdir: Path) -> None:
        self.url, self.env, self.workdir = url, env, workdir
        self.serve: list[tuple[subprocess.Popen[bytes], int]] = []
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}

    def _env(self) -> dict[str, str]:
        return {**os.environ, "CONNECTOR_CONFIG": str(self.workdir / "none.toml"),
                "CONNECTOR_DATABASE__URL": self.url, "PYTHONPATH": str(ROOT), **self.env}

    def start_serve(self, n: int) -> None:
        port = free_port()
        with (self.workdir / f"serve-{n}.log").open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "connector.cli", "serve", "--port",
                                     str(port), "--workers", "1"], env=self._env(),
                                    cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.serve.append((proc, port))

    def start_worker(self, name: str) -> int:
        with (self.workdir / f"{name}.log").open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "connector.cli", "worker"],
                                    env=self._env(), cwd=self.workdir, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.workers[proc.pid] = proc
        self.started[proc.pid] = time.time()
        return proc.pid

    def wait_ready(self, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        for proc, port in self.serve:
            while True:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"http://127.0.0.1:{port}/readyz",
                                    timeout=2).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"serve on port {port} did not start; see "
                                     f"{self.workdir}/serve-*.log")
                time.sleep(0.5)

    def stop(self) -> None:
        everything = [p for p, _ in self.serve] + list(self.workers.values())
        for proc in everything:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in everything:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# -- SCIM load ------------------------------------------------------------------------------


class ScimLoad(threading.Thread):
    """Create users and read them back, round-robin over the serve processes."""

    def __init__(self, ports: list[int], tokens: list[str]) -> None:
        super().__init__(daemon=True)
        self.ports, self.tokens = ports, tokens
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self.latencies: list[float] = []

    def run(self) -> None:
        http = requests.Session()
        n = 0
        while not self.stop.is_set() and self.tokens:
            token = self.tokens[n % len(self.tokens)]
            base = f"http://127.0.0.1:{self.ports[n % len(self.ports)]}/scim/v2"
            auth = {"Authorization": f"Bearer {token}",
                    "Content-Type": "application/scim+json"}
            started = time.perf_counter()
            try:
                made = http.post(f"{base}/Users", headers=auth, timeout=30, json={
                    "schemas": [USER], "userName": f"u{n}-{uuid.uuid4().hex[:6]}@x.example"})
                self.counts[f"POST {made.status_code}"] += 1
                if made.status_code == 201:
                    other = f"http://127.0.0.1:{self.ports[(n + 1) % len(self.ports)]}/scim/v2"
                    got = http.get(f"{other}/Users/{made.json()['id']}", headers=auth,
                                   timeout=30)
                    self.counts[f"GET {got.status_code}"] += 1
            except requests.RequestException as exc:
                self.counts[type(exc).__name__] += 1
            self.latencies.append(time.perf_counter() - started)
            n += 1


# -- watching -------------------------------------------------------------------------------


def runs_of(maker: Any, synced: set[str]) -> list[SyncRun]:
    with maker() as s:
        return [r for r in s.scalars(select(SyncRun).order_by(SyncRun.id))
                if r.tenant_id in synced]


def rounds_by_tenant(runs: list[SyncRun]) -> dict[str, list[list[SyncRun]]]:
    out: dict[str, dict[int, list[SyncRun]]] = {}
    for run in runs:
        out.setdefault(run.tenant_id, {}).setdefault(run.round_key, []).append(run)
    return {t: list(r.values()) for t, r in out.items()}


def lags(maker: Any, synced: set[str], now: dt.datetime) -> list[float]:
    with maker() as s:
        rows = s.execute(select(SyncState.tenant_id, SyncState.last_success_at)).all()
    seen = {t: (now - at).total_seconds() for t, at in rows if t in synced and at}
    return [seen.get(t, float("inf")) for t in synced]


def kill_one(maker: Any, procs: Processes, seconds: float) -> dict[str, Any]:
    """SIGKILL a worker seen holding a round open within `seconds`; start another in
    its place."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with maker() as s:
            held = s.execute(select(SyncState.tenant_id, SyncState.run_id,
                                    SyncState.lease_owner).where(
                SyncState.run_id.is_not(None), SyncState.lease_owner.is_not(None))).all()
        for _, _, owner in held:
            pid = int(str(owner).split(":")[1])
            if pid in procs.workers and procs.workers[pid].poll() is None:
                os.killpg(pid, signal.SIGKILL)
                procs.workers[pid].wait()
                killed_at = dt.datetime.now(dt.UTC)
                with maker() as s:
                    open_rounds = {t: r for t, r, o in s.execute(
                        select(SyncState.tenant_id, SyncState.run_id,
                               SyncState.lease_owner).where(
                            SyncState.run_id.is_not(None))).all()
                        if o and f":{pid}:" in o}
                new = procs.start_worker(f"worker-{len(procs.workers)}")
                say(f"killed worker {pid} holding {len(open_rounds)} round(s) open; "
                    f"started worker {new} in its place")
                return {"pid": pid, "at": killed_at, "rounds": open_rounds}
        time.sleep(0.2)
    return {"pid": None, "at": None, "rounds": {}}


def kill_result(kill: dict[str, Any], runs: list[SyncRun]) -> dict[str, Any]:
    if not kill.get("rounds"):
        return {"killed_rounds": 0, "note": "no worker was seen holding a round"}
    taken, waits, marked = 0, [], 0
    for run_id in kill["rounds"].values():
        first = next((r for r in runs if r.id == run_id), None)
        later = [r for r in runs if r.round_id == run_id]
        if first is not None and first.status == "failed" and \
                "stopped before it finished" in (first.error or ""):
            marked += 1
        done = [r for r in later if r.status == "succeeded"]
        if done:
            taken += 1
            waits.append((later[0].started_at - kill["at"]).total_seconds())
    return {"killed_pid": kill["pid"], "killed_rounds": len(kill["rounds"]),
            "marked_failed": marked, "taken_over_and_succeeded": taken,
            "takeover_seconds_max": round(max(waits), 1) if waits else None}


def closes(maker: Any, now: dt.datetime) -> dict[str, Any]:
    grace = dt.timedelta(minutes=BillingSettings().grace_minutes)
    with maker() as s:
        wanted = set()
        for tenant in s.scalars(select(Tenant)):
            month = first_month(tenant)
            while month.end(tenant.time_zone) + grace <= now:
                wanted.add((tenant.id, str(month)))
                month = month.next()
        closed = Counter(s.execute(select(BillingClose.tenant_id, BillingClose.month).where(
            BillingClose.state == "closed")).all())
        announced = Counter((e.tenant_id, e.new_value["month"]) for e in s.scalars(
            select(Event).where(Event.kind == events.MONTH_CLOSED)))
        building = s.scalar(select(func.count()).select_from(BillingClose).where(
            BillingClose.state == "building")) or 0
    return {"due": len(wanted), "closed": len(set(closed) & wanted),
            "closed_twice": sum(1 for c in closed.values() if c > 1),
            "announced_twice": sum(1 for c in announced.values() if c > 1),
            "missing": len(wanted - set(closed)), "leftover_attempts": building}


def analyse(runs: list[SyncRun], synced: set[str], start: dt.datetime, interval: dt.timedelta,
            watched: int) -> dict[str, Any]:
    """Rounds per tenant in each interval window from `start` (a tenant's rounds drift
    by up to the jitter, so a window may hold 0 or 2 of them at its edges: the gaps
    between consecutive rounds are the measure), rounds closer than DUE_SHARE of the
    interval (only after a late round: its tenant's next one is not pushed back),
    overlapping runs, starved tenants (a gap over 1.5
    intervals, or fewer rounds than windows less one)."""
    by_tenant = rounds_by_tenant(runs)
    per_window: list[Counter[int]] = []
    for k in range(watched):
        low, high = start + k * interval, start + (k + 1) * interval
        counts = Counter({t: 0 for t in synced})
        for t, rounds in by_tenant.items():
            counts[t] = sum(1 for r in rounds if low <= r[0].started_at < high)
        per_window.append(Counter(counts.values()))
    gaps, doubles, overlaps, durations, starved = [], 0, 0, [], set()
    for t in synced:
        rounds = by_tenant.get(t, [])
        starts = [r[0].started_at for r in rounds]
        for a, b in zip(starts, starts[1:], strict=False):
            if b < start:  # catching up, before the watch
                continue
            gap = (b - a).total_seconds()
            gaps.append(gap)
            doubles += gap < DUE_SHARE * interval.total_seconds()
            if gap > 1.5 * interval.total_seconds():
                starved.add(t)
        if sum(1 for s in starts if s >= start) < watched - 1:
            starved.add(t)
        flat = sorted((r for rs in rounds for r in rs), key=lambda r: r.started_at)
        for a, b in zip(flat, flat[1:], strict=False):
            if a.finished_at is None or a.finished_at > b.started_at:
                overlaps += 1
        durations += [(rs[-1].finished_at - rs[0].started_at).total_seconds()
                      for rs in rounds if rs[-1].finished_at and rs[-1].status == "succeeded"]
    statuses = Counter(r.status for r in runs)
    return {
        "windows": [{"rounds_per_tenant": dict(sorted(c.items()))} for c in per_window],
        "rounds_per_tenant_min": min((min(c) for c in per_window if c), default=None),
        "rounds_per_tenant_max": max((max(c) for c in per_window if c), default=None),
        "synced_twice_within_due_share": doubles, "overlapping_runs": overlaps,
        "starved_tenants": len(starved),
        "gap_s": {"p50": round(pct(gaps, 0.5), 1), "p99": round(pct(gaps, 0.99), 1),
                  "max": round(max(gaps, default=float("nan")), 1)},
        "round_s": {"p50": round(pct(durations, 0.5), 2),
                    "p99": round(pct(durations, 0.99), 2)},
        "run_statuses": dict(statuses)}


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tenants", type=int, default=1000, help="tenants registered for sync")
    p.add_argument("--users", type=int, default=50, help="users per tenant's directory")
    p.add_argument("--serve", type=int, default=3, help="`connector serve` processes")
    p.add_argument("--workers", type=int, default=2, help="`connector worker` processes")
    p.add_argument("--interval-minutes", type=int, default=5,
                   help="minutes between a tenant's rounds (whole minutes: the product's "
                        "unit; 1 at the least)")
    p.add_argument("--rounds-to-watch", type=int, default=2,
                   help="intervals watched after the first rounds")
    p.add_argument("--lease-seconds", type=int, default=30,
                   help="azure_sync.lease_seconds: how soon a killed round is taken over")
    p.add_argument("--pgbouncer", action=argparse.BooleanOptionalAction, default=True,
                   help="through Debian's pgbouncer in transaction pooling mode")
    p.add_argument("--pgbouncer-pool", type=int, default=20,
                   help="pgbouncer's server connections to PostgreSQL")
    p.add_argument("--pool-size", type=int, default=3, help="database.pool_size per engine")
    p.add_argument("--scim-load", action=argparse.BooleanOptionalAction, default=True,
                   help="SCIM writes and reads against the serve processes meanwhile")
    p.add_argument("--scim-tenants", type=int, default=10)
    p.add_argument("--kill", action=argparse.BooleanOptionalAction, default=True,
                   help="SIGKILL a worker mid-round and check the takeover")
    p.add_argument("--graph-latency-ms", type=float, default=20.0)
    p.add_argument("--pg-name", default="connector_fleet_bench")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    if args.interval_minutes < 1:
        p.error("--interval-minutes must be 1 or more")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / f"fleet-{os.getpid()}"
    workdir.mkdir(exist_ok=True)
    interval = dt.timedelta(minutes=args.interval_minutes)
    fake, ready = start_fake_graph(args)
    key = secrets.new_key()
    url = fresh_database(args.pg_name)
    synced_list, tokens = seed(url, ready, args, key)
    synced = set(synced_list)
    say(f"database {args.pg_name}: {len(synced)} synced tenants, {len(tokens)} SCIM "
        f"tenants, created 40 days ago; load {load()}")
    maker = make_sessionmaker(make_engine(DatabaseSettings(url=url, pool_size=2)))
    env = {"CONNECTOR_DATABASE__PGBOUNCER": "true" if args.pgbouncer else "false",
           "CONNECTOR_DATABASE__POOL_SIZE": str(args.pool_size),
           "CONNECTOR_AZURE_SYNC__ENCRYPTION_KEY": key,
           "CONNECTOR_AZURE_SYNC__ALLOW_PRIVATE_HOSTS": "true",
           "CONNECTOR_AZURE_SYNC__CA_BUNDLE": ready["ca_path"],
           "CONNECTOR_AZURE_SYNC__GRAPH_SCOPE": "https://graph.microsoft.com/.default",
           "CONNECTOR_AZURE_SYNC__LEASE_SECONDS": str(args.lease_seconds),
           "CONNECTOR_BILLING__CLOSE_CHECK_MINUTES": "1",
           "CONNECTOR_SERVER__SCHEDULERS": "external", "CONNECTOR_SERVER__THREADS": "4",
           "CONNECTOR_LOGGING__ACCESS_LOG": "false"}
    report: dict[str, Any] = {"args": vars(args), "load_start": load()}
    scim: ScimLoad | None = None
    try:
        with maybe_pgbouncer(url, args) as process_url:
            procs = Processes(process_url, env, workdir)
            try:
                for n in range(args.serve):
                    procs.start_serve(n)
                for n in range(args.workers):
                    procs.start_worker(f"worker-{n}")
                first_start = dt.datetime.now(dt.UTC)
                procs.wait_ready()
                say(f"{args.serve} serve and {args.workers} worker processes up "
                    f"({'through pgbouncer' if args.pgbouncer else 'direct'})")
                if args.scim_load:
                    scim = ScimLoad([port for _, port in procs.serve], tokens)
                    scim.start()
                report.update(watch(maker, procs, synced, interval, args, first_start, scim))
            finally:
                if scim is not None:
                    scim.stop.set()
                procs.stop()
    finally:
        assert fake.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            fake.stdin.write('{"cmd": "stop"}\n')
            fake.stdin.flush()
        fake.wait(timeout=30)
    if scim is not None:
        report["scim"] = {"requests": dict(scim.counts),
                          "pair_latency_ms_p50": round(pct(scim.latencies, 0.5) * 1000, 1),
                          "pair_latency_ms_p99": round(pct(scim.latencies, 0.99) * 1000, 1)}
    report["rounds_due_within_due_share"] = due_doubles(workdir, interval)
    tracebacks = sum(p.read_text(errors="replace").count("Traceback")
                     for p in workdir.glob("*.log"))
    report["tracebacks_in_logs"] = tracebacks
    report["load_end"] = load()
    out = RESULTS / f"fleet_bench{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    summary(report)
    say(f"written {out}; process logs in {workdir}")


def due_doubles(workdir: Path, interval: dt.timedelta) -> int:
    """Consecutive scheduled rounds of a tenant whose jobs were due less than DUE_SHARE
    of the interval apart (a tenant synced twice in an interval: must be 0), from the
    due times the workers log with each round they started."""
    due: dict[str, set[dt.datetime]] = {}
    for path in workdir.glob("worker-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"scheduled sync round"' not in line:
                continue
            entry = json.loads(line)
            if entry.get("run") is not None and entry.get("status") != "skipped":
                due.setdefault(entry["tenant"], set()).add(
                    dt.datetime.fromisoformat(entry["due"]))
    doubles = 0
    for times in due.values():
        ordered = sorted(times)
        doubles += sum(1 for a, b in zip(ordered, ordered[1:], strict=False)
                       if b - a < interval * DUE_SHARE)
    return doubles


def watch(maker: Any, procs: Processes, synced: set[str], interval: dt.timedelta,
          args: argparse.Namespace, first_start: dt.datetime, scim: ScimLoad | None
          ) -> dict[str, Any]:
    """Wait for every tenant's first round, then watch the intervals; return the report."""
    seconds = interval.total_seconds()
    while True:
        runs = runs_of(maker, synced)
        done = {r.tenant_id for r in runs if r.status == "succeeded"}
        say(f"first rounds: {len(done)}/{len(synced)} tenants synced; "
            f"{closes(maker, dt.datetime.now(dt.UTC))['closed']} months closed; "
            f"load {load()}")
        if len(done) == len(synced):
            break
        if dt.datetime.now(dt.UTC) - first_start > 3 * interval + dt.timedelta(minutes=10):
            say("not every tenant got its first round; watching anyway")
            break
        time.sleep(10)
    # The watch starts once every tenant has had its first (full) round: before that the
    # workers catch up, as after any long stop, and a tenant's first round may come late.
    start = dt.datetime.now(dt.UTC)
    catch_up = (start - first_start).total_seconds()
    end = start + args.rounds_to_watch * interval
    kill_at = start + interval / 3  # then waits up to an interval for a round in flight
    kill: dict[str, Any] = {}
    samples: list[float] = []
    next_sample = start
    while (now := dt.datetime.now(dt.UTC)) < end + interval * 0.2:
        if args.kill and not kill and now >= kill_at:
            kill = kill_one(maker, procs, seconds)
        if now >= next_sample:
            samples += [x for x in lags(maker, synced, now) if x != float("inf")]
            next_sample += interval
        runs = runs_of(maker, synced)
        k = int((now - start) / interval) if now >= start else -1
        low = start + k * interval
        this = {r.tenant_id for r in runs if r.round_id is None and r.started_at >= low}
        running = sum(1 for r in runs if r.status == "running")
        c = closes(maker, now)
        sent = f"; SCIM {sum(scim.counts.values())} requests" if scim else ""
        say(f"interval {k + 1}/{args.rounds_to_watch}: {len(this)}/{len(synced)} tenants "
            f"started a round in it, {running} running; closes {c['closed']}/{c['due']}"
            f"{sent}; load {load()}")
        time.sleep(min(10.0, seconds / 6))
    runs = runs_of(maker, synced)
    result = analyse(runs, synced, start, interval, args.rounds_to_watch)
    result["first_rounds_done_after_s"] = round(catch_up, 1)
    result["sync_lag_s"] = {"p50": round(pct(samples, 0.5), 1),
                            "p99": round(pct(samples, 0.99), 1),
                            "max": round(max(samples, default=float("nan")), 1)}
    result["closes"] = closes(maker, dt.datetime.now(dt.UTC))
    if args.kill:
        result["kill"] = kill_result(kill, runs)
    return result


def summary(report: dict[str, Any]) -> None:
    a = report["args"]
    print(f"\nFleet: {a['tenants']} tenants x {a['users']} users, {a['serve']} serve + "
          f"{a['workers']} workers, {a['interval_minutes']} min interval, "
          f"{'PgBouncer' if a['pgbouncer'] else 'direct'}; load {report['load_start']} -> "
          f"{report['load_end']}")
    for k, w in enumerate(report.get("windows", [])):
        print(f"  interval {k + 1}: tenants by rounds started in it {w['rounds_per_tenant']}")
    for key in ("first_rounds_done_after_s", "rounds_per_tenant_min", "rounds_per_tenant_max",
                "synced_twice_within_due_share", "rounds_due_within_due_share",
                "overlapping_runs", "starved_tenants",
                "gap_s", "sync_lag_s", "round_s", "run_statuses", "closes", "kill", "scim",
                "tracebacks_in_logs"):
        if key in report:
            print(f"  {key}: {report[key]}")


if __name__ == "__main__":
    main()
