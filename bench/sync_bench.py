#!/usr/bin/env python3
"""Entra ID sync rounds at a realistic directory size, against the fake Graph.

    .venv/bin/python bench/sync_bench.py --users 100000 --db both
    .venv/bin/python bench/sync_bench.py --users 1000000 --db sqlite
    .venv/bin/python bench/sync_bench.py --users 100000 --db sqlite --profile py-spy

For each size and database it starts a fresh process (so the RSS it reports is one
round's, not the residue of an earlier one) that:

1. creates a fresh database (bench/results/bench-N.sqlite3, or the PostgreSQL database
   --pg-name, dropped and created), migrates it and creates a tenant;
2. starts bench/fake_graph_server.py, a SEPARATE process holding the fake Entra token
   endpoint and the fake Graph (tests/fakes) with N users of one Entra tenant (the last
   --disabled of them with accountEnabled false), --groups groups of --group-members
   members, 200 users per page, and --latency-ms per request;
3. registers the tenant's app (client secret) and runs the initial round with
   `SyncService.run`, measuring the wall time, the time spent inside `GraphClient.get`
   (the "Graph wait": the HTTP round trip, the fake building the page in its own process,
   and decoding the JSON; measured by a GraphClient subclass, azure_sync is not touched),
   and the process's RSS after every page and its peak (VmHWM);
4. --incremental-rounds times: asks the fake to change --changes users (60 % attribute
   updates, 20 % disables, 20 % enables) and runs a round, measured the same way;
5. checks that the database holds what the fake holds (live users, disabled users);
6. with --churn-rename-pct / --churn-reuse-pct / --churn-swaps (default 10 %, 1 %, 1):
   a churn round: the fake renames that share of the users (a new userPrincipalName),
   re-hires that share (each deleted for good and a new user created with its name, in
   the same round) and swaps names between pairs; the round must settle all of it (no
   item kept, every sampled name as Entra has it); its rate is changes / apply time.

apply time = wall − Graph wait; apply rate = users / apply time. Targets (issue 5): initial
round ≥ 5,000 users/s applied, incremental round of 1,000 changes applied in ≤ 1 s,
memory flat as N grows.

Results go to bench/results/sync_bench[-TAG].{md,json}; docs/benchmarks.md ("Entra sync")
explains the method and holds the last published ones.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scim_bench import (  # noqa: E402
    RESULTS,
    ROOT,
    _frame,
    ensure_tools_venv,
    fresh_database,
    log,
    machine,
)

TARGET_RATE = 5000  # users/s applied, initial round
TARGET_INCREMENTAL_S = 1.0  # apply time of a round of 1,000 changes
FAKE_SERVER = Path(__file__).resolve().parent / "fake_graph_server.py"


# -- measuring the connector's Graph calls ---------------------------------------------


class GraphTimes:
    """Seconds spent inside GraphClient.get (and its HTTP part), per round."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.get = 0.0
        self.send = 0.0
        self.calls = 0
        self._depth = 0


GRAPH = GraphTimes()


def timed_service_class() -> type:
    """SyncService whose Graph client times its calls (built lazily: imports the app)."""
    from azure_sync import ahead
    from azure_sync.graph import GraphClient
    from azure_sync.service import SyncService

    class TimedGraphClient(GraphClient):
        def get(self, url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
            if threading.current_thread() is not threading.main_thread():
                return super().get(url, headers)  # a page read ahead: see timed_take
            GRAPH._depth += 1
            started = time.perf_counter()
            try:
                return super().get(url, headers)
            finally:
                GRAPH._depth -= 1
                if GRAPH._depth == 0:  # a retried garbled page calls get() again inside
                    GRAPH.get += time.perf_counter() - started
                    GRAPH.calls += 1

        def _send(self, url: str, headers: dict[str, str] | None) -> Any:
            started = time.perf_counter()
            try:
                return super()._send(url, headers)
            finally:
                GRAPH.send += time.perf_counter() - started

    # The round reads the next page in another thread while it applies this one: what
    # the round waits for is what is left of that read when it takes the page.
    untimed_take = ahead.PageAhead.take

    def timed_take(reader: Any, link: str) -> Any:
        started = time.perf_counter()
        try:
            return untimed_take(reader, link)
        finally:
            GRAPH.get += time.perf_counter() - started

    ahead.PageAhead.take = timed_take  # type: ignore[method-assign]

    class TimedSyncService(SyncService):
        def client_for(self, registration: Any, **overrides: Any) -> GraphClient:
            base = super().client_for(registration, **overrides)
            return TimedGraphClient(**{f.name: getattr(base, f.name)
                                       for f in dataclasses.fields(base)})

    return TimedSyncService


def proc_status(*keys: str) -> dict[str, float]:
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in keys:
            found[name] = round(int(value.split()[0]) / 1024, 1)
    return found


def rss_mb() -> float:
    return proc_status("VmRSS")["VmRSS"]


def backend_cpu_by_pid(database: str | None) -> dict[str, float]:
    """CPU seconds used so far by each PostgreSQL backend serving `database` (read from
    /proc: the server runs on this machine). With the bench process's own CPU time it
    tells what a round costs even when other work shares the machine and stretches the
    wall time."""
    if not database:
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if not cmdline.startswith(b"postgres: ") or f" {database} ".encode() not in cmdline:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the backend ended between listdir and read
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return found


class BackendCpu(threading.Thread):
    """The CPU seconds of the backends serving `database` during a round, sampled every
    quarter second: a backend that ends within the round (the page writer's connection,
    closed when the users are written) is counted up to its last sample."""

    def __init__(self, database: str | None) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.before = backend_cpu_by_pid(database)
        self.last = dict(self.before)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.25):
            self.last.update(backend_cpu_by_pid(self.database))

    def stop(self) -> float:
        self.stopping.set()
        self.join()
        self.last.update(backend_cpu_by_pid(self.database))
        return sum(cpu - self.before.get(pid, 0.0) for pid, cpu in self.last.items())


