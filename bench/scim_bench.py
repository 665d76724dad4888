#!/usr/bin/env python3
"""SCIM throughput and latency at a realistic directory size, over HTTP.

    .venv/bin/python bench/scim_bench.py --users 100000 --db both --against-scim2-server

For each database (and each size given to --users) it creates a fresh database, migrates
it, creates a tenant, bulk-seeds N users (with their email index rows) and one group of
10,000 members, starts the connector as production does (`connector serve`: gevent
workers with keep-alive, as many as `[server] workers` gives by default on that database;
CONNECTOR_SERVER__WORKERS=N sets them), and measures every scenario with wrk: requests/s
at --connections concurrent clients and p50/p99 latency both under that load and at one
client (service latency without queueing). Non-2xx answers are counted and flagged, never
folded into the rates. It records the worker's RSS before and after, prints a Markdown
table and writes it with the raw numbers (JSON) to bench/results/.

--against-scim2-server runs the same scenarios against the public reference server
scim2-server (installed in its own virtualenv, /tmp/scim2server-venv by default, never in
.venv), seeded over its own HTTP API, and adds ours/scim2-server ratio columns.

--against-scimgateway (or --scimgateway) does the same with scimgateway (Node; its
plugin-loki, an in-memory LokiJS store, persistence off), installed with npm into
/tmp/scimgateway-bench by default (never in git), run with the machine's Node through tsx,
seeded over its own HTTP API (--scimgateway-runtime bun: on Bun, its preferred runtime);
ours/scimgateway ratio columns are added too.

docs/benchmarks.md explains the method and holds the last published results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VENV_BIN = ROOT / ".venv" / "bin"
SCIM_JSON = "application/scim+json"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
T0 = time.monotonic()
# scimgateway: the npm package the bench installs (pinned), and the plugin it serves.
SCIMGATEWAY_VERSION = "6.1.18"
SCIMGATEWAY_PLUGIN = "plugin-loki"
# --scimgateway-runtime bun: the runtime scimgateway prefers, from its npm package (pinned).
BUN_VERSION = "1.4.4"
# The peers measured beside the connector: key in the results JSON, name in the tables.
PEERS = {"scim2_server": "scim2-server", "scimgateway": "scimgateway"}

# name, wrk mode, what is requested, target (kind, threshold)
SCENARIOS: list[tuple[str, str, str]] = [
    ("get_id", "GET /Users/{id}", "random seeded ids"),
    ("filter", 'GET /Users?filter=userName eq "…"', "random seeded userNames, URL-encoded"),
    ("page", "GET /Users?startIndex=R&count=100", "R uniform in 1..N-99"),
    ("post", "POST /Users", "unique userNames"),
    ("patch_active", "PATCH /Users/{id} active", "user k: false then true (alternating)"),
    ("member_add", "PATCH /Groups/{gid} add member", "group of 10,000 members; ids not in it"),
]
TARGETS: dict[str, tuple[str, str]] = {
    "get_id": ("≥ 1,000 req/s, p99 ≤ 10 ms", "rps1000_p99_10"),
    "filter": ("≥ 1,000 req/s, p99 ≤ 10 ms", "rps1000_p99_10"),
    "page": ("≤ 20 ms", "p99_20"),
    "post": ("≥ 400 req/s", "rps400"),
    "patch_active": ("≥ 400 req/s", "rps400"),
    "member_add": ("≤ 10 ms", "p99_10"),
}


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(port: int, method: str, path: str, token: str | None = None,
         body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Accept": SCIM_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = SCIM_JSON
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# -- tools -----------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is missing: running `apt-get update && apt-get install -y wrk`")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk could not be installed; install it and re-run")
    return found


def ensure_tools_venv(venv: Path, need_scim2: bool, need_pyspy: bool, need_gevent: bool = False
                      ) -> None:
    """The separate virtualenv for scim2-server (+ gunicorn) and py-spy; never .venv."""
    pip = venv / "bin" / "pip"
    if not pip.exists():
        log(f"creating the bench tools virtualenv {venv}")
        subprocess.run([sys.executable if not sys.prefix.startswith(str(ROOT)) else
                        _base_python(), "-m", "venv", str(venv)], check=True)
    wanted = []
    if need_scim2 and not (venv / "bin" / "scim2-server").exists():
        wanted.append("scim2-server")
    if need_scim2 and not (venv / "bin" / "gunicorn").exists():
        wanted.append("gunicorn")
    if need_scim2 and need_gevent and not list(venv.glob("lib/python*/site-packages/gevent")):
        wanted.append("gunicorn[gevent]")  # gevent, and the packaging its worker imports
    if need_pyspy and not (venv / "bin" / "py-spy").exists():
        wanted.append("py-spy")
    if wanted:
        log(f"installing {', '.join(wanted)} into {venv}")
        subprocess.run([str(pip), "install", "-q", *wanted], check=True)


def ensure_scimgateway(cache: Path, package: str, runtime: str = "node") -> dict[str, str]:
    """npm-install scimgateway into `cache` (outside git), once per package spec.

    `package` is what `npm install` takes: by default scimgateway@SCIMGATEWAY_VERSION from
    the registry; a tarball works too, and a folder (a checkout of its repository at the
    tag), which is packed into a tarball first. Scripts are not run: its
    postinstall needs bun and copies its example plugins into the parent folder; the bench
    copies the one plugin it serves (plugin-loki) itself. Peer dependencies (typescript)
    are not installed: tsx, one of its dependencies, runs its TypeScript on Node.
    """
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        sys.exit("scimgateway needs Node.js (>= 20.6) and npm: apt-get install nodejs npm")
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True,
                                  check=True).stdout.strip()
    major, minor = (int(x) for x in node_version.lstrip("v").split(".")[:2])
    if (major, minor) < (20, 6):
        sys.exit(f"scimgateway is run with `node --import tsx`, which needs Node >= 20.6, "
                 f"not {node_version}")
    cache.mkdir(parents=True, exist_ok=True)
    if Path(package).is_dir():
        # A folder (a checkout of scimgateway's repository, where the registry does not
        # serve it) is packed first: installed as a folder, npm would link it and put
        # its dependencies inside it, where the bench does not look for them.
        packed = subprocess.run(
            [npm, "pack", "--ignore-scripts", "--loglevel=error", "--pack-destination",
             str(cache.resolve())], cwd=package, capture_output=True, text=True, check=False)
        if packed.returncode != 0:
            sys.exit(f"npm could not pack {package}:\n{(packed.stdout + packed.stderr)[-2000:]}")
        package = str(cache.resolve() / packed.stdout.strip().splitlines()[-1])
    marker = cache / ".bench-installed"
    installed = cache / "node_modules" / "scimgateway" / "package.json"
    if not (installed.exists() and marker.exists() and marker.read_text() == package):
        (cache / "package.json").write_text(json.dumps(
            {"name": "scimgateway-bench", "private": True, "type": "module"}) + "\n")
        log(f"installing {package} with npm into {cache} (its dependencies: ≈ 120 MB)")
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--omit=dev",
             "--legacy-peer-deps", "--loglevel=error", package],
            cwd=cache, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"npm could not install {package} into {cache}:\n"
                     f"{(done.stdout + done.stderr)[-2000:]}\n"
                     "If the npm registry this machine reaches does not serve scimgateway, "
                     "pass --scimgateway-package with a tarball (npm pack) or folder of "
                     f"scimgateway {SCIMGATEWAY_VERSION}.")
        marker.write_text(package)
    modules = cache / "node_modules"
    versions = {name: json.loads((modules / name / "package.json").read_text())["version"]
                for name in ("scimgateway", "lokijs", "tsx")}
    versions["node"] = node_version
    if runtime == "bun":
        bun = ensure_bun(cache, npm)
        versions["bun"] = subprocess.run([str(bun), "--version"], capture_output=True,
                                         text=True, check=True).stdout.strip()
        versions["runtime"] = f"Bun {versions['bun']}"
    else:
        versions["runtime"] = f"Node {node_version}"
    if versions["scimgateway"] != SCIMGATEWAY_VERSION:
        log(f"note: scimgateway {versions['scimgateway']} installed, the bench pins "
            f"{SCIMGATEWAY_VERSION}")
    log("scimgateway " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return versions


def bun_binary(cache: Path) -> Path | None:
    """Bun's binary from its npm package (its optionalDependencies carry one per platform;
    the baseline build where the processor lacks AVX2)."""
    avx2 = "avx2" in Path("/proc/cpuinfo").read_text()
    found = sorted((cache / "node_modules" / "@oven").glob("bun-linux-*/bin/bun"),
                   key=lambda b: ("baseline" in str(b)) == avx2)
    return found[0] if found else None


def ensure_bun(cache: Path, npm: str) -> Path:
    bun = bun_binary(cache)
    if bun is None:
        log(f"installing bun@{BUN_VERSION} with npm into {cache}")
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-save",
             "--loglevel=error", f"bun@{BUN_VERSION}"],
            cwd=cache, capture_output=True, text=True, check=False)
        bun = bun_binary(cache)
        if done.returncode != 0 or bun is None:
            sys.exit(f"npm could not install bun@{BUN_VERSION} into {cache}:\n"
                     f"{(done.stdout + done.stderr)[-2000:]}")
    return bun


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or shutil.which("python3") or "python3"


# -- databases and seeding -------------------------------------------------------------


def fresh_database(kind: str, users: int, pg_base: str, pg_name: str) -> str:
    if kind == "sqlite":
        path = RESULTS / f"bench-{users}.sqlite3"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return f"sqlite:///{path}"
    import psycopg

    admin = pg_base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{pg_name}"')
    return f"{pg_base}/{pg_name}"


def user_name(i: int) -> str:
    # Mixed case on purpose: userName is matched case-insensitively.
    return f"Bench.User{i:07d}@Example.com"


def seed_connector(url: str, users: int, group_size: int, batch: int) -> dict[str, Any]:
    from sqlalchemy import insert, text

    from connector import counters
    from connector.config import DatabaseSettings
    from connector.db import make_engine, make_sessionmaker
    from connector.migrate import upgrade
    from connector.models import Group, Membership, User, UserSearchWord, UserValue
    from connector.search_words import profile_words
    from connector.tenants import create_tenant

    started = time.monotonic()
    engine = make_engine(DatabaseSettings(url=url))
    upgrade(engine)
    now = dt.datetime.now(dt.UTC)
    with make_sessionmaker(engine, writes=True)() as session:
        tenant, issued = create_tenant(session, "bench", now, actor="bench")
        session.commit()
        tenant_id = tenant.id
    ids = [str(uuid.uuid4()) for _ in range(users)]
    names = [user_name(i) for i in range(users)]
    for start in range(0, users, batch):
        rows, values, words = [], [], []
        for i in range(start, min(start + batch, users)):
            name, uid = names[i], ids[i]
            display = f"Bench User {i:07d}"
            rows.append({
                "tenant_id": tenant_id, "id": uid, "user_name": name,
                "user_name_norm": name.casefold(), "external_id": f"ext-{i:07d}",
                "display_name": display, "display_name_norm": display.casefold(),
                "active": True, "idp_active": True, "in_deleted_list": False, "guest": False,
                "external_company_guest": False, "admin": False, "origin": "scim",
                "removed_at": None, "created_at": now, "modified_at": now, "version": 1,
                "data": {"name": {"givenName": "Bench", "familyName": f"User{i:07d}",
                                  "formatted": display},
                         "emails": [{"value": name, "type": "work", "primary": True}]},
            })
            values.append({
                "tenant_id": tenant_id, "user_id": uid, "attr": "emails", "position": 0,
                "value": name, "value_norm": name.casefold(), "type": "work", "primary": True,
                "display": None, "data": {},
            })
            words += [{"tenant_id": tenant_id, "user_id": uid, "word": w}
                      for w in profile_words(name, display, rows[-1]["data"])]
        with engine.begin() as conn:
            conn.execute(insert(User.__table__), rows)
            conn.execute(insert(UserValue.__table__), values)
            conn.execute(insert(UserSearchWord.__table__), words)
        done = min(start + batch, users)
        log(f"seeded {done}/{users} users ({time.monotonic() - started:.0f} s)")
    group_id = str(uuid.uuid4())
    members = ids[:group_size]
    with engine.begin() as conn:
        conn.execute(insert(Group.__table__), [{
            "tenant_id": tenant_id, "id": group_id, "display_name": "Bench Group 10k",
            "display_name_norm": "bench group 10k", "external_id": None, "origin": "scim",
            "created_at": now, "modified_at": now, "version": 1, "data": {},
        }])
        for start in range(0, len(members), batch):
            conn.execute(insert(Membership.__table__), [
                {"tenant_id": tenant_id, "group_id": group_id, "member_id": m,
                 "member_type": "User", "created_at": now}
                for m in members[start:start + batch]])
    log(f"seeded group {group_id} with {len(members)} members "
        f"({time.monotonic() - started:.0f} s)")
    # The bulk insert bypassed the directory, which keeps the live-user counter.
    with make_sessionmaker(engine, writes=True)() as session:
        counters.recount_live_users(session, tenant_id)
        session.commit()
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # What autovacuum's auto-analyze does shortly after a bulk load.
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM (ANALYZE)"))
        else:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return {"token": issued.token, "ids": ids, "names": names, "group_id": group_id,
            "group_size": len(members), "seed_seconds": round(time.monotonic() - started, 1)}


def seed_over_http(label: str, server: Server, prefix: str, users: int, group_size: int,
                   threads: int, group_extra: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Seed a peer (scim2-server, scimgateway) through its own HTTP API: POST /Users from
    `threads` client threads, then one POST /Groups with the first `group_size` users.
    Progress lines give the current rate and the server's CPU time per user (which the
    machine's other load does not inflate)."""
    port, token = server.port, server.token
    started = time.monotonic()
    names = [user_name(i) for i in range(users)]
    ids: list[str] = [""] * users
    errors: Counter[int] = Counter()
    samples: dict[int, str] = {}
    progress = {"done": 0, "mark": started, "mark_done": 0, "cpu": server.cpu_seconds() or 0.0}
    lock = threading.Lock()
    every = max(1000, min(5000, users // 20))

    def create(i: int) -> None:
        body = {"schemas": [USER_SCHEMA], "userName": names[i], "externalId": f"ext-{i:07d}",
                "displayName": f"Bench User {i:07d}", "active": True,
                "name": {"givenName": "Bench", "familyName": f"User{i:07d}",
                         "formatted": f"Bench User {i:07d}"},
                "emails": [{"value": names[i], "type": "work", "primary": True}]}
        status, data = call(port, "POST", f"{prefix}/Users", token, body)
        with lock:
            progress["done"] += 1
            if status == 201:
                ids[i] = json.loads(data)["id"]
            else:
                errors[status] += 1
                samples.setdefault(status, data[:300].decode(errors="replace"))
            done = progress["done"]
            if done % every == 0 or done == users:
                now, cpu = time.monotonic(), server.cpu_seconds() or 0.0
                batch = done - progress["mark_done"]
                rate = batch / max(now - progress["mark"], 1e-9)
                cpu_ms = 1000 * (cpu - progress["cpu"]) / max(batch, 1)
                progress.update(mark=now, mark_done=done, cpu=cpu)
                log(f"{label}: seeded {done:,}/{users:,} users over HTTP "
                    f"({now - started:.0f} s, now {rate:,.0f}/s, server CPU {cpu_ms:.2f} ms "
                    f"a user{f'; errors {dict(errors)}' if errors else ''})")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, range(users)))
    if errors:
        log(f"{label}: user seeding errors {dict(errors)}, e.g. {samples}")
    members = [uid for uid in ids[:group_size] if uid]
    t, cpu0 = time.monotonic(), server.cpu_seconds() or 0.0
    status, data = call(port, "POST", f"{prefix}/Groups", token, {
        "schemas": [GROUP_SCHEMA], "displayName": "Bench Group 10k", **(group_extra or {}),
        "members": [{"value": m} for m in members]}, timeout=3600)
    if status != 201:
        sys.exit(f"{label}: creating the group failed: {status} {data[:300]!r}")
    group_id = json.loads(data)["id"]
    log(f"{label}: group {group_id!r} with {len(members):,} members created in "
        f"{time.monotonic() - t:.1f} s (server CPU {(server.cpu_seconds() or 0.0) - cpu0:.1f} s)")
    return {"token": token, "ids": ids, "names": names, "group_id": group_id,
            "group_size": len(members), "seed_seconds": round(time.monotonic() - started, 1),
            "seed_errors": dict(errors)}


