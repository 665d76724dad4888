#!/usr/bin/env python3
"""Admin API latency at a realistic directory size, over HTTP.

    .venv/bin/python bench/admin_bench.py --users 100000 --db both

For each database and size it seeds a fresh database as bench/scim_bench.py does (N
users, a group of 10,000 members), then varies them the way a real tenant looks: every
7th user inactive, every 11th a guest, every 3rd with its own Hybrid module, the big
group carrying Unify. It starts the connector as production does (gunicorn, one
worker) and measures, with one client at a time (service latency, no queueing):

- users pages: GET /api/v1/tenants/{id}/users with a search (the start of a userName,
  of a display name, a family name, the e-mail domain, two words), a filter (status,
  guest, module, source), a sort, and a random page of the first 20; each kind
  --requests times (only the kinds --kinds names, if given); p50/p90/p99 per kind and
  over all;
- CSV export of every user: wall time to the last byte, rows and bytes, and the
  worker's RSS sampled every 20 ms while it streams (flat memory means the peak does not
  grow with N).

Results go to bench/results/admin_bench.{md,json}; docs/benchmarks.md holds the last
published ones.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scim_bench import (  # noqa: E402
    RESULTS,
    Server,
    fresh_database,
    log,
    machine,
    seed_connector,
    start_connector,
    user_name,
)

TARGET_PAGE_P99_MS = 50
TARGET_EXPORT_S = 5


def vary_and_admin(url: str, group_id: str) -> tuple[str, str]:
    """Give the seeded users the variety a real tenant has; create a partner admin."""
    from sqlalchemy import text

    from connector import admins
    from connector.config import DatabaseSettings
    from connector.db import make_engine, make_sessionmaker
    from connector.models import Tenant

    engine = make_engine(DatabaseSettings(url=url))
    now = dt.datetime.now(dt.UTC)
    with make_sessionmaker(engine, writes=True)() as s:
        tenant_id = s.query(Tenant.id).scalar()
        num = "CAST(substr(external_id, 5) AS INTEGER)"  # seeded as ext-0000123
        s.execute(text(f"UPDATE users SET active = false, idp_active = false, "
                       f"in_deleted_list = true WHERE {num} % 7 = 0"))
        s.execute(text(f"UPDATE users SET guest = true WHERE {num} % 11 = 1"))
        s.execute(text(f"INSERT INTO user_modules (tenant_id, user_id, module) "
                       f"SELECT tenant_id, id, 'Hybrid' FROM users WHERE {num} % 3 = 2"))
        s.execute(text("INSERT INTO group_modules (tenant_id, group_id, module) "
                       "VALUES (:t, :g, 'Unify')"), {"t": tenant_id, "g": group_id})
        _, token = admins.create_token(
            s, admins.create_admin(s, "bench@example.com", "partner", None, now,
                                   password="bench password 123")[0].id, "bench", now)
        s.commit()
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM (ANALYZE)"))
        else:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return tenant_id, token


def page_queries(users: int, rng: random.Random) -> dict[str, Any]:
    """Query-string makers per kind: what admins do on the users page."""
    def prefix() -> str:
        return user_name(rng.randrange(users))[:rng.choice((8, 12, 14, 16))]

    page = lambda: rng.randint(1, 20)  # noqa: E731
    return {
        "first page": lambda: "",
        "search userName": lambda: f"q={prefix()}",
        "search displayName": lambda: f"q=bench%20user%20{rng.randrange(users):07d}"[:26],
        # The seeded family name is User0001234 (displayName "Bench User 0001234").
        "search family name": lambda: f"q=User{rng.randrange(users):07d}"[:rng.choice((9, 11))],
        "search e-mail domain": lambda: "q=example.com",
        "search two words": lambda: f"q=bench%20user{rng.randrange(users):07d}"[:20],
        "status=inactive": lambda: f"status=inactive&page={page()}",
        "guest=true": lambda: f"guest=true&page={page()}",
        "module=Unify": lambda: f"module=Unify&page={page()}",
        "module=Hybrid": lambda: f"module=Hybrid&page={page()}",
        "source=scim, -modified": lambda: f"source=scim&sort=-modified&page={page()}",
        "search + inactive": lambda: f"q={prefix()[:10]}&status=inactive",
        "sort displayName": lambda: f"sort=displayName&page={page()}",
    }


def timed_get(conn: http.client.HTTPConnection, path: str, token: str
              ) -> tuple[int, float, bytes]:
    started = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    body = response.read()
    return response.status, (time.perf_counter() - started) * 1000, body


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def measure_pages(server: Server, tenant_id: str, token: str, users: int, requests: int,
                  only: list[str] | None = None) -> dict[str, Any]:
    rng = random.Random(7)
    kinds = {k: v for k, v in page_queries(users, rng).items() if not only or k in only}
    base = f"/api/v1/tenants/{tenant_id}/users?per_page=50&"
    results: dict[str, Any] = {}
    everything: list[float] = []
    for kind, make in kinds.items():
        times, errors, matches = [], 0, []
        for i in range(requests + 5):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            status, ms, body = timed_get(conn, base + make(), token)
            conn.close()
            if i < 5:
                continue  # warm-up: first statements of a kind prepare plans and caches
            if status != 200:
                errors += 1
            else:
                matches.append(json.loads(body)["total"])
            times.append(ms)
        everything += times
        results[kind] = {"n": len(times), "errors": errors,
                         "p50_ms": round(statistics.median(times), 2),
                         "p90_ms": round(percentile(times, 90), 2),
                         "p99_ms": round(percentile(times, 99), 2),
                         "max_ms": round(max(times), 2),
                         "median_total": statistics.median(matches) if matches else None}
        log(f"  {kind:<26} p50 {results[kind]['p50_ms']:6.2f} ms  "
            f"p99 {results[kind]['p99_ms']:6.2f} ms  errors {errors}")
    results["all"] = {"n": len(everything), "p50_ms": round(statistics.median(everything), 2),
                      "p90_ms": round(percentile(everything, 90), 2),
                      "p99_ms": round(percentile(everything, 99), 2),
                      "max_ms": round(max(everything), 2)}
    return results


def measure_export(server: Server, tenant_id: str, token: str) -> dict[str, Any]:
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = server.rss_mb()
            if rss is not None:
                samples.append(rss)
            time.sleep(0.02)

    before = server.rss_mb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    started = time.perf_counter()
    conn.request("GET", f"/api/v1/tenants/{tenant_id}/exports/users.csv",
                 headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    first = None
    size, rows = 0, 0
    while chunk := response.read(65536):
        if first is None:
            first = time.perf_counter() - started
        size += len(chunk)
        rows += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    conn.close()
    stop.set()
    sampler.join()
    return {"status": response.status, "seconds": round(seconds, 2),
            "first_byte_ms": round((first or 0) * 1000, 1), "rows": rows - 1,
            "mb": round(size / 1e6, 1), "rss_before_mb": before,
            "rss_peak_mb": max(samples) if samples else None,
            "rss_after_mb": server.rss_mb()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, nargs="+", default=[100_000])
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--requests", type=int, default=200, help="timed requests per page kind")
    p.add_argument("--kinds", nargs="+", metavar="KIND",
                   help="measure only these page kinds (e.g. 'search e-mail domain')")
    p.add_argument("--no-export", action="store_true", help="skip the CSV export")
    p.add_argument("--group-members", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1,
                   help="gunicorn threads (1: sync worker, the default here)")
    p.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-name", default="connector_admin_bench")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    runs = []
    for users in args.users:
        for kind in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
            label = f"admin-{kind}-{users}"
            log(f"== {label}: fresh database, seeding {users:,} users")
            url = fresh_database(kind, users, args.pg_base, args.pg_name)
            seed = seed_connector(url, users, args.group_members, args.batch)
            tenant_id, token = vary_and_admin(url, seed["group_id"])
            server = start_connector(url, label, threads=args.threads)
            try:
                log(f"users pages, {args.requests} requests per kind, one client")
                pages = measure_pages(server, tenant_id, token, users, args.requests,
                                      args.kinds)
                export = None
                if not args.no_export:
                    log("CSV export of every user")
                    export = measure_export(server, tenant_id, token)
                    log(f"  {export['rows']:,} rows, {export['mb']} MB in "
                        f"{export['seconds']} s; worker RSS {export['rss_before_mb']} → "
                        f"peak {export['rss_peak_mb']} MB")
            finally:
                server.stop()
            runs.append({"db": kind, "users": users, "pages": pages, "export": export})
    report = render(info, runs, args)
    print("\n" + report)
    (RESULTS / "admin_bench.md").write_text(report + "\n")
    (RESULTS / "admin_bench.json").write_text(json.dumps({"machine": info, "runs": runs},
                                                         indent=2) + "\n")
    log("wrote bench/results/admin_bench.md and .json")


def render(info: dict[str, Any], runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [f"# Admin bench, {info['date']} (commit {info['git']})", "",
           f"{info['nproc']} × {info['cpu']}, {info['mem']} RAM, Python {info['python']}, "
           f"SQLite {info['sqlite']}, PostgreSQL {info['postgresql']}. One gunicorn worker "
           f"({'sync' if args.threads == 1 else f'gthread ×{args.threads}'}), one client, "
           f"{args.requests} timed requests per kind, 50 users per page.", ""]
    for run in runs:
        out += [f"## {run['db']}, {run['users']:,} users", "",
                "| users page | p50 ms | p90 ms | p99 ms | max ms | target p99 ≤ 50 ms "
                "| median total |",
                "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
        for kind, r in run["pages"].items():
            ok = "✓" if r["p99_ms"] <= TARGET_PAGE_P99_MS else "✗"
            errors = f" ({r['errors']} errors)" if r.get("errors") else ""
            out.append(f"| {kind}{errors} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | "
                       f"{r['max_ms']} | {ok} | {r.get('median_total', '')} |")
        e = run["export"]
        if e is None:
            out.append("")
            continue
        ok = "✓" if e["seconds"] <= TARGET_EXPORT_S and e["status"] == 200 else "✗"
        out += ["", f"CSV export: {e['rows']:,} rows, {e['mb']} MB in **{e['seconds']} s** "
                f"(first byte {e['first_byte_ms']} ms; target ≤ 5 s {ok}); worker RSS "
                f"{e['rss_before_mb']} MB before, {e['rss_peak_mb']} MB peak, "
                f"{e['rss_after_mb']} MB after.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