# -- the fake Graph process ------------------------------------------------------------


class FakeGraphProcess:
    def __init__(self, args: dict[str, Any]) -> None:
        cmd = [sys.executable, str(FAKE_SERVER), "--users", str(args["users"]),
               "--disabled", str(args["disabled"]), "--groups", str(args["groups"]),
               "--group-members", str(args["group_members"]),
               "--page-size", str(args["page_size"]), "--latency-ms", str(args["latency_ms"])]
        log(f"starting the fake Graph: {' '.join(cmd[1:])}")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.proc.wait(10)
            sys.exit("the fake Graph server did not start (see its stderr above)")
        self.info: dict[str, Any] = json.loads(line)

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        if not answer.get("ok"):
            raise RuntimeError(f"fake Graph refused {request}: {answer}")
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                self.ask(cmd="stop")
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- one measured run (in its own process) ---------------------------------------------


class RoundTimeLimit(Exception):
    """Raised from the after_page hook to stop a round that runs past --round-limit-s."""


class Progress:
    """after_page hook: progress lines, RSS after every page, phase boundaries."""

    def __init__(self, label: str, users: int, limit_s: float | None = None,
                 page_size: int = 200) -> None:
        self.label, self.users, self.limit_s = label, users, limit_s
        self.page_size = page_size
        self.started = time.perf_counter()
        self.last_log = self.started
        self.rss: list[tuple[int, float]] = []
        self.marks: list[tuple[int, float, float]] = []  # users pages: (pages, t, graph wait)
        self.users_end: dict[str, float] | None = None
        self.pages = 0

    def __call__(self, pages: int, phase: str) -> None:
        now = time.perf_counter()
        self.pages = pages
        rss = rss_mb()
        self.rss.append((pages, rss))
        if phase == "users":
            self.users_end = {"pages": pages, "seconds": now - self.started,
                              "graph_wait": GRAPH.get}
            self.marks.append((pages, now - self.started, GRAPH.get))
        if self.limit_s and now - self.started > self.limit_s:
            raise RoundTimeLimit(f"stopped after {now - self.started:.0f} s at page {pages}")
        if now - self.last_log >= 2.0:
            self.last_log = now
            wall = now - self.started
            apply = wall - GRAPH.get
            done = min(pages * self.page_size, self.users) if phase == "users" else self.users
            log(f"  {self.label}: page {pages:,} ({phase}), ~{done:,} users, {wall:.1f} s, "
                f"Graph wait {GRAPH.get:.1f} s, ~{done / apply if apply else 0:,.0f} users/s "
                f"applied, RSS {rss} MB")


