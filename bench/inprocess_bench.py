#!/usr/bin/env python3
"""SCIM and admin API request cost in one process, without HTTP or a load generator.

    .venv/bin/python bench/inprocess_bench.py --users 2000 --rounds 5
    .venv/bin/python bench/inprocess_bench.py --db postgresql --kinds POST PATCH --profile /tmp/p

Builds the app on a fresh SQLite file (or a fresh PostgreSQL database, dropped at the
end), creates N users over SCIM, then times each kind of request through Flask's test
client, best and median of --rounds passes: wall time, and the CPU time of this process
(and on PostgreSQL of its server backends, read from /proc) per request, which a busy
machine disturbs far less. With no server, no wrk and no second process, it compares two
checkouts of the code (run it in each, alternately) far more steadily than
bench/scim_bench.py does; it measures the cost of a request, not throughput.
--profile writes a cProfile (CPU time) of one more pass of each kind (PREFIX-<n>.prof).
docs/benchmarks.md holds the published comparisons.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from connector import admins, migrate, tenants  # noqa: E402
from connector.app import create_app  # noqa: E402
from connector.config import DatabaseSettings, load_settings  # noqa: E402
from connector.db import make_engine  # noqa: E402

if TYPE_CHECKING:
    from sqlalchemy import Engine

SCIM_JSON = "application/scim+json"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5, help="timed passes per kind")
    p.add_argument("--provisioning-log", choices=["on", "off"], default="on",
                   help="write the provisioning log (default, as production); off: the A/B")
    p.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-name", default="inprocess_bench",
                   help="the PostgreSQL database made (and dropped) for the run")
    p.add_argument("--kinds", nargs="*", default=[],
                   help="only the kinds whose name contains one of these words")
    p.add_argument("--profile", default=None, metavar="PREFIX",
                   help="cProfile (CPU time) one more pass of each kind into PREFIX-<n>.prof")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="inprocess-bench-"))
    url = f"sqlite:///{workdir}/bench.sqlite3"
    if args.db == "postgresql":
        url = f"{args.pg_base}/{args.pg_name}"
        recreate_database(args.pg_base, args.pg_name)
    try:
        return run(args, workdir, url)
    finally:
        if args.db == "postgresql":
            recreate_database(args.pg_base, args.pg_name, create=False)


def recreate_database(base: str, name: str, create: bool = True) -> None:
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if create:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def backend_cpu_seconds(monitor: Engine | None) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving this database (none on
    SQLite, or where /proc does not show them); asked on a connection of its own."""
    if monitor is None:
        return 0.0
    with monitor.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = "
                                 "current_database() AND pid <> pg_backend_pid()")).scalars()
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace, workdir: Path, url: str) -> int:
    settings = load_settings(environ={"CONNECTOR_CONFIG": str(workdir / "none.toml")},
                             overrides={"database": {"url": url},
                                        "logging": {"access_log": False},
                                        "azure_sync": {"scheduler_in_web": False},
                                        "billing": {"scheduler_in_web": False},
                                        "provisioning_log": {
                                            "enabled": args.provisioning_log == "on"}})
    engine = make_engine(DatabaseSettings(url=url))
    migrate.upgrade(engine)
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as s:
        tenant, issued = tenants.create_tenant(s, "Bench", now)
        _account, api_token = admins.create_token(
            s, admins.create_admin(s, "bench@example.com", "partner", None, now)[0].id,
            "bench", now)
        s.commit()
        tenant_id = tenant.id
    client = create_app(settings, engine=engine).test_client()
    scim = {"Authorization": f"Bearer {issued.token}", "Content-Type": SCIM_JSON}
    api = {"Authorization": f"Bearer {api_token}", "Content-Type": "application/json"}
    ids = [client.post("/scim/v2/Users", headers=scim, data=json.dumps({
        "schemas": [USER], "userName": f"u{i}@example.com",
        "name": {"givenName": "Ann", "familyName": f"Lee {i}"},
        "emails": [{"value": f"u{i}@example.com", "primary": True}]})).json["id"]
        for i in range(args.users)]
    if engine.dialect.name == "postgresql":
        # What autovacuum's auto-analyze does within a minute of such a load: without
        # it the planner, still believing the tables empty, read a user by scanning its
        # tenant's rows (the PATCHes' read and write took several times their cost).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE)"))
    some = ids[:min(len(ids), 500)]
    base = f"/api/v1/tenants/{tenant_id}"
    posted, passes = iter(range(10**9)), iter(range(10**9))
    kinds: list[tuple[str, int, Callable[[], None]]] = [
        ("SCIM POST /Users", 200, lambda: [
            client.post("/scim/v2/Users", headers=scim, data=json.dumps({
                "schemas": [USER], "userName": f"new{n}@example.com",
                "name": {"givenName": "Bo", "familyName": f"Ek {n}"},
                "emails": [{"value": f"new{n}@example.com", "primary": True}]}))
            for n in (next(posted) for _ in range(200))]),
        ("SCIM GET /Users/{id}", len(some), lambda: [
            client.get(f"/scim/v2/Users/{i}", headers=scim) for i in some]),
        ('SCIM GET /Users?filter=userName eq "…"', len(some), lambda: [
            client.get(f'/scim/v2/Users?filter=userName eq "u{k}@example.com"', headers=scim)
            for k in range(len(some))]),
        ("SCIM GET /Users?startIndex=R&count=100", 50, lambda: [
            client.get(f"/scim/v2/Users?startIndex={k * 10 + 1}&count=100", headers=scim)
            for k in range(50)]),
        ("SCIM PATCH /Users/{id} active", len(some), lambda: [
            client.patch(f"/scim/v2/Users/{i}", headers=scim, data=json.dumps({
                "schemas": [PATCH], "Operations": [
                    {"op": "replace", "path": "active", "value": bool((k + flip) % 2)}]}))
            # every pass flips every user: each PATCH changes it (an event, a write)
            for flip in (next(passes),) for k, i in enumerate(some)]),
        ("API GET …/users?page=P", 50, lambda: [
            client.get(f"{base}/users?page={k % 10 + 1}", headers=api) for k in range(50)]),
        ("API PATCH …/users/{id} (guest)", len(some), lambda: [
            client.patch(f"{base}/users/{i}", headers=api,
                         data=json.dumps({"guest": bool(k % 2)}))
            for k, i in enumerate(some)]),
    ]
    monitor = (create_engine(url, poolclass=NullPool) if args.db == "postgresql" else None)
    if args.kinds:
        kinds = [k for k in kinds if any(word in k[0] for word in args.kinds)]
    print(f"{args.users:,} users, {'SQLite' if args.db == 'sqlite' else 'PostgreSQL'}, best "
          f"and median of {args.rounds} passes, provisioning log {args.provisioning_log}")
    print("| request | best µs | median µs | CPU µs (median) | PostgreSQL CPU µs (median) |\n"
          "| --- | ---: | ---: | ---: | ---: |")
    for n, (name, count, one_pass) in enumerate(kinds):
        one_pass()  # warm-up: caches and statements
        times, cpu, server = [], [], []
        for _ in range(args.rounds):
            backend = backend_cpu_seconds(monitor)
            started, started_cpu = time.perf_counter(), time.process_time()
            one_pass()
            times.append((time.perf_counter() - started) / count * 1e6)
            cpu.append((time.process_time() - started_cpu) / count * 1e6)
            server.append((backend_cpu_seconds(monitor) - backend) / count * 1e6)
        print(f"| {name} | {min(times):,.0f} | {statistics.median(times):,.0f} | "
              f"{statistics.median(cpu):,.0f} | {statistics.median(server):,.0f} |")
        if args.profile:
            profiler = cProfile.Profile(time.process_time)  # CPU, not waits
            profiler.runcall(one_pass)
            profiler.dump_stats(f"{args.profile}-{n}.prof")
    return 0


if __name__ == "__main__":
    sys.exit(main())
