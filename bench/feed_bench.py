#!/usr/bin/env python3
"""The event feed with many tenants: what a partner-wide page costs, and what its index
costs every write.

    .venv/bin/python bench/feed_bench.py --tenants 10000 --events-each 100
    .venv/bin/python bench/feed_bench.py --tenants 1000 10000 --events-each 100 --write-cost 300000

PostgreSQL only (on SQLite the primary key gives the feed's order). For each --tenants
size it makes a fresh database (--pg-name, dropped at the end), migrates it, adds the
tenants and --events-each events per tenant interleaved in time (server-side INSERT …
SELECT generate_series, one transaction per slice, progress on the terminal), runs
VACUUM ANALYZE, then reads pages through `connector.feed` as the API and the webhook
dispatcher do, --rounds times each: every tenant's page from the start of the log, from
its middle, at its end (an idle consumer's probe, nothing new), and one tenant's page
from its start. It prints best and median milliseconds and the plan of the partner-wide
page.

--write-cost N: also INSERTs N events into two copies of `events` (every index but the
feed's partner-wide one, and with it), alternated three times each, and reports the
average per event: what that index costs every event written.

docs/benchmarks.md holds the published figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inprocess_bench import recreate_database  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from connector import feed, migrate  # noqa: E402
from connector.config import DatabaseSettings  # noqa: E402
from connector.db import make_engine  # noqa: E402

SLICE = 200_000  # events per seeding transaction

EVENT_ROWS = """
INSERT INTO events (tenant_id, subject_type, subject_id, kind, new_value, effective_at,
                    recorded_at, source, actor, correlation_id)
SELECT 'feed-' || (g % CAST(:tenants AS bigint)), 'user', md5(g::text), 'user.created',
       json_build_object('userName', 'u' || g || '@example.com'),
       now(), now(), 'scim', 'bench', 'feed-bench'
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tenants", type=int, nargs="+", default=[10_000])
    p.add_argument("--events-each", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--limit", type=int, default=feed.DEFAULT_LIMIT)
    p.add_argument("--write-cost", type=int, default=0, metavar="N",
                   help="also time N-event INSERTs with and without the partner-wide index")
    p.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-name", default="feed_bench")
    args = p.parse_args()
    for tenants in args.tenants:
        recreate_database(args.pg_base, args.pg_name)
        try:
            engine = make_engine(DatabaseSettings(url=f"{args.pg_base}/{args.pg_name}"))
            migrate.upgrade(engine)
            seed(engine, tenants, args.events_each)
            measure(engine, tenants, args)
            if args.write_cost:
                write_cost(engine, args.write_cost)
            engine.dispose()
        finally:
            recreate_database(args.pg_base, args.pg_name, create=False)
    return 0


def seed(engine: Engine, tenants: int, each: int) -> None:
    total = tenants * each
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO tenants (id, name, created_at, status_source, scim_default_status, "
            "provisioning_paused, time_zone, entra_sync) SELECT 'feed-' || g, 'Tenant ' || g, "
            "now(), 'idp', 'active', false, 'UTC', false FROM generate_series(0, :n - 1) g"),
            {"n": tenants})
    for first in range(1, total + 1, SLICE):
        last = min(total, first + SLICE - 1)
        with engine.begin() as conn:
            conn.execute(text(EVENT_ROWS), {"tenants": tenants, "first": first, "last": last})
        print(f"\r[{time.perf_counter() - started:7.1f}s] seeding: {last:,} of {total:,} "
              f"events of {tenants:,} tenants", end="", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE events"))
        conn.execute(text("VACUUM ANALYZE tenants"))
    print(f"\r[{time.perf_counter() - started:7.1f}s] seeded {total:,} events of "
          f"{tenants:,} tenants, VACUUM ANALYZE done")


def measure(engine: Engine, tenants: int, args: argparse.Namespace) -> None:
    with Session(engine) as s:
        total = int(s.scalar(text("SELECT count(*) FROM events")) or 0)
        middle = s.execute(text("SELECT txid, id FROM events ORDER BY txid, id "
                                "OFFSET :o LIMIT 1"), {"o": total // 2}).one()
        end = feed.latest(s, None)
        s.rollback()
    cases = [
        ("every tenant's page, from the start", None, feed.START),
        ("every tenant's page, from the middle", None, feed.Position(middle[0], middle[1])),
        ("every tenant's probe at the end (nothing new)", None, end),
        ("one tenant's page, from the start", "feed-1", feed.START),
    ]
    print(f"\n{tenants:,} tenants, {total:,} events, pages of {args.limit}; "
          f"best and median of {args.rounds}")
    print("| read | rows | best ms | median ms |\n| --- | ---: | ---: | ---: |")
    query = feed.FeedQuery(after=feed.START, limit=args.limit)
    for name, tenant_id, after in cases:
        times, rows = [], 0
        with Session(engine) as s:
            for _ in range(args.rounds + 1):  # the first warms the cache and is dropped
                started = time.perf_counter()
                page = feed.read(s, tenant_id, dataclasses.replace(query, after=after))
                times.append((time.perf_counter() - started) * 1000)
                rows = len(page.data)
                s.rollback()
        times = times[1:]
        print(f"| {name} | {rows} | {min(times):.1f} | {statistics.median(times):.1f} |")
    statement = feed._statement(True, False, tuple(feed.PUBLIC_TYPES), False, False)
    compiled = statement.compile(dialect=engine.dialect)
    params = compiled.construct_params({"after_txid": middle[0], "after_id": middle[1],
                                        "limit": args.limit + 1})
    with engine.connect() as conn:
        plan = [row[0] for row in conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {compiled.string}", params)]
    print("\nPlan of every tenant's page from the middle (EXPLAIN ANALYZE, the horizon's "
          "subquery left out):")
    print("\n".join("    " + line for line in plan if "InitPlan" not in line
                    and not line.startswith(" " * 4)))


def write_cost(engine: Engine, n: int) -> None:
    """Average seconds per N-event INSERT into copies of `events` without and with the
    partner-wide feed index, alternated (without, with, with, without, without, with)."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_events_without, bench_events_with"))
        for name in ("bench_events_without", "bench_events_with"):
            conn.execute(text(f"CREATE TABLE {name} (LIKE events INCLUDING ALL)"))
        index = conn.execute(text(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'bench_events_without' "
            "AND indexdef LIKE '%(txid, id)'")).scalar()
        if index is None:
            raise SystemExit("no (txid, id) index on events: is the database migrated?")
        conn.execute(text(f'DROP INDEX "{index}"'))
    times: dict[str, list[float]] = {"without": [], "with": []}
    for kind in ("without", "with", "with", "without", "without", "with"):
        statement = EVENT_ROWS.replace("INSERT INTO events", f"INSERT INTO bench_events_{kind}")
        with engine.begin() as conn:
            started = time.perf_counter()
            conn.execute(text(statement), {"tenants": 1000, "first": 1, "last": n})
            times[kind].append(time.perf_counter() - started)
        print(f"\r  INSERT of {n:,} events {kind} the index: {times[kind][-1]:.2f} s   ",
              end="", flush=True)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bench_events_without, bench_events_with"))
    without, with_ = statistics.mean(times["without"]), statistics.mean(times["with"])
    print(f"\rINSERT of {n:,} events, average of 3: without the (txid, id) index "
          f"{without:.2f} s ({', '.join(f'{t:.2f}' for t in times['without'])}), with it "
          f"{with_:.2f} s ({', '.join(f'{t:.2f}' for t in times['with'])}): "
          f"{(with_ - without) / n * 1e6:+.2f} µs per event ({(with_ / without - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    sys.exit(main())