# -- servers ---------------------------------------------------------------------------


class Server:
    def __init__(self, label: str, cmd: list[str], env: dict[str, str], cwd: Path,
                 port: int, ready_path: str) -> None:
        self.label, self.port, self.ready_path = label, port, ready_path
        self.token = ""
        self.log_path = RESULTS / f"server-{label}.log"
        self.log_file = open(self.log_path, "w")  # noqa: SIM115
        log(f"starting {label}: {' '.join(cmd)}")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status, _ = call(self.port, "GET", self.ready_path, self.token or None,
                                 timeout=5)
                if status == 200:
                    log(f"{self.label} ready on port {self.port} (worker pid {self.worker_pid()})")
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        tail = self.log_path.read_text()[-3000:]
        sys.exit(f"{self.label} did not become ready; log tail:\n{tail}")

    def drain(self) -> None:
        """Wait until the worker has answered the requests wrk left queued when it stopped,
        so that they do not count against the next run."""
        with contextlib.suppress(OSError):
            call(self.port, "GET", self.ready_path, self.token or None, timeout=900)

    def worker_pid(self) -> int | None:
        """The gunicorn worker: the master's only child."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            pids = [int(p) for p in children.split()]
            return pids[0] if pids else None
        except OSError:
            return None

    def web_processes(self) -> int:
        """The processes answering requests (gunicorn's workers; RSS and CPU are the
        first one's)."""
        return 1

    def rss_mb(self) -> float | None:
        pid = self.worker_pid()
        if pid is None:
            return None
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the worker so far: unlike wall time, it does not count
        what other processes on a shared machine take."""
        pid = self.worker_pid()
        if pid is None:
            return None
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # gunicorn master: graceful stop of its worker
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


class NodeServer(Server):
    """A server that is one Node process (scimgateway): it is its own worker."""

    def worker_pid(self) -> int | None:
        return self.proc.pid if self.proc.poll() is None else None


def worker_args(worker_class: str, threads: int) -> list[str]:
    """One worker: gthread (keep-alive) with N threads as `connector serve` runs it by
    default, gevent (keep-alive, an event loop; `connector serve --worker-class gevent`),
    or gunicorn's sync worker (one request at a time, Connection: close)."""
    if worker_class == "gevent":
        return ["-w", "1", "--worker-class", "gevent", "--worker-connections", "100"]
    if worker_class == "gthread" and threads > 1:
        return ["-w", "1", "--worker-class", "gthread", "--threads", str(threads)]
    return ["-w", "1"]


def server_kind(worker_class: str, threads: int) -> str:
    if worker_class == "gevent":
        return "gevent, keep-alive"
    if worker_class == "gthread" and threads > 1:
        return f"gthread, {threads} threads, keep-alive"
    return "sync, no keep-alive"


class ServeServer(Server):
    """`connector serve` itself: gunicorn's master, its web workers and the supervisor of
    the schedulers' process (`connector worker`)."""

    def worker_pid(self) -> int | None:
        pids = self.web_pids()
        return pids[0] if pids else None

    def web_processes(self) -> int:
        return len(self.web_pids())

    def web_pids(self) -> list[int]:
        """gunicorn's web workers: the master's children but the schedulers' supervisor
        (as many as [server] workers says: by default one per core on PostgreSQL)."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        pids = []
        for pid in (int(p) for p in children.split()):
            with contextlib.suppress(OSError):
                if b"connector.supervise" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
        return pids


def start_connector(url: str, label: str, wsgi_app: str = "wsgi:app", threads: int = 4,
                    worker_class: str = "gthread") -> Server:
    """The connector as `connector serve` runs it by default for gevent (its own worker
    class, gunicorn settings and hooks, the schedulers in a supervised child process), or
    plain gunicorn on `wsgi_app` for the other worker classes."""
    port = free_port()
    env = dict(os.environ, CONNECTOR_DATABASE__URL=url, CONNECTOR_LOGGING__ACCESS_LOG="false",
               CONNECTOR_CONFIG="/nonexistent")
    if worker_class == "gevent" and wsgi_app == "wsgi:app":
        cmd = [str(VENV_BIN / "connector"), "serve", "--worker-class", "gevent",
               "--host", "127.0.0.1", "--port", str(port)]
        server: Server = ServeServer(label, cmd, env, ROOT, port, "/readyz")
    else:
        cmd = [str(VENV_BIN / "gunicorn"), *worker_args(worker_class, threads), "-b",
               f"127.0.0.1:{port}", wsgi_app]
        server = Server(label, cmd, env, ROOT, port, "/readyz")
    server.wait_ready()
    return server


def start_scim2_server(venv: Path, token: str, label: str, threads: int = 4,
                       worker_class: str = "gthread") -> Server:
    port = free_port()
    env = dict(os.environ, SCIM2_BENCH_TOKEN=token)
    cmd = [str(venv / "bin" / "gunicorn"), *worker_args(worker_class, threads), "-b",
           f"127.0.0.1:{port}",
           "--timeout", "600", "--pythonpath", str(ROOT / "bench"), "scim2_server_wsgi:app"]
    server = Server(label, cmd, env, ROOT, port, "/v2/ServiceProviderConfig")
    server.token = token
    server.wait_ready()
    return server


def start_scimgateway(cache: Path, token: str, label: str, runtime: str = "node") -> Server:
    """scimgateway's plugin-loki on loopback: in-memory LokiJS store (persistence off, so no
    file is loaded or saved), bearer-token auth, logging off but for errors on the console
    (a clean run logs nothing), run with the machine's Node through tsx (node:http), or
    with Bun (Bun.serve), the runtime scimgateway prefers.

    scimgateway encrypts the token in its config file when it starts: the file is written
    anew for every run."""
    port = free_port()
    lib, config = cache / "lib", cache / "config"
    lib.mkdir(exist_ok=True)
    config.mkdir(exist_ok=True)
    # The plugin file as scimgateway's postinstall would copy it next to the config.
    shutil.copyfile(cache / "node_modules" / "scimgateway" / "lib" / f"{SCIMGATEWAY_PLUGIN}.ts",
                    lib / f"{SCIMGATEWAY_PLUGIN}.ts")
    (config / f"{SCIMGATEWAY_PLUGIN}.json").write_text(json.dumps({
        "scimgateway": {
            "port": port,
            "localhostonly": True,
            "scim": {"version": "2.0"},
            "log": {"loglevel": {"file": "off", "console": "error"}},
            "auth": {"basic": [], "bearerToken": [
                {"token": token, "readOnly": False, "baseEntities": []}]},
        },
        "endpoint": {"entity": {"undefined": {"dbname": "loki.db", "persistence": False}}},
    }, indent=2) + "\n")
    if runtime == "bun":
        cmd = [str(bun_binary(cache)), f"lib/{SCIMGATEWAY_PLUGIN}.ts"]
    else:
        cmd = [shutil.which("node") or "node", "--import", "tsx",
               f"lib/{SCIMGATEWAY_PLUGIN}.ts"]
    server = NodeServer(label, cmd, dict(os.environ), cache, port, "/ServiceProviderConfig")
    server.token = token
    server.wait_ready()
    return server


# -- load generation -------------------------------------------------------------------

LUA = r"""
-- Generated by bench/scim_bench.py: one scenario, requests built per call.
local mode, prefix, run = "@MODE@", "@PREFIX@", "@RUN@"
local gid, n_users = "@GID@", @NUSERS@
local headers = {["Authorization"] = "Bearer @TOKEN@", ["Accept"] = "application/scim+json",
                 ["Content-Type"] = "application/scim+json"}