def measured_round(service: Any, tenant_id: str, settings: Any, label: str, users: int,
                   profile: str | None = None, tools_venv: Path | None = None,
                   profile_name: str = "", limit_s: float | None = None,
                   page_size: int = 200, database: str | None = None) -> dict[str, Any]:
    from azure_sync import rounds

    progress = Progress(label, users, limit_s, page_size)
    options = rounds.RoundOptions(lease_seconds=settings.lease_seconds,
                                  max_pages=settings.max_pages_per_round,
                                  quarantine_after=settings.quarantine_after_failures,
                                  after_page=progress, pipeline=settings.pipeline)
    GRAPH.reset()
    rss_before = rss_mb()
    profiler: Any = None
    if profile == "cprofile":
        import cProfile

        profiler = cProfile.Profile()
    elif profile == "py-spy":
        assert tools_venv is not None
        raw = RESULTS / f"sync_bench-pyspy-{profile_name}.txt"
        raw.unlink(missing_ok=True)
        profiler = (subprocess.Popen(
            [str(tools_venv / "bin" / "py-spy"), "record", "-p", str(os.getpid()), "-r", "200",
             "--idle", "-f", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), raw)
        time.sleep(1.0)  # let py-spy attach
    cpu_before, db_cpu = time.process_time(), BackendCpu(database)
    if database:
        db_cpu.start()
    # The page writer (azure_sync.pipeline) is a child process, waited for by the round's
    # end; the fake Graph, also a child, is waited for only after the last round.
    writer_before = children_cpu_s()
    progress.started = progress.last_log = time.perf_counter()
    if profile == "cprofile":
        profiler.enable()
    try:
        result = service.run(tenant_id, "manual", options)
        status_, error, pages, counts = result.status, result.error, result.pages, result.counts
    except RoundTimeLimit as stopped:
        status_, error, pages, counts = "stopped", str(stopped), progress.pages, {}
    wall = time.perf_counter() - progress.started
    cpu = time.process_time() - cpu_before
    db_cpu_s = db_cpu.stop() if database else 0.0
    writer_cpu = children_cpu_s() - writer_before
    if profile == "cprofile":
        profiler.disable()
    status = proc_status("VmRSS", "VmHWM")
    out: dict[str, Any] = {
        "status": status_, "error": error, "pages": pages,
        "counts": counts, "wall_s": round(wall, 3),
        "graph_wait_s": round(GRAPH.get, 3), "graph_http_s": round(GRAPH.send, 3),
        "graph_calls": GRAPH.calls, "apply_s": round(wall - GRAPH.get, 3),
        "cpu_s": round(cpu, 3), "db_cpu_s": round(db_cpu_s, 3),
        "writer_cpu_s": round(writer_cpu, 3),
        "rss_before_mb": rss_before, "rss_end_mb": status["VmRSS"],
        "rss_max_sampled_mb": max([r for _, r in progress.rss] or [rss_before]),
        "peak_rss_mb": status["VmHWM"],
        "rss_samples": _thin(progress.rss, 40)}
    if progress.users_end:
        u = progress.users_end
        out["users_phase"] = {"pages": u["pages"], "wall_s": round(u["seconds"], 3),
                              "graph_wait_s": round(u["graph_wait"], 3),
                              "apply_s": round(u["seconds"] - u["graph_wait"], 3)}
        out["rate_by_tenth"] = rate_by_tenth(progress.marks, page_size)
    if profile == "cprofile":
        out["profile"] = summarize_cprofile(profiler, profile_name)
    elif profile == "py-spy":
        proc, raw = profiler
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        out["profile"] = (summarize_pyspy(raw) if raw.exists() and raw.stat().st_size
                          else {"error": f"py-spy wrote nothing: {err.decode()[-500:]}"})
    return out


def cpu_cell(r: dict[str, Any]) -> str:
    """The round's CPU seconds: the bench process (the connector's code, and decoding
    Graph's JSON) + the PostgreSQL backends (0 on SQLite, which runs in the process).
    Older result files have none."""
    if "cpu_s" not in r:
        return "–"
    fake = f" (fake Graph {r['fake_cpu_s']:.2f})" if "fake_cpu_s" in r else ""
    if r.get("writer_cpu_s"):
        return (f"{r['cpu_s']:.2f} + writer {r['writer_cpu_s']:.2f} + {r['db_cpu_s']:.2f}"
                f"{fake}")
    return f"{r['cpu_s']:.2f} + {r['db_cpu_s']:.2f}{fake}"


def children_cpu_s() -> float:
    """CPU seconds of this process's children waited for so far (the page writer)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rate_by_tenth(marks: list[tuple[int, float, float]], page_size: int
                  ) -> list[tuple[int, int]]:
    """Apply rate (users/s) over each tenth of the users pages: (pages so far, rate).
    A rate that falls from tenth to tenth is a cost that grows with the table."""
    if len(marks) < 20:
        return []
    out = []
    previous = (0, 0.0, 0.0)
    for k in range(1, 11):
        mark = marks[len(marks) * k // 10 - 1]
        apply = (mark[1] - previous[1]) - (mark[2] - previous[2])
        out.append((mark[0], round((mark[0] - previous[0]) * page_size / apply)
                    if apply > 0 else 0))
        previous = mark
    return out


def _thin(samples: list[tuple[int, float]], keep: int) -> list[tuple[int, float]]:
    if len(samples) <= keep:
        return samples
    step = len(samples) / keep
    return [samples[int(i * step)] for i in range(keep)] + [samples[-1]]


def code_state() -> dict[str, str]:
    """The commit measured, and uncommitted changes to the measured code if any (other
    people may be editing the work tree while a long run goes on)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.rstrip()
    dirty = git("status", "--porcelain", "--", "azure_sync", "connector").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "dirty": ", ".join(line[3:] for line in dirty)}


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One database, one size: fresh database, fake Graph, initial + incremental rounds."""
    from sqlalchemy import func, select

    from azure_sync import secrets
    from azure_sync.service import register
    from connector import migrate, provlog, tenants
    from connector.config import AzureSyncSettings, DatabaseSettings, ProvisioningLogSettings
    from connector.db import make_engine, make_sessionmaker
    from connector.events import WriteContext
    from connector.models import User
    from connector.status import Source

    users, kind, label = spec["users"], spec["db"], spec["label"]
    code = code_state()
    dirty = f" (uncommitted changes: {code['dirty']})" if code["dirty"] else ""
    log(f"== {label}: fresh {kind} database; {users:,} users in the fake Graph; code at "
        f"{code['commit']}{dirty}")
    url = fresh_database(kind, users, spec["pg_base"], spec["pg_name"])
    dbname = spec["pg_name"] if kind == "postgresql" else None
    provlog.configure(ProvisioningLogSettings(
        enabled=spec.get("provisioning_log", "on") == "on"))
    log(f"   provisioning log {spec.get('provisioning_log', 'on')}")
    log(f"   page writer (azure_sync.pipeline) {spec.get('pipeline', 'on')}")
    engine = make_engine(DatabaseSettings(url=url))
    migrate.upgrade(engine)
    maker, write_maker = make_sessionmaker(engine), make_sessionmaker(engine, writes=True)
    now = dt.datetime.now(dt.UTC)
    with write_maker() as s:
        tenant, _ = tenants.create_tenant(s, "sync bench", now, actor="bench")
        s.commit()
        tenant_id = tenant.id
    fake = FakeGraphProcess(spec)
    incremental: list[dict[str, Any]] = []
    check: dict[str, Any] = {}
    try:
        info = fake.info
        changes = spec["changes"]
        updates, disables = changes * 6 // 10, changes * 2 // 10
        enables = changes - updates - disables
        settings = AzureSyncSettings(encryption_key=secrets.new_key(),
                                     allow_private_hosts=True,  # the fakes' loopback
                                     graph_scope="https://graph.microsoft.com/.default",
                                     pipeline=spec.get("pipeline", "on") == "on")
        with write_maker() as s:
            register(s, settings, WriteContext(tenant_id, Source.ADMIN, "bench", "bench", now),
                     directory_id=info["tenant_id"], client_id=info["client_id"],
                     secret=info["client_secret"], authority_host=info["authority_host"],
                     graph_base_url=info["graph_base_url"],
                     # The default (500) holds a round with more disables for approval.
                     threshold_count=max(500, disables,
                                         users * spec["churn_reuse_pct"] // 100 + 1))
            s.commit()
        service = timed_service_class()(settings, maker, write_maker, verify=info["ca_path"])
        log(f"{label}: initial round ({users:,} users, {info['groups']} groups, "
            f"{spec['page_size']} per page, Graph latency {spec['latency_ms']} ms)")
        profile, tools = spec.get("profile"), Path(spec["tools_venv"])
        fake_cpu_before = fake.ask(cmd="stats").get("cpu_s")
        initial = measured_round(service, tenant_id, settings, f"{label} initial", users,
                                 profile, tools, f"{label}-initial", spec.get("limit_s"),
                                 spec["page_size"], database=dbname)
        fake_cpu_after = fake.ask(cmd="stats").get("cpu_s")
        if fake_cpu_before is not None and fake_cpu_after is not None:
            # The fake Graph shares the machine's cores with what is measured.
            initial["fake_cpu_s"] = round(fake_cpu_after - fake_cpu_before, 3)
        applied = users if initial["status"] == "succeeded" else min(
            users, initial.get("users_phase", {}).get("pages", 0) * spec["page_size"])
        initial["users_applied"] = applied
        initial["rate"] = round(applied / initial["apply_s"]) if initial["apply_s"] else None
        if "users_phase" in initial:
            up = initial["users_phase"]
            up["rate"] = round(applied / up["apply_s"]) if up["apply_s"] else None
        log(f"{label}: initial round {initial['status']} in {initial['wall_s']:.1f} s, "
            f"{initial['pages']} pages, Graph wait {initial['graph_wait_s']:.1f} s, applied at "
            f"{initial['rate']:,} users/s; RSS {initial['rss_before_mb']} → peak "
            f"{initial['peak_rss_mb']} MB; CPU {initial['cpu_s']:.1f} s here + "
            f"{initial['writer_cpu_s']:.1f} s in the page writer + "
            f"{initial['db_cpu_s']:.1f} s in PostgreSQL (the fake Graph: "
            f"{initial.get('fake_cpu_s', 0):.1f} s); rate by tenth of the pages "
            f"{[r for _, r in initial.get('rate_by_tenth', [])]}; counts {initial['counts']}")
        if initial["status"] != "succeeded":
            log(f"{label}: initial round {initial['status']}: {initial['error']}; "
                "no incremental rounds")
        for i in range(spec["incremental_rounds"] if initial["status"] == "succeeded" else 0):
            changed = fake.ask(cmd="change", updates=updates, disables=disables, enables=enables)
            log(f"{label}: fake Graph changed {changed['updated']} attributes, disabled "
                f"{changed['disabled']}, enabled {changed['enabled']}; incremental round {i + 1}")
            rnd = measured_round(service, tenant_id, settings, f"{label} incr {i + 1}", users,
                                 profile if i == 0 else None, tools,
                                 f"{label}-incremental", page_size=spec["page_size"],
                                 database=dbname)
            rnd["changes"] = {k: changed[k] for k in ("updated", "disabled", "enabled")}
            rnd["disabled_in_fake"] = changed["disabled_now"]
            log(f"{label}: incremental round {i + 1} {rnd['status']} in {rnd['wall_s']:.3f} s, "
                f"Graph wait {rnd['graph_wait_s']:.3f} s, applied in {rnd['apply_s']:.3f} s; "
                f"CPU {rnd['cpu_s']:.3f} s here + {rnd['db_cpu_s']:.3f} s in PostgreSQL; "
                f"counts {rnd['counts']}")
            incremental.append(rnd)
        if initial["status"] == "succeeded":
            with maker() as s:
                live = s.scalar(select(func.count()).select_from(User).where(
                    User.tenant_id == tenant_id, User.removed_at.is_(None))) or 0
                inactive = s.scalar(select(func.count()).select_from(User).where(
                    User.tenant_id == tenant_id, User.removed_at.is_(None),
                    User.active.is_(False))) or 0
            expected_inactive = (incremental[-1]["disabled_in_fake"] if incremental
                                 else spec["disabled"])
            check = {"live_users": live, "inactive_users": inactive,
                     "expected_live": users, "expected_inactive": expected_inactive,
                     "ok": live == users and inactive == expected_inactive}
            log(f"{label}: database check: {live:,} live users (expected {users:,}), "
                f"{inactive:,} inactive (expected {expected_inactive:,}): "
                f"{'ok' if check['ok'] else 'MISMATCH'}")
        churn: dict[str, Any] = {}
        if initial["status"] == "succeeded" and (spec["churn_rename_pct"]
                                                 or spec["churn_reuse_pct"]
                                                 or spec["churn_swaps"]):
            churn = churn_round(service, fake, spec, tenant_id, settings, label, users, maker)
        stats = fake.ask(cmd="stats")
    finally:
        fake.stop()
        engine.dispose()
    return {"db": kind, "users": users, "label": label, "code": code, "initial": initial,
            "incremental": incremental, "check": check, "churn": churn,
            "fake": {"rss_mb": stats.get("rss_mb"), "counters": stats.get("counters"),
                     "errors": stats.get("errors")},
            "changes": {"updates": updates, "disables": disables, "enables": enables}}


def churn_round(service: Any, fake: Any, spec: dict[str, Any], tenant_id: str, settings: Any,
                label: str, users: int, maker: Any) -> dict[str, Any]:
    """Renames, re-hires under the old name and swaps in one round: measured, then
    checked (nothing kept, the sampled names as Entra has them, no user lost)."""
    from sqlalchemy import func, select

    from connector.models import SyncPending, User

    renames = users * spec["churn_rename_pct"] // 100
    reuses = users * spec["churn_reuse_pct"] // 100
    asked = fake.ask(cmd="churn", renames=renames, reuses=reuses, swaps=spec["churn_swaps"])
    if not asked.get("ok"):
        raise RuntimeError(f"the fake refused the churn: {asked}")
    changes = renames + 2 * reuses + 2 * spec["churn_swaps"]
    log(f"{label}: fake Graph renamed {renames:,}, re-hired {reuses:,} under the old name, "
        f"swapped {spec['churn_swaps']} pair(s) in {asked['seconds']} s; churn round")
    rnd = measured_round(service, tenant_id, settings, f"{label} churn", users,
                         spec.get("profile"), Path(spec["tools_venv"]), f"{label}-churn",
                         page_size=spec["page_size"],
                         database=spec["pg_name"] if spec["db"] == "postgresql" else None)
    rnd["rate"] = round(changes / rnd["apply_s"]) if rnd["apply_s"] else None
    expected = dict(asked["expected"])
    with maker() as s:
        found = dict(s.execute(select(User.external_id, User.user_name).where(
            User.tenant_id == tenant_id, User.removed_at.is_(None),
            User.external_id.in_(list(expected)))).all())
        live = s.scalar(select(func.count()).select_from(User).where(
            User.tenant_id == tenant_id, User.removed_at.is_(None))) or 0
        kept = s.scalar(select(func.count()).select_from(SyncPending).where(
            SyncPending.tenant_id == tenant_id)) or 0
    wrong = {oid: (found.get(oid), upn) for oid, upn in expected.items()
             if found.get(oid) != upn}
    rnd["check"] = {"sampled": len(expected), "wrong": len(wrong),
                    "wrong_examples": list(wrong.items())[:5], "live_users": live,
                    "expected_live": users, "kept": kept,
                    "ok": not wrong and live == users and kept == 0}
    rnd["asked"] = {"renames": renames, "reuses": reuses, "swaps": spec["churn_swaps"],
                    "changes": changes}
    log(f"{label}: churn round {rnd['status']} in {rnd['wall_s']:.2f} s, Graph wait "
        f"{rnd['graph_wait_s']:.2f} s, applied in {rnd['apply_s']:.2f} s = "
        f"{rnd['rate'] or 0:,} changes/s; counts {rnd['counts']}; check "
        f"{'ok' if rnd['check']['ok'] else 'MISMATCH'} {rnd['check']}")
    return rnd


# -- profiles --------------------------------------------------------------------------

OURS = ("azure_sync/", "connector/")


def summarize_pyspy(raw: Path, top: int = 30) -> dict[str, Any]:
    """Shares of the round's wall time (py-spy --idle samples the main thread whether it
    computes or waits) per function: inclusive, and self."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        if not any(f.startswith("azure_sync/") for f in frames):
            continue  # not the round (py-spy's own start, the sampler's idle moments)
        n = int(count)
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    pct = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    return {"kind": "py-spy", "samples": total, "file": str(raw.relative_to(ROOT)),
            "inclusive_ours": [(f, pct(c)) for f, c in inclusive.most_common()
                               if f.startswith(OURS)][:top],
            "inclusive_all": [(f, pct(c)) for f, c in inclusive.most_common(top)],
            "self_top": [(f, pct(c)) for f, c in own.most_common(top)]}


def summarize_cprofile(profiler: Any, name: str, top: int = 30) -> dict[str, Any]:
    import pstats

    path = RESULTS / f"sync_bench-cprofile-{name}.prof"
    profiler.dump_stats(path)
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = _frame(f"{func} ({filename}:{line})")
        rows.append((short, ncalls, tottime, cumtime))
    total = stats.total_tt  # type: ignore[attr-defined]
    by_self = sorted(rows, key=lambda r: -r[2])[:top]
    by_cum = sorted((r for r in rows if r[0].startswith(OURS)), key=lambda r: -r[3])[:top]
    fmt = lambda r: (r[0], r[1], round(r[2], 3), round(r[3], 3))  # noqa: E731
    return {"kind": "cprofile", "file": str(path.relative_to(ROOT)),
            "total_s": round(total, 3), "self_top": [fmt(r) for r in by_self],
            "cumulative_ours": [fmt(r) for r in by_cum]}


# -- report ----------------------------------------------------------------------------


def render(info: dict[str, Any], runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [f"# Entra sync bench, {info['date']} (commit {info['git']})", "",
           f"{info['nproc']} × {info['cpu']}, {info['mem']} RAM, Python {info['python']}, "
           f"SQLite {info['sqlite']}, PostgreSQL {info['postgresql']}. Fake Graph in its own "
           f"process, {args.page_size} users per page, latency {args.latency_ms} ms; "
           f"{args.disabled:,} users seeded disabled, {args.groups} groups of "
           f"{args.group_members:,} members. apply = wall − Graph wait (the time the round waited "
           "for Graph: in GraphClient.get, or for the rest of a page read ahead while the "
           "previous one applied)." + (f" Initial rounds stopped after {args.round_limit_s:.0f} s."
                                  if args.round_limit_s else "")
, "",
           "## Initial round", "",
           "| database | users | pages | wall s | Graph wait s (HTTP) | apply s | "
           "**apply rate users/s** | users phase: apply s, users/s | users/s by tenth of the "
           "pages | after the last users page s | RSS MB before → max sampled (peak) | "
           "CPU s: bench (+ page writer) + PostgreSQL (fake Graph) | target ≥ 5,000/s |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | "
           "--- |"]
    for run in runs:
        r = run["initial"]
        up = r.get("users_phase") or {}
        rest = r["wall_s"] - up.get("wall_s", r["wall_s"])
        ok = "met" if (r["rate"] or 0) >= TARGET_RATE and r["status"] == "succeeded" else \
            "not met"
        status = "" if r["status"] == "succeeded" else f" ⚠ {r['status']}"
        users = (f"{run['users']:,}" if r["status"] == "succeeded" else
                 f"{r['users_applied']:,} of {run['users']:,}")
        tenths = " → ".join(f"{v:,}" for _, v in r.get("rate_by_tenth", []))
        out.append(f"| {run['db']}{status} | {users} | {r['pages']:,} | "
                   f"{r['wall_s']:.1f} | {r['graph_wait_s']:.1f} ({r['graph_http_s']:.1f}) | "
                   f"{r['apply_s']:.1f} | **{r['rate'] or 0:,}** | {up.get('apply_s', 0):.1f}, "
                   f"{up.get('rate') or 0:,} | {tenths} | {rest:.1f} | {r['rss_before_mb']} → "
                   f"{r['rss_max_sampled_mb']} ({r['peak_rss_mb']}) | {cpu_cell(r)} | {ok} |")
    if any(run["incremental"] for run in runs):
        c = next(run["changes"] for run in runs if run["incremental"])
        out += ["", f"## Incremental rounds ({args.changes:,} changes each: "
                f"{c['updates']} attribute updates, {c['disables']} disables, "
                f"{c['enables']} enables)", "",
                "| database | users | round | pages | wall s | Graph wait s | **apply s** | "
                "CPU s: bench + PostgreSQL | counts | target apply ≤ 1 s |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for run in runs:
        for i, r in enumerate(run["incremental"], 1):
            counts = ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items()))
            ok = "met" if r["apply_s"] <= TARGET_INCREMENTAL_S and r["status"] == "succeeded" \
                else "not met"
            out.append(f"| {run['db']} | {run['users']:,} | {i} | {r['pages']} | "
                       f"{r['wall_s']:.3f} | {r['graph_wait_s']:.3f} | **{r['apply_s']:.3f}** "
                       f"| {cpu_cell(r)} | {counts} | {ok} |")
        if run["incremental"]:
            med = statistics.median(r["apply_s"] for r in run["incremental"])
            out.append(f"| {run['db']} | {run['users']:,} | median | | | | {med:.3f} | | | |")
    if any(run.get("churn") for run in runs):
        out += ["", "## Churn round (renames, re-hires under the old name, swaps, in one "
                "round)", "",
                "| database | users | renamed | re-hired | swapped pairs | pages | wall s | "
                "Graph wait s | **apply s** | **changes/s** | counts | settled |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | "
                "--- |"]
    for run in runs:
        r = run.get("churn")
        if not r:
            continue
        a, c = r["asked"], r["check"]
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items()))
        settled = ("yes: nothing kept, all sampled names right" if c["ok"] else
                   f"NO: {c['wrong']} wrong of {c['sampled']}, {c['kept']} kept, "
                   f"{c['live_users']:,} live of {c['expected_live']:,}")
        out.append(f"| {run['db']}{'' if r['status'] == 'succeeded' else ' ⚠ ' + r['status']}"
                   f" | {run['users']:,} | {a['renames']:,} | {a['reuses']:,} | {a['swaps']} | "
                   f"{r['pages']:,} | {r['wall_s']:.2f} | {r['graph_wait_s']:.2f} | "
                   f"**{r['apply_s']:.2f}** | **{r['rate'] or 0:,}** | {counts} | {settled} |")
    out += ["", "## Checks", ""]
    for run in runs:
        c = run["check"]
        state = (f"database {c['live_users']:,} live users (fake: {c['expected_live']:,}), "
                 f"{c['inactive_users']:,} inactive (fake: {c['expected_inactive']:,}): "
                 f"**{'ok' if c['ok'] else 'MISMATCH'}**" if c else "not checked (the "
                 "initial round did not complete)")
        code = run.get("code") or {}
        at = f"commit {code.get('commit')}" + (f" with uncommitted changes to "
                                               f"{code['dirty']}" if code.get("dirty") else "")
        fake = run["fake"]
        out.append(f"- {run['label']} ({at}): {state}; fake Graph served {fake['counters']}, "
                   f"its RSS {fake['rss_mb']} MB, errors {fake['errors'] or 'none'}.")
    for run in runs:
        rounds_ = [("initial round", run["initial"])]
        if run["incremental"]:
            rounds_.append(("incremental round 1", run["incremental"][0]))
        for what, r in rounds_:
            prof = r.get("profile")
            if prof:
                out += ["", f"## Profile ({prof.get('kind')}), {run['label']} {what} "
                        "(profiled run: its times are not the published ones)", ""]
                out += render_profile(prof)
    return "\n".join(out)