local data = {}
local f = io.open("@DATAFILE@", "r")
if f then for line in f:lines() do data[#data + 1] = line end f:close() end
local n = #data
local counter, offset, stride = 0, 0, 1
statuses, samples, wrapped = {}, {}, 0

function setup(thread)
  thread:set("tid", thread_count or 0)
  thread_count = (thread_count or 0) + 1
  threads = threads or {}
  threads[#threads + 1] = thread
end

function init(args)
  math.randomseed(os.time() + (tid or 0) * 7919)
  offset, stride = (tid or 0), (thread_count_all or 1)
end

local function item(k)
  if k > n then wrapped = wrapped + 1; k = ((k - 1) % n) + 1 end
  return data[k]
end

function request()
  counter = counter + 1
  if mode == "get_id" then
    return wrk.format("GET", prefix .. "/Users/" .. data[math.random(n)], headers)
  elseif mode == "filter" then
    return wrk.format("GET", prefix .. "/Users?filter=" .. data[math.random(n)], headers)
  elseif mode == "page" then
    return wrk.format("GET", prefix .. "/Users?startIndex=" .. math.random(n_users - 99)
                      .. "&count=100", headers)
  elseif mode == "post" then
    local name = run .. "-" .. (tid or 0) .. "-" .. counter .. "@bench.example.com"
    local body = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"'
      .. name .. '","displayName":"Posted ' .. counter .. '","active":true,'
      .. '"name":{"givenName":"Posted","familyName":"' .. counter .. '"},'
      .. '"emails":[{"value":"' .. name .. '","type":"work","primary":true}]}'
    return wrk.format("POST", prefix .. "/Users", headers, body)
  elseif mode == "patch_active" then
    -- request 2k sets user k inactive, request 2k+1 sets it active again
    local k = math.floor((counter - 1) / 2) + 1
    local value = (counter % 2 == 1) and "false" or "true"
    local body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],'
      .. '"Operations":[{"op":"replace","path":"active","value":' .. value .. '}]}'
    return wrk.format("PATCH", prefix .. "/Users/" .. item(k), headers, body)
  elseif mode == "member_add" then
    local body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],'
      .. '"Operations":[{"op":"add","path":"members","value":[{"value":"'
      .. item(counter) .. '"}]}]}'
    return wrk.format("PATCH", prefix .. "/Groups/" .. gid, headers, body)
  end