def render_profile(prof: dict[str, Any]) -> list[str]:
    if prof.get("error"):
        return [prof["error"]]
    if prof["kind"] == "py-spy":
        return [f"{prof['samples']} samples of the round's wall time (--idle: waiting "
                f"counts), raw stacks in {prof['file']}.", "",
                "inclusive, our code: " + "; ".join(
                    f"{f} {p}%" for f, p in prof["inclusive_ours"][:25]), "",
                "inclusive, all: " + "; ".join(
                    f"{f} {p}%" for f, p in prof["inclusive_all"][:25]), "",
                "self: " + "; ".join(f"{f} {p}%" for f, p in prof["self_top"][:25])]
    out = [f"{prof['total_s']} s profiled; stats in {prof['file']}.", "",
           "| self time: function | calls | self s | cumulative s |",
           "| --- | ---: | ---: | ---: |"]
    out += [f"| {f} | {n:,} | {t} | {c} |" for f, n, t, c in prof["self_top"][:25]]
    out += ["", "| cumulative, our code: function | calls | self s | cumulative s |",
            "| --- | ---: | ---: | ---: |"]
    out += [f"| {f} | {n:,} | {t} | {c} |" for f, n, t, c in prof["cumulative_ours"][:25]]
    return out


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, nargs="+", default=[100_000],
                   help="tenant size(s); several sizes show whether memory stays flat")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="the fake Graph's latency per request (its knob `latency`)")
    p.add_argument("--page-size", type=int, default=200,
                   help="users per page (the fake's page_size and max_page_size)")
    p.add_argument("--changes", type=int, default=1000,
                   help="users changed before each incremental round (60 %% updates, "
                        "20 %% disables, 20 %% enables)")
    p.add_argument("--incremental-rounds", type=int, default=3)
    p.add_argument("--disabled", type=int, default=1000,
                   help="users seeded disabled (counted in --users; enables draw on them)")
    p.add_argument("--churn-rename-pct", type=int, default=10,
                   help="churn round: percent of the users renamed (0 with the two below: "
                   "no churn round)")
    p.add_argument("--churn-reuse-pct", type=int, default=1,
                   help="churn round: percent re-hired under the old name (the old user "
                   "deleted for good, a new one with its name, in one round)")
    p.add_argument("--churn-swaps", type=int, default=1,
                   help="churn round: pairs of users swapping names")
    p.add_argument("--groups", type=int, default=10)
    p.add_argument("--group-members", type=int, default=1000)
    p.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-name", default="connector_sync_bench")
    p.add_argument("--profile", choices=["py-spy", "cprofile"], default=None,
                   help="profile the initial round (py-spy from --tools-venv, sampling the "
                        "wall time; or cProfile in-process, slower); not for publication")
    p.add_argument("--tools-venv", type=Path, default=Path("/tmp/scim2server-venv"),
                   help="separate virtualenv for py-spy (never .venv)")
    p.add_argument("--round-limit-s", type=float, default=None,
                   help="stop an initial round after this many seconds and report what it "
                        "did by then (no incremental rounds follow)")
    p.add_argument("--provisioning-log", choices=["on", "off"], default="on",
                   help="write the provisioning log (the default, as production); off for "
                        "the A/B of its cost")
    p.add_argument("--pipeline", choices=["on", "off"], default="on",
                   help="azure_sync.pipeline: a full round's pages committed by a writer "
                        "process while the next is built (the default); off for the A/B")
    p.add_argument("--tag", default="", help="suffix for the result file names")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one run
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.one:
        spec = json.loads(Path(args.one).read_text())
        result = run_one(spec)
        Path(spec["out"]).write_text(json.dumps(result, indent=2) + "\n")
        return
    if args.profile == "py-spy":
        ensure_tools_venv(args.tools_venv, need_scim2=False, need_pyspy=True)
    info = machine()
    info["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                    if k != "one"}
    tag = f"-{args.tag}" if args.tag else ""
    runs = []
    for users in args.users:
        for kind in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
            label = f"{kind}-{users}"
            spec = {"users": users, "db": kind, "label": label, "pg_base": args.pg_base,
                    "pg_name": args.pg_name, "latency_ms": args.latency_ms,
                    "page_size": args.page_size, "changes": args.changes,
                    "incremental_rounds": args.incremental_rounds,
                    "disabled": min(args.disabled, users), "groups": args.groups,
                    "group_members": args.group_members, "profile": args.profile,
                    "tools_venv": str(args.tools_venv), "limit_s": args.round_limit_s,
                    "churn_rename_pct": args.churn_rename_pct,
                    "churn_reuse_pct": args.churn_reuse_pct, "churn_swaps": args.churn_swaps,
                    "provisioning_log": args.provisioning_log, "pipeline": args.pipeline,
                    "out": str(RESULTS / f"sync_bench{tag}-{label}.run.json")}
            spec_path = RESULTS / f"sync_bench{tag}-{label}.spec.json"
            spec_path.write_text(json.dumps(spec))
            Path(spec["out"]).unlink(missing_ok=True)
            # A fresh process per run: its RSS is this round's alone.
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one",
                                   str(spec_path)], cwd=ROOT, check=False)
            if done.returncode != 0 or not Path(spec["out"]).exists():
                sys.exit(f"{label} failed (exit {done.returncode}); see above")
            runs.append(json.loads(Path(spec["out"]).read_text()))
    report = render(info, runs, args)
    print("\n" + report)
    (RESULTS / f"sync_bench{tag}.md").write_text(report + "\n")
    (RESULTS / f"sync_bench{tag}.json").write_text(
        json.dumps({"machine": info, "runs": runs}, indent=2) + "\n")
    log(f"wrote bench/results/sync_bench{tag}.md and .json")


if __name__ == "__main__":
    main()