end

function response(status, hdrs, body)
  statuses[tostring(status)] = (statuses[tostring(status)] or 0) + 1
  if status >= 400 and samples[tostring(status)] == nil then
    samples[tostring(status)] = string.sub(body or "", 1, 400)
  end
end

local function esc(s)
  return '"' .. string.gsub(tostring(s), '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c)) end) .. '"'
end

local function obj(t)
  local parts = {}
  for k, v in pairs(t) do
    local val = type(v) == "number" and tostring(v) or esc(v)
    parts[#parts + 1] = esc(k) .. ":" .. val
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local st, sm, wr = {}, {}, 0
  for _, t in ipairs(threads or {}) do
    for k, v in pairs(t:get("statuses") or {}) do st[k] = (st[k] or 0) + v end
    for k, v in pairs(t:get("samples") or {}) do sm[k] = v end
    wr = wr + (t:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write("BENCHJSON {",
    '"requests":', summary.requests, ',"duration_us":', summary.duration,
    ',"p50_us":', latency:percentile(50), ',"p90_us":', latency:percentile(90),
    ',"p99_us":', latency:percentile(99), ',"max_us":', latency.max,
    ',"mean_us":', latency.mean,
    ',"errors":{"connect":', e.connect, ',"read":', e.read, ',"write":', e.write,
    ',"status":', e.status, ',"timeout":', e.timeout, '}',
    ',"statuses":', obj(st), ',"samples":', obj(sm), ',"wrapped":', wr, "}\n")
end
"""


def run_wrk(wrk: str, port: int, mode: str, prefix: str, token: str, datafile: Path,
            gid: str, n_users: int, connections: int, duration: float, run: str,
            workdir: Path) -> dict[str, Any]:
    script = (LUA.replace("@MODE@", mode).replace("@PREFIX@", prefix).replace("@RUN@", run)
              .replace("@GID@", gid).replace("@NUSERS@", str(n_users))
              .replace("@TOKEN@", token).replace("@DATAFILE@", str(datafile)))
    path = workdir / f"{mode}-{run}.lua"
    path.write_text(script)
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
           "--latency", "-s", str(path), f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout[-1500:]} {out.stderr[-1500:]}")
    res = json.loads(line[len("BENCHJSON "):])
    secs = res["duration_us"] / 1e6
    ok = sum(v for k, v in res["statuses"].items() if k.startswith("2"))
    non2xx = sum(v for k, v in res["statuses"].items() if not k.startswith("2"))
    sock = sum(res["errors"][k] for k in ("connect", "read", "write", "timeout"))
    return {
        "tool": "wrk", "connections": connections, "seconds": round(secs, 2),
        "requests": res["requests"], "ok": ok, "non2xx": non2xx, "socket_errors": sock,
        "rps": round(res["requests"] / secs, 1) if secs else 0.0,
        "ok_rps": round(ok / secs, 1) if secs else 0.0,
        "p50_ms": round(res["p50_us"] / 1000, 2), "p90_ms": round(res["p90_us"] / 1000, 2),
        "p99_ms": round(res["p99_us"] / 1000, 2), "max_ms": round(res["max_us"] / 1000, 2),
        "mean_ms": round(res["mean_us"] / 1000, 2),
        "statuses": res["statuses"], "samples": res["samples"], "wrapped": res["wrapped"],
    }


def write_datafiles(workdir: Path, seed: dict[str, Any], prefix_is_scim2: bool
                    ) -> dict[str, Path]:
    rng = random.Random(42)
    ids = [i for i in seed["ids"] if i]
    files = {}
    files["get_id"] = workdir / "ids.txt"
    files["get_id"].write_text("\n".join(ids) + "\n")
    files["filter"] = workdir / "filters.txt"
    files["filter"].write_text("\n".join(
        urllib.parse.quote(f'userName eq "{name}"', safe="") for name in seed["names"]) + "\n")
    outside = ids[seed["group_size"]:]
    # PATCH active and member adds walk disjoint shuffled lists of users outside the group
    # (member adds must name users not yet in it).
    rng.shuffle(outside)
    half = len(outside) // 2
    files["patch_active"] = workdir / "patch_ids.txt"
    files["patch_active"].write_text("\n".join(outside[:half] or ids) + "\n")
    files["member_add"] = workdir / "member_ids.txt"
    files["member_add"].write_text("\n".join(outside[half:] or ids) + "\n")
    files["page"] = files["post"] = workdir / "ids.txt"
    return files


def preflight(port: int, prefix: str, token: str, mode: str, seed: dict[str, Any]
              ) -> tuple[int, str]:
    """One request of the scenario before loading it, to fail fast with the reason."""
    ids, names = seed["ids"], seed["names"]
    if mode == "get_id":
        st, body = call(port, "GET", f"{prefix}/Users/{ids[-1]}", token)
    elif mode == "filter":
        q = urllib.parse.quote(f'userName eq "{names[-1]}"', safe="")
        st, body = call(port, "GET", f"{prefix}/Users?filter={q}", token)
        if st == 200 and json.loads(body).get("totalResults") != 1:
            return 599, f"filter found {json.loads(body).get('totalResults')} users, not 1"
    elif mode == "page":
        st, body = call(port, "GET", f"{prefix}/Users?startIndex=50000&count=100", token)
        if st == 200 and len(json.loads(body).get("Resources", [])) != min(
                100, max(0, len(ids) - 49999)):
            return 599, "page did not hold 100 resources"
    elif mode == "post":
        name = f"preflight-{uuid.uuid4().hex[:8]}@bench.example.com"
        st, body = call(port, "POST", f"{prefix}/Users", token, {
            "schemas": [USER_SCHEMA], "userName": name, "active": True,
            "emails": [{"value": name, "type": "work", "primary": True}]})
        if st == 201:
            # The user is there afterwards, under the id the answer gave.
            created = json.loads(body).get("id", "")
            got, data = call(port, "GET", f"{prefix}/Users/{urllib.parse.quote(created)}",
                             token)
            if got != 200 or json.loads(data).get("userName") != name:
                return 599, f"POST answered 201, but GET of {created!r} answered {got}"
    elif mode == "patch_active":
        # Each PATCH must really change `active` (false, then true again): read it back.
        for value in (False, True):
            patch = {"schemas": [PATCH_OP],
                     "Operations": [{"op": "replace", "path": "active", "value": value}]}
            st, body = call(port, "PATCH", f"{prefix}/Users/{ids[-1]}", token, patch)
            if not 200 <= st < 300:
                break
            got, data = call(port, "GET", f"{prefix}/Users/{ids[-1]}", token)
            if got != 200 or json.loads(data).get("active") is not value:
                return 599, f"PATCH active {value} answered {st}, then GET read " \
                            f"active={json.loads(data).get('active') if got == 200 else got}"
    else:
        member = ids[-1]
        patch = {"schemas": [PATCH_OP], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": member}]}]}
        gid = seed["group_id"]
        st, body = call(port, "PATCH", f"{prefix}/Groups/{gid}", token, patch)
        if 200 <= st < 300:
            got, data = call(port, "GET", f"{prefix}/Groups/{gid}", token)
            members = json.loads(data).get("members") if got == 200 else None
            if members is not None and member not in {m.get("value") for m in members}:
                return 599, f"member add answered {st}, but {member!r} is not in the group"
    return st, body[:400].decode(errors="replace")


def run_scenarios(label: str, server: Server, prefix: str, seed: dict[str, Any],
                  args: argparse.Namespace, wrk: str, tools_venv: Path) -> dict[str, Any]:
    workdir = RESULTS / "work" / label
    workdir.mkdir(parents=True, exist_ok=True)
    files = write_datafiles(workdir, seed, prefix == "/v2")
    token, n_users = seed["token"], len(seed["ids"])
    out: dict[str, Any] = {"label": label, "users": n_users, "group_size": seed["group_size"],
                           "seed_seconds": seed["seed_seconds"], "scenarios": {},
                           "rss_mb": {"start": server.rss_mb()},
                           "web_processes": server.web_processes()}
    # A short warm-up so that the first scenario does not pay for cold caches.
    run_wrk(wrk, server.port, "get_id", prefix, token, files["get_id"], seed["group_id"],
            n_users, args.connections, min(2.0, args.duration), "warmup", workdir)
    out["rss_mb"]["before"] = server.rss_mb()
    run_tag = uuid.uuid4().hex[:6]
    for name, what, how in SCENARIOS:
        if args.scenarios and name not in args.scenarios:
            continue
        duration = args.duration
        if name == "member_add" and label.startswith("scim2") and args.scim2_member_duration:
            duration = args.scim2_member_duration
        st, body = preflight(server.port, prefix, token, name, seed)
        entry: dict[str, Any] = {"request": what, "data": how, "preflight": st}
        if not 200 <= st < 300:
            log(f"{label} {name}: preflight answered {st}: {body}")
            entry["preflight_body"] = body
            if not args.force:
                entry["skipped"] = True
                out["scenarios"][name] = entry
                continue
        load = run_wrk(wrk, server.port, name, prefix, token, files[name], seed["group_id"],
                       n_users, args.connections, duration, f"{run_tag}c{args.connections}",
                       workdir)
        server.drain()
        single = run_wrk(wrk, server.port, name, prefix, token, files[name], seed["group_id"],
                         n_users, 1, duration, f"{run_tag}c1x", workdir)
        server.drain()
        if name in args.profile:
            # A third, unmeasured run under py-spy: sampling slows the worker down.
            profile = start_profile(tools_venv, server, label, name, duration)
            run_wrk(wrk, server.port, name, prefix, token, files[name], seed["group_id"],
                    n_users, args.connections, duration, f"{run_tag}prof", workdir)
            entry["profile"] = finish_profile(profile)
            server.drain()
        entry.update({"load": load, "single": single, "rss_after_mb": server.rss_mb(),
                      # others' processes on the machine skew the numbers: keep a trace
                      "loadavg_1m": round(os.getloadavg()[0], 2)})
        out["scenarios"][name] = entry
        flag = "" if not (load["non2xx"] or single["non2xx"] or load["socket_errors"]) else (
            f"  !! non-2xx {load['statuses']} / {single['statuses']} "
            f"samples {load['samples'] or single['samples']}")
        log(f"{label} {name}: {load['rps']} req/s at c={args.connections} "
            f"(p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms); c=1: {single['rps']} req/s, "
            f"p50 {single['p50_ms']} ms, p99 {single['p99_ms']} ms; "
            f"RSS {entry['rss_after_mb']} MB{flag}")
    out["rss_mb"]["after"] = server.rss_mb()
    return out


# -- profiling -------------------------------------------------------------------------


def start_profile(venv: Path, server: Server, label: str, name: str, duration: float
                  ) -> tuple[subprocess.Popen[bytes], Path]:
    raw = RESULTS / f"profile-{label}-{name}.txt"
    pid = server.worker_pid()
    cmd = [str(venv / "bin" / "py-spy"), "record", "-p", str(pid), "-d",
           str(max(1, int(duration) - 1)), "-r", "250", "-f", "raw", "-o", str(raw)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, raw


def finish_profile(handle: tuple[subprocess.Popen[bytes], Path]) -> dict[str, Any]:
    proc, raw = handle
    proc.wait(60)
    if not raw.exists():
        return {"error": "py-spy wrote nothing"}
    return summarize_profile(raw)


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Inclusive share of samples per function (file:function) from py-spy's raw output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    pct = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    ours = [(f, pct(c)) for f, c in inclusive.most_common()
            if f.startswith(("connector/", "scim/"))][:top]
    return {"samples": total, "file": str(raw.relative_to(ROOT)),
            "inclusive_ours": ours,
            "inclusive_all": [(f, pct(c)) for f, c in inclusive.most_common(top)],
            "self_top": [(f, pct(c)) for f, c in own.most_common(top)]}


def _frame(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "short/file.py:func"
    func, _, loc = frame.partition(" (")
    path = loc.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{func}"


# -- report ----------------------------------------------------------------------------


def verdict(name: str, entry: dict[str, Any]) -> str:
    if entry.get("skipped"):
        return "not measured (errors)"
    load, single = entry["load"], entry["single"]
    if not load["ok"] or not single["ok"]:
        return "not measured (no answer in time)"
    if load["non2xx"] or single["non2xx"] or load["socket_errors"] or single["socket_errors"]:
        return "not met (errors)"
    kind = TARGETS[name][1]
    ok = {
        "rps1000_p99_10": load["ok_rps"] >= 1000 and single["p99_ms"] <= 10,
        "rps400": load["ok_rps"] >= 400,
        "p99_20": single["p99_ms"] <= 20,
        "p99_10": single["p99_ms"] <= 10,
    }[kind]
    return "met" if ok else "not met"


def table(run: dict[str, Any], refs: dict[str, dict[str, Any]] | None = None) -> str:
    """One run's rows; with `refs` (peer name → its run), ours ÷ each peer's columns."""
    refs = refs or {}
    head = ("| scenario | req/s (c={c}) | p50 / p99 ms (c={c}) | p50 / p99 ms (c=1) "
            "| non-2xx | target | verdict |").format(c=run.get("connections", "?"))
    sep = "| --- | ---: | ---: | ---: | ---: | --- | --- |"
    for peer in refs:
        head += f" {peer} req/s | ratio req/s | {peer} p99 (c=1) | ratio p99 |"
        sep += " ---: | ---: | ---: | ---: |"
    lines = [head, sep]
    for name, what, _ in SCENARIOS:
        entry = run["scenarios"].get(name)
        if entry is None:
            continue
        if entry.get("skipped"):
            row = (f"| {what} | — | — | — | preflight {entry['preflight']} ⚠ "
                   f"| {TARGETS[name][0]} | {verdict(name, entry)} |")
        else:
            load, single = entry["load"], entry["single"]
            bad = load["non2xx"] + single["non2xx"] + load["socket_errors"] + \
                single["socket_errors"]
            errs = (f"**{bad}** ⚠ {_statuses(load, single)}" if bad else "0")
            row = (f"| {what} | {load['ok_rps']:,.0f} | {load['p50_ms']} / {load['p99_ms']} "
                   f"| {single['p50_ms']} / {single['p99_ms']} | {errs} "
                   f"| {TARGETS[name][0]} | {verdict(name, entry)} |")
        for ref in refs.values():
            other = ref["scenarios"].get(name)
            if other and not other.get("skipped") and not entry.get("skipped"):
                o_load, o_single = other["load"], other["single"]
                o_bad = (o_load["non2xx"] + o_single["non2xx"] + o_load["socket_errors"]
                         + o_single["socket_errors"])
                rps_ratio = (entry["load"]["ok_rps"] / o_load["ok_rps"]
                             if o_load["ok_rps"] else float("inf"))
                p99_ratio = (entry["single"]["p99_ms"] / o_single["p99_ms"]
                             if o_single["p99_ms"] else float("inf"))
                row += (f" {o_load['ok_rps']:,.1f}{' ⚠' if o_bad else ''} | {rps_ratio:.2f}× "
                        f"| {o_single['p99_ms']} | {p99_ratio:.2f}× |")
            else:
                row += " — | — | — | — |"
        lines.append(row)
    if refs:
        lines += ["", peer_ratio_summary(run, refs)]
    rss = run["rss_mb"]
    lines.append("")
    lines.append(f"Worker RSS: {rss.get('start')} MB at start, {rss.get('before')} MB after "
                 f"warm-up, {rss.get('after')} MB after all scenarios"
                 + (" (" + "; ".join(f"{peer}: {ref['rss_mb'].get('before')} → "
                                     f"{ref['rss_mb'].get('after')} MB with {ref['users']:,} "
                                     "users" for peer, ref in refs.items()) + ")"
                    if refs else "") + ".")
    return "\n".join(lines)


def peer_ratio_summary(run: dict[str, Any], refs: dict[str, dict[str, Any]],
                       wanted: float = 1.2) -> str:
    """Issue 19's test for each row: ours ≥ 1.2 × every peer's req/s, with no errors on
    either side (a row a peer could not answer cleanly is not counted as won)."""
    won, lost = [], []
    for name, _, _ in SCENARIOS:
        entry = run["scenarios"].get(name)
        if entry is None:
            continue
        short = []
        for peer, ref in refs.items():
            other = ref["scenarios"].get(name)
            if not other or other.get("skipped") or entry.get("skipped"):
                short.append(f"{peer}: not measured")
                continue
            if _errors(entry) or _errors(other):
                short.append(f"{peer}: errors")
                continue
            ratio = (entry["load"]["ok_rps"] / other["load"]["ok_rps"]
                     if other["load"]["ok_rps"] else float("inf"))
            if ratio < wanted:
                short.append(f"{peer} {ratio:.2f}×")
        (lost if short else won).append(f"{name}" + (f" ({', '.join(short)})" if short else ""))
    return (f"Rows at ≥ {wanted}× every peer's req/s ({', '.join(refs)}): "
            f"{len(won)} of {len(won) + len(lost)}"
            + (f"; below: {'; '.join(lost)}" if lost else "") + ".")


def _errors(entry: dict[str, Any]) -> int:
    load, single = entry["load"], entry["single"]
    return int(load["non2xx"] + single["non2xx"] + load["socket_errors"]
               + single["socket_errors"])


def _statuses(*results: dict[str, Any]) -> str:
    merged: Counter[str] = Counter()
    for r in results:
        merged.update({k: v for k, v in r["statuses"].items() if not k.startswith("2")})
        for k in ("socket_errors",):
            if r[k]:
                merged["socket"] += r[k]
    return ", ".join(f"{k}: {v}" for k, v in sorted(merged.items()))


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               platform.processor())
    mem = next(ln.split(":", 1)[1].strip() for ln in
               Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    import sqlite3

    pg = ""
    with contextlib.suppress(OSError):
        pg = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres",
                             "-Atc", "show server_version"], capture_output=True, text=True,
                            check=False, timeout=10).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem": mem,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "postgresql": pg, "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                  capture_output=True, text=True, check=False).stdout.strip()}


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, nargs="+", default=[100_000],
                   help="directory size(s); several sizes show whether memory stays flat")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--group-members", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=10, help="seconds per scenario and run")
    p.add_argument("--connections", type=int, default=8, help="wrk connections for req/s")
    p.add_argument("--worker-class", choices=["gthread", "gevent", "sync"], default="gevent",
                   help="worker class of the one worker (default gevent: the connector "
                        "runs as `connector serve` runs it by default; gthread and sync "
                        "run plain gunicorn on --wsgi-app)")
    p.add_argument("--threads", type=int, default=4,
                   help="gthread threads in the one gunicorn worker (as `connector serve`); "
                        "1 = sync worker, no keep-alive")
    p.add_argument("--batch", type=int, default=5000, help="rows per bulk insert")
    p.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-name", default="connector_bench")
    p.add_argument("--scenarios", nargs="*", default=[],
                   help=f"subset of {[s[0] for s in SCENARIOS]}")
    p.add_argument("--profile", nargs="*", default=[],
                   help="scenarios to profile with py-spy during the loaded run")
    p.add_argument("--force", action="store_true",
                   help="load a scenario even when its preflight request fails")
    p.add_argument("--against-scim2-server", action="store_true",
                   help="run the same scenarios against scim2-server and add ratio columns")
    p.add_argument("--scim2-only", action="store_true",
                   help="only measure scim2-server (use --tag to keep the file apart)")
    p.add_argument("--scim2-results", type=Path, default=None,
                   help="take scim2-server's numbers from this earlier JSON instead of "
                        "measuring it again")
    p.add_argument("--scim2-users", type=int, default=None,
                   help="users seeded into scim2-server over HTTP (default: --users' largest)")
    p.add_argument("--scim2-seed-threads", type=int, default=4)
    p.add_argument("--scim2-member-duration", type=float, default=None,
                   help="shorter duration for scim2-server member adds if they are slow")
    p.add_argument("--tools-venv", type=Path, default=Path("/tmp/scim2server-venv"),
                   help="separate virtualenv for scim2-server, its gunicorn and py-spy")
    p.add_argument("--against-scimgateway", "--scimgateway", action="store_true",
                   help="run the same scenarios against scimgateway (plugin-loki, in memory) "
                        "and add ratio columns")
    p.add_argument("--scimgateway-only", action="store_true",
                   help="only measure scimgateway (use --tag to keep the file apart)")
    p.add_argument("--scimgateway-results", type=Path, default=None,
                   help="take scimgateway's numbers from this earlier JSON instead of "
                        "measuring it again")
    p.add_argument("--scimgateway-users", type=int, default=None,
                   help="users seeded into scimgateway over HTTP (default: --users' largest)")
    p.add_argument("--scimgateway-seed-threads", type=int, default=8,
                   help="client threads seeding scimgateway (one Node process: they only "
                        "keep it busy)")
    p.add_argument("--scimgateway-package", default=f"scimgateway@{SCIMGATEWAY_VERSION}",
                   help="what `npm install` installs (default: the pinned registry "
                        "version; a tarball or folder of scimgateway works too)")
    p.add_argument("--scimgateway-runtime", choices=["node", "bun"], default="node",
                   help="run scimgateway with the machine's Node through tsx (default), or "
                        f"with Bun {BUN_VERSION} from npm (its preferred runtime, Bun.serve)")
    p.add_argument("--scimgateway-cache", type=Path, default=Path("/tmp/scimgateway-bench"),
                   help="folder scimgateway is npm-installed into and run from (not in git)")
    p.add_argument("--wsgi-app", default="wsgi:app",
                   help="gunicorn app spec for the connector (production: wsgi:app)")
    p.add_argument("--tag", default="", help="suffix for the result file names")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    wrk = ensure_wrk()
    want_scim2 = (args.against_scim2_server or args.scim2_only) and not args.scim2_results
    want_gateway = ((args.against_scimgateway or args.scimgateway_only)
                    and not args.scimgateway_results)
    if want_scim2 or args.profile:
        ensure_tools_venv(args.tools_venv, want_scim2, bool(args.profile),
                          args.worker_class == "gevent")
    gateway_versions = (ensure_scimgateway(args.scimgateway_cache, args.scimgateway_package,
                                           args.scimgateway_runtime)
                        if want_gateway else None)
    info = machine()
    info["server"] = server_kind(args.worker_class, args.threads)
    info["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    tag = f"-{args.tag}" if args.tag else ""
    runs: list[dict[str, Any]] = []
    refs: dict[str, dict[str, Any]] = {}
    if not (args.scim2_only or args.scimgateway_only):
        for users in args.users:
            for kind in dbs:
                label = f"{kind}-{users}"
                log(f"== {label}: fresh database, seeding {users:,} users")
                url = fresh_database(kind, users, args.pg_base, args.pg_name)
                seed = seed_connector(url, users, args.group_members, args.batch)
                server = start_connector(url, label, args.wsgi_app, args.threads,
                                         args.worker_class)
                try:
                    run = run_scenarios(label, server, "/scim/v2", seed, args, wrk,
                                        args.tools_venv)
                finally:
                    server.stop()
                run.update({"db": kind, "connections": args.connections,
                            "duration": args.duration, "tool": "wrk 1 thread"})
                runs.append(run)
    if args.scim2_results:
        refs["scim2-server"] = json.loads(args.scim2_results.read_text())["scim2_server"]
        log(f"scim2-server results taken from {args.scim2_results} "
            f"({refs['scim2-server']['date']})")
    elif want_scim2:
        users = args.scim2_users or max(args.users)
        label = f"scim2-server-{users}"
        log(f"== {label}: seeding {users:,} users over HTTP")
        server = start_scim2_server(args.tools_venv, "scim2-bench-" + uuid.uuid4().hex, label,
                                    args.threads, args.worker_class)
        refs["scim2-server"] = run_peer(server, label, "/v2", users, args.scim2_seed_threads,
                                        None, args, wrk, info)
    if args.scimgateway_results:
        refs["scimgateway"] = json.loads(args.scimgateway_results.read_text())["scimgateway"]
        log(f"scimgateway results taken from {args.scimgateway_results} "
            f"({refs['scimgateway']['date']})")
    elif want_gateway:
        users = args.scimgateway_users or max(args.users)
        label = f"scimgateway-{users}"
        log(f"== {label}: seeding {users:,} users over HTTP")
        server = start_scimgateway(args.scimgateway_cache, "gateway-bench-" + uuid.uuid4().hex,
                                   label, args.scimgateway_runtime)
        # plugin-loki makes a group's id its externalId (else its displayName, which has
        # spaces): an id that needs no escaping in the load generator's URLs.
        refs["scimgateway"] = run_peer(server, label, "", users,
                                       args.scimgateway_seed_threads,
                                       {"externalId": "bench-group-10k"}, args, wrk, info)
        refs["scimgateway"]["versions"] = gateway_versions
    report = render(info, runs, refs)
    print("\n" + report)
    (RESULTS / f"scim_bench{tag}.md").write_text(report + "\n")
    (RESULTS / f"scim_bench{tag}.json").write_text(json.dumps(
        {"machine": info, "runs": runs,
         **{key: refs.get(name) for key, name in PEERS.items()}}, indent=2) + "\n")
    log(f"wrote bench/results/scim_bench{tag}.md and .json")


def run_peer(server: Server, label: str, prefix: str, users: int, seed_threads: int,
             group_extra: dict[str, Any] | None, args: argparse.Namespace, wrk: str,
             info: dict[str, Any]) -> dict[str, Any]:
    """Seed a started peer over its HTTP API, run the scenarios, stop it."""
    try:
        rss_empty = server.rss_mb()
        seed = seed_over_http(label, server, prefix, users, args.group_members,
                              seed_threads, group_extra)
        ref = run_scenarios(label, server, prefix, seed, args, wrk, args.tools_venv)
        ref["rss_mb"]["empty"] = rss_empty
        ref["seed_errors"] = seed["seed_errors"]
    finally:
        server.stop()
    ref.update({"db": "memory", "connections": args.connections,
                "duration": args.duration, "tool": "wrk 1 thread", "date": info["date"]})
    return ref


def render(info: dict[str, Any], runs: list[dict[str, Any]],
           refs: dict[str, dict[str, Any]]) -> str:
    out = [f"# SCIM bench, {info['date']} (commit {info['git']})", "",
           f"{info['nproc']} × {info['cpu']}, {info['mem']} RAM, Python {info['python']}, "
           f"SQLite {info['sqlite']}, PostgreSQL {info['postgresql']}. "
           f"gunicorn ({info['server']}; the connector's web processes as its "
           "`[server] workers` default gives on each database, peers one); wrk, 1 thread. "
           "req/s counts 2xx answers only.", ""]
    for run in runs:
        out.append(f"## {run['db']}, {run['users']:,} users "
                   f"(seeded in {run['seed_seconds']} s; group of {run['group_size']:,}; "
                   f"{run.get('web_processes', 1)} web process(es))")
        out.append("")
        out.append(table(run, refs))
        out.append("")
    for peer, ref in refs.items():
        what = "in memory"
        if ref.get("versions"):
            v = ref["versions"]
            what = (f"{v.get('scimgateway')}, {SCIMGATEWAY_PLUGIN} in memory, LokiJS "
                    f"{v.get('lokijs')}, {v.get('runtime') or 'Node ' + str(v.get('node'))}")
        errors = ref.get("seed_errors")
        out.append(f"## {peer} ({what}), {ref['users']:,} users "
                   f"(seeded over HTTP in {ref['seed_seconds']} s"
                   f"{f'; seeding errors {errors} ⚠' if errors else ''})")
        out.append("")
        out.append(table(ref).replace("| target | verdict |", "| (target) | (verdict) |"))
        out.append("")
    profiles = [(r["label"], n, e["profile"]) for r in [*runs, *refs.values()]
                for n, e in r["scenarios"].items() if e.get("profile")]
    for label, name, prof in profiles:
        out.append(f"### py-spy, {label} {name} ({prof.get('samples')} samples, "
                   f"raw stacks in {prof.get('file')})")
        out.append("")
        out.append("inclusive, our code: " + "; ".join(
            f"{f} {p}%" for f, p in prof.get("inclusive_ours", [])[:15]))
        out.append("")
        out.append("self time, top: " + "; ".join(
            f"{f} {p}%" for f, p in prof.get("self_top", [])[:12]))
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
