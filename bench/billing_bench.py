#!/usr/bin/env python3
"""Month close at scale: one tenant of N users with M events, closed and re-closed.

    .venv/bin/python bench/billing_bench.py --users 1000000 --events 10000000 --db both
    .venv/bin/python bench/billing_bench.py --users 100000 --events 1000000 --db sqlite
    .venv/bin/python bench/billing_bench.py --users 1000000 --events 10000000 --db sqlite --reuse

For each database:

1. a fresh database (bench/results/billing-N.sqlite3, or PostgreSQL database --pg-name),
   migrated, with a tenant (policy active_with_module, a price list) and, with --small,
   a second tenant of that many users (ten events each);
2. seeds the big tenant's history straight into the tables, with the event shapes the
   directory service writes: every user created between December 2025 and October 2026,
   then status flips, module changes, guest flags, renames, frontline attributes and
   memberships of 1,000 groups (with modules) at random instants up to the end of
   November 2026, until M events. Events are inserted in time order within batches of
   100,000 users, as production interleaves them. (Seeding shows its progress; --reuse
   skips it when the database already holds the history.)
3. closes October 2026 in a fresh process (`billing.close.close_month`): a cold close,
   with no earlier close to start from, so it folds every user's whole history; then
   November, the steady state: it starts from the states October's close kept and reads
   November's events (and, from scratch, the users something late was learned about).
   Each is timed with the process's peak RSS;
4. recomputes November's hash from scratch (the whole log, no carried state) in another
   fresh process (`recompute_hash`) and checks it equals the carried close's;
5. closes October and November for the small tenant and times them.

Fleet mode (issue 19, point 4): many small tenants at one month boundary, PostgreSQL:

    .venv/bin/python bench/billing_bench.py --fleet-tenants 10000 --fleet-total-users 1000000 \
        --fleet-events 5
    .venv/bin/python bench/billing_bench.py --fleet-tenants 1000 --fleet-users 100 \
        --fleet-compare 2

seeds the tenants by COPY, then times October's pass (cold), November's through the
scheduler's run_due, a pass with nothing due and November through `connector billing
close-due`: tenants/s, per-tenant p50/p99/max and the slowest tenant, peak RSS, CPU of
the bench and of its PostgreSQL backends. Results: bench/results/billing_fleet[-TAG].*;
docs/benchmarks.md ("Billing: a fleet at the month boundary").

Targets (issue 6): the big close ≤ 30 s on SQLite and on PostgreSQL (about 330,000
events/s), memory bounded; a tenant of 10,000 users closes in ≤ 1 s; re-running a close
gives the same hash. events/s is the tenant's whole log over the close's time.
Results go to bench/results/billing_bench.{md,json};
docs/benchmarks.md ("Billing") holds the published ones.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scim_bench import RESULTS, ROOT, fresh_database, log, machine  # noqa: E402

TARGET_BIG_S = 30.0
TARGET_SMALL_S = 1.0
MONTHS = ("2026-10", "2026-11")
HISTORY_START = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
CREATED_BY = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
HISTORY_END = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
MODULES = ("Hybrid", "Engage", "Unify")
GROUPS = 1000
BATCH_USERS = 100_000
PRICES = [{"unit": m, "plan": p, "price": price} for m in MODULES
          for p, price in (("standard", "6.00"), ("frontline", "2.50"))]


# -- seeding ---------------------------------------------------------------------------


def _stamp(kind: str, value: dt.datetime) -> Any:
    # SQLite: the text SQLAlchemy's DateTime writes (UTC, naive); PostgreSQL: the value.
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if kind == "sqlite" else value


def _random_instant(rng: random.Random, start: dt.datetime, end: dt.datetime) -> dt.datetime:
    span = int((end - start).total_seconds() * 1_000_000)
    return start + dt.timedelta(microseconds=rng.randrange(span))


def user_history(rng: random.Random, uid: str, name: str, events: int, groups: list[str],
                 span: tuple[dt.datetime, dt.datetime, dt.datetime] | None = None
                 ) -> list[tuple[dt.datetime, str, str, Any, Any, str | None]]:
    """(instant, subject type, kind, old, new, object id) of one user, in time order;
    `span`: (first creation, last creation, last event), by default the big tenant's."""
    start, created_by, end = span or (HISTORY_START, CREATED_BY, HISTORY_END)
    created = _random_instant(rng, start, created_by)
    modules = sorted(rng.sample(MODULES, rng.randrange(0, 3)))
    out: list[tuple[dt.datetime, str, str, Any, Any, str | None]] = [
        (created, "user", "user.created", None,
         {"userName": name, "active": True, "idp_active": True, "in_deleted_list": False,
          "guest": rng.random() < 0.1, "external_company_guest": False, "admin": False,
          "modules": modules}, None)]
    active, member_of = True, set()
    for at in sorted(_random_instant(rng, created, end) for _ in range(events - 1)):
        roll = rng.random()
        if roll < 0.3:
            out.append((at, "user", "user.status", active, not active, None))
            active = not active
        elif roll < 0.5:
            new = sorted(rng.sample(MODULES, rng.randrange(0, 3)))
            out.append((at, "user", "user.modules", modules, new, None))
            modules = new
        elif roll < 0.75:
            group = rng.choice(groups)
            if group in member_of:
                out.append((at, group, "group.member_removed", uid, None, uid))
                member_of.discard(group)
            else:
                out.append((at, group, "group.member_added", None, uid, uid))
                member_of.add(group)
        elif roll < 0.85:
            out.append((at, "user", "user.guest", False, rng.random() < 0.5, None))
        elif roll < 0.95:
            out.append((at, "user", "user.profile", {"userName": name},
                        {"userName": name}, None))
        else:
            out.append((at, "user", "user.frontline", {},
                        {"desklessPercent": rng.choice((20, 50, 80)),
                         "frontlineRole": "backstage"}, None))
    return out


class Writer:
    """Bulk rows straight into the tables: COPY on PostgreSQL, executemany on SQLite."""

    def __init__(self, url: str):
        self.kind = "sqlite" if url.startswith("sqlite") else "postgresql"
        if self.kind == "sqlite":
            import sqlite3

            self.conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"))
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=OFF")
        else:
            import psycopg

            self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))

    def rows(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.kind == "sqlite":
            marks = ", ".join("?" for _ in columns)
            self.conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                                  rows)
            return
        with self.conn.cursor() as cur, cur.copy(
                f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


EVENT_COLUMNS = ["tenant_id", "subject_type", "subject_id", "kind", "old_value", "new_value",
                 "effective_at", "recorded_at", "source", "actor", "correlation_id",
                 "object_id"]
USER_COLUMNS = ["tenant_id", "id", "user_name", "user_name_norm", "active",
                "in_deleted_list", "guest", "external_company_guest", "admin", "origin",
                "created_at", "modified_at", "version", "data"]


def seed(url: str, tenant_id: str, users: int, events: int, seed_value: int,
         label: str) -> None:
    rng = random.Random(seed_value)
    w = Writer(url)
    now = HISTORY_START
    groups = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(GROUPS)]
    group_events = [(HISTORY_START, g, "group.created", None,
                     {"displayName": f"group {i}", "modules": [MODULES[i % 3]]}, None)
                    for i, g in enumerate(groups)]
    w.rows("groups", ["tenant_id", "id", "display_name", "display_name_norm", "origin",
                      "created_at", "modified_at", "version", "data"],
           [(tenant_id, g, f"group {i}", f"group {i}", "scim", _stamp(w.kind, now),
             _stamp(w.kind, now), 1, "{}") for i, g in enumerate(groups)])
    per_user = max(1, events // users)
    extra = events - per_user * users
    started = time.monotonic()
    written = 0
    for batch_start in range(0, users, BATCH_USERS):
        rows, user_rows = [], []
        for i in range(batch_start, min(users, batch_start + BATCH_USERS)):
            uid = str(uuid.UUID(int=rng.getrandbits(128)))
            name = f"user{i}@bench.example"
            n = per_user + (1 if i < extra else 0)
            rows += [(at, "user" if subj == "user" else "group",
                      uid if subj == "user" else subj, kind, old, new, obj)
                     for at, subj, kind, old, new, obj in user_history(rng, uid, name, n,
                                                                       groups)]
            user_rows.append((tenant_id, uid, name, name, True, False, False, False, False,
                              "scim", _stamp(w.kind, now), _stamp(w.kind, now), 1, "{}"))
        if batch_start == 0:
            rows += [(at, "group", gid, kind, old, new, obj)
                     for at, gid, kind, old, new, obj in group_events]
        rows.sort(key=lambda r: r[0])
        w.rows("users", USER_COLUMNS, user_rows)
        w.rows("events", EVENT_COLUMNS, [
            (tenant_id, subject_type, subject, kind, json.dumps(old), json.dumps(new),
             _stamp(w.kind, at), _stamp(w.kind, at), "scim", "bench", "seed", obj)
            for at, subject_type, subject, kind, old, new, obj in rows])
        w.commit()
        written += len(rows)
        rate = written / (time.monotonic() - started)
        log(f"{label}: seeded {min(users, batch_start + BATCH_USERS):,} of {users:,} users, "
            f"{written:,} events ({rate:,.0f} events/s)")
    w.close()


def prepare(url: str, users: int, events: int, small: int, reuse: bool) -> dict[str, str]:
    from sqlalchemy import select

    from billing.profiles import update_profile
    from connector import db, migrate, tenants
    from connector.config import DatabaseSettings
    from connector.events import WriteContext
    from connector.models import Tenant
    from connector.status import Source

    engine = db.make_engine(DatabaseSettings(url=url))
    migrate.upgrade(engine)
    maker = db.make_sessionmaker(engine, writes=True)
    with maker() as s:
        found = {t.name: t.id for t in s.scalars(select(Tenant))}
    if reuse and "big" in found:
        log(f"reusing the seeded history in {engine.url.render_as_string(hide_password=True)}")
        return found
    made = {}
    for name, n, e in (("big", users, events), ("small", small, small * 10)):
        if not n:
            continue
        with maker() as s:
            tenant, _ = tenants.create_tenant(s, name, HISTORY_START - dt.timedelta(days=1))
            ctx = WriteContext(tenant.id, Source.ADMIN, "bench", "bench", HISTORY_START)
            update_profile(s, ctx, tenant, {"prices": PRICES, "company_name": name})
            s.commit()
            made[name] = tenant.id
        seed(url, made[name], n, e, 7 if name == "big" else 8, name)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            from sqlalchemy import text

            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            from sqlalchemy import text

            conn.execute(text("ANALYZE"))
    engine.dispose()
    return made


# -- measuring (each in a fresh process) -----------------------------------------------


CHILD = r"""
import datetime as dt, json, resource, sys, time
sys.path.insert(0, {root!r})
from billing.calendar import Month
from billing.close import close_month
from billing.verify import recompute_hash
from connector import db
from connector.config import BillingSettings, DatabaseSettings
from connector.models import BillingClose
from sqlalchemy import select
engine = db.make_engine(DatabaseSettings(url={url!r}))
maker = db.make_sessionmaker(engine, writes=True)
def hwm():  # VmHWM: this process's peak RSS (ru_maxrss would count the parent's, pre-exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = hwm()
started = time.perf_counter()
if {mode!r} == "close":
    out = close_month(maker, {tenant!r}, Month.parse({month!r}), BillingSettings(),
                      dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    result = {{"hash": out.close.content_hash, "users": out.close.users_counted,
               "billable": out.close.users_billable, "created": out.created,
               "total": out.close.invoice.get("total")}}
else:
    with maker() as s:
        close = s.scalar(select(BillingClose).where(BillingClose.tenant_id == {tenant!r},
                                                    BillingClose.month == {month!r},
                                                    BillingClose.state == "closed"))
        result = {{"hash": recompute_hash(s, close), "stored": close.content_hash}}
result["seconds"] = time.perf_counter() - started
result["rss_start_mb"] = before / 1024
result["rss_peak_mb"] = hwm() / 1024
# The largest peak RSS of the close's worker processes (reaped by now; 0: none ran).
result["worker_rss_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(result))
"""


def measure(url: str, tenant: str, mode: str, month: str = MONTHS[-1]) -> dict[str, Any]:
    code = CHILD.format(root=str(ROOT), url=url, tenant=tenant, month=month, mode=mode)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def count_events(url: str, tenant: str) -> int:
    from sqlalchemy import func, select

    from connector import db
    from connector.config import DatabaseSettings
    from connector.models import Event

    engine = db.make_engine(DatabaseSettings(url=url))
    with db.make_sessionmaker(engine)() as s:
        n = s.scalar(select(func.count()).select_from(Event).where(Event.tenant_id == tenant))
    engine.dispose()
    return int(n or 0)


def run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    if args.reuse and kind == "sqlite":
        url = f"sqlite:///{RESULTS / f'billing-{args.users}.sqlite3'}"
    elif args.reuse:
        url = f"{args.pg_base}/{args.pg_name}"
    else:
        url = fresh_database(kind, args.users, args.pg_base, args.pg_name)
        if kind == "sqlite":
            path = RESULTS / f"billing-{args.users}.sqlite3"
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            url = f"sqlite:///{path}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tenants = prepare(url, args.users, args.events, args.small, args.reuse)
    seeded_s = time.monotonic() - started
    events = count_events(url, tenants["big"])
    if args.seed_only:
        log(f"{kind}: seeded {events:,} events in {seeded_s:.0f} s; measure with --reuse")
        return {}
    if args.reuse and args.steady_only:
        _drop_closes(url, MONTHS[1])
        big = measure(url, tenants["big"], "close", MONTHS[1])
        log(f"{kind}: {MONTHS[1]} (carried from {MONTHS[0]}) closed in {big['seconds']:.1f} s, "
            f"peak RSS {big['rss_peak_mb']:.0f} MB")
        return {}
    if args.reuse:
        _drop_closes(url)
    log(f"{kind}: {args.users:,} users / {events:,} events")
    cold = measure(url, tenants["big"], "close", MONTHS[0])
    log(f"{kind}: {MONTHS[0]} (cold, whole history) closed in {cold['seconds']:.1f} s "
        f"({events / cold['seconds']:,.0f} events/s), peak RSS {cold['rss_peak_mb']:.0f} MB, "
        f"workers' {cold['worker_rss_peak_mb']:.0f} MB")
    big = measure(url, tenants["big"], "close", MONTHS[1])
    log(f"{kind}: {MONTHS[1]} (carried from {MONTHS[0]}) closed in {big['seconds']:.1f} s "
        f"({events / big['seconds']:,.0f} events/s), peak RSS {big['rss_peak_mb']:.0f} MB, "
        f"workers' {big['worker_rss_peak_mb']:.0f} MB")
    again = measure(url, tenants["big"], "recompute", MONTHS[1])
    log(f"{kind}: {MONTHS[1]} recomputed from scratch in {again['seconds']:.1f} s, same hash: "
        f"{again['hash'] == again['stored'] == big['hash']}")
    small = None
    if "small" in tenants:
        measure(url, tenants["small"], "close", MONTHS[0])
        small = measure(url, tenants["small"], "close", MONTHS[1])
        log(f"{kind}: small tenant ({args.small:,} users) closed {MONTHS[1]} in "
            f"{small['seconds']:.2f} s")
    return {"db": kind, "users": args.users, "events": events, "seed_s": seeded_s,
            "cold": cold, "close": big, "recompute": again, "small": small,
            "small_users": args.small}


def _drop_closes(url: str, month: str | None = None) -> None:
    from sqlalchemy import delete

    from connector import db
    from connector.config import DatabaseSettings
    from connector.models import BillingClose

    engine = db.make_engine(DatabaseSettings(url=url))
    with db.make_sessionmaker(engine, writes=True)() as s:
        s.execute(delete(BillingClose).where(BillingClose.month == month) if month
                  else delete(BillingClose))
        s.commit()
    engine.dispose()


def render(info: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    lines = [f"Billing close bench, {info['date']}, commit {info['commit']}, "
             f"{info['machine']['nproc']} cores ({info['machine']['cpu']}), "
             f"SQLite {info['machine'].get('sqlite')}, "
             f"PostgreSQL {info['machine'].get('postgresql')}",
             "",
             "| database | users | events | cold close {0} (s) | close {1} from {0} (s) | "
             "events/s | peak RSS (MB) | workers' peak RSS (MB) | {1} from scratch (s) | "
             "same hash | small tenant close (s) |".format(*MONTHS),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in runs:
        cold, c, a, s = r["cold"], r["close"], r["recompute"], r["small"]
        lines.append(
            f"| {r['db']} | {r['users']:,} | {r['events']:,} | {cold['seconds']:.1f} | "
            f"{c['seconds']:.1f} | {r['events'] / c['seconds']:,.0f} | "
            f"{max(c['rss_peak_mb'], cold['rss_peak_mb']):.0f} | "
            f"{max(c.get('worker_rss_peak_mb', 0), cold.get('worker_rss_peak_mb', 0)):.0f} | "
            f"{a['seconds']:.1f} | {a['hash'] == a['stored'] == c['hash']} | "
            + (f"{s['seconds']:.2f} ({r['small_users']:,} users)" if s else "-") + " |")
    lines += ["", f"Targets: big close ≤ {TARGET_BIG_S:.0f} s, small (10,000 users) ≤ "
              f"{TARGET_SMALL_S:.0f} s, same hash on re-run."]
    return "\n".join(lines) + "\n"


# -- fleet: many small tenants at one month boundary (issue 19, point 4) ------------------

FLEET_CREATED = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)  # first month: October, cold
FLEET_SPAN = (FLEET_CREATED, dt.datetime(2026, 11, 15, tzinfo=dt.UTC), HISTORY_END)
FLEET_GROUPS = 10
FLEET_BATCH_USERS = 50_000
FLEET_OCTOBER_NOW = dt.datetime(2026, 11, 1, 1, 0, 1, tzinfo=dt.UTC)  # window + 1 s
FLEET_NOVEMBER_NOW = dt.datetime(2026, 12, 1, 1, 0, 1, tzinfo=dt.UTC)
TARGET_FLEET_S = 120.0


def seed_fleet(url: str, tenants: int, users: int, events: int) -> list[str]:
    """`tenants` tenants made as `connector tenant create` makes them (billing info and
    prices set), each with `users` users of about `events` events, created in October
    2026 and changed up to the end of November; the events of FLEET_BATCH_USERS users
    of consecutive tenants at a time are written by COPY in time order, interleaved
    across tenants as production writes them."""
    from billing.profiles import update_profile
    from connector import db
    from connector import tenants as tenant_admin
    from connector.config import DatabaseSettings
    from connector.events import WriteContext
    from connector.status import Source

    engine = db.make_engine(DatabaseSettings(url=url))
    migrate_upgrade(engine)
    maker = db.make_sessionmaker(engine, writes=True)
    ids: list[str] = []
    started = time.monotonic()
    made = FLEET_CREATED  # billing starts with the month a tenant was made in: October
    for first in range(0, tenants, 500):
        with maker() as s:
            for i in range(first, min(tenants, first + 500)):
                tenant, _ = tenant_admin.create_tenant(s, f"fleet {i}", made)
                ctx = WriteContext(tenant.id, Source.ADMIN, "bench", "bench", made)
                update_profile(s, ctx, tenant, {"prices": PRICES, "company_name": f"fleet {i}"})
                ids.append(tenant.id)
            s.commit()
    engine.dispose()
    log(f"fleet: made {tenants:,} tenants in {time.monotonic() - started:.0f} s")
    rng = random.Random(19)
    w = Writer(url)
    stamp = _stamp(w.kind, FLEET_CREATED)
    per_batch = max(1, FLEET_BATCH_USERS // max(users, 1))
    written = 0
    for first in range(0, tenants, per_batch):
        group_rows, user_rows, rows = [], [], []
        for tenant_id in ids[first:first + per_batch]:
            groups = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(FLEET_GROUPS)]
            for i, g in enumerate(groups):
                group_rows.append((tenant_id, g, f"group {i}", f"group {i}", "scim", stamp,
                                   stamp, 1, "{}"))
                rows.append((FLEET_CREATED, tenant_id, "group", g, "group.created", None,
                             {"displayName": f"group {i}", "modules": [MODULES[i % 3]]},
                             None))
            for i in range(users):
                uid = str(uuid.UUID(int=rng.getrandbits(128)))
                name = f"user{i}@fleet.example"
                history = user_history(rng, uid, name, events, groups, FLEET_SPAN)
                rows += [(at, tenant_id, "user" if subj == "user" else "group",
                          uid if subj == "user" else subj, kind, old, new, obj)
                         for at, subj, kind, old, new, obj in history]
                # Made when it was created, as the directory service makes users.
                made_at = _stamp(w.kind, min(at for at, *_ in history))
                user_rows.append((tenant_id, uid, name, name, True, False, False, False,
                                  False, "scim", made_at, made_at, 1, "{}"))
        rows.sort(key=lambda r: r[0])
        w.rows("groups", ["tenant_id", "id", "display_name", "display_name_norm", "origin",
                          "created_at", "modified_at", "version", "data"], group_rows)
        w.rows("users", USER_COLUMNS, user_rows)
        w.rows("events", EVENT_COLUMNS, [
            (tenant_id, subject_type, subject, kind, json.dumps(old), json.dumps(new),
             _stamp(w.kind, at), _stamp(w.kind, at), "scim", "bench", "seed", obj)
            for at, tenant_id, subject_type, subject, kind, old, new, obj in rows])
        w.commit()
        written += len(rows)
        done = min(tenants, first + per_batch)
        log(f"fleet: seeded {done:,} of {tenants:,} tenants ({done * users:,} users), "
            f"{written:,} events ({written / (time.monotonic() - started):,.0f} events/s)")
    w.close()
    return ids


def migrate_upgrade(engine: Any) -> None:
    from connector import migrate

    migrate.upgrade(engine)


def analyze(url: str) -> None:
    from sqlalchemy import text

    from connector import db
    from connector.config import DatabaseSettings

    engine = db.make_engine(DatabaseSettings(url=url))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    engine.dispose()


FLEET_CHILD = r"""
import datetime as dt, json, sys, time
sys.path.insert(0, {root!r})
from billing import catch_up, scheduler
from connector import db
from connector.config import BillingSettings, DatabaseSettings
settings = BillingSettings(close_parallel_tenants={parallel!r})
engine = db.make_engine(DatabaseSettings(url={url!r}, pool_size={pool!r}))
maker = db.make_sessionmaker(engine, writes=True)
now = dt.datetime.fromisoformat({now!r})
ids = json.load(open({shard!r})) if {shard!r} else None
seen = []
real = scheduler.close_due
def spy(*args, **kwargs):  # the pass's result, which run_due only logs
    seen.append(real(*args, **kwargs))
    return seen[-1]
scheduler.close_due = spy
started = time.perf_counter()
if ids is None:
    scheduler.run_due(maker, settings, clock=lambda: now)
else:
    seen.append(catch_up.close_due(maker, settings, now, tenant_ids=ids))
seconds = time.perf_counter() - started
r = seen[0]
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
print(json.dumps({{"seconds": seconds, "closed": len(r.closed),
                   "created": sum(o.created for _, _, o in r.closed),
                   "waiting": len(r.waiting), "failed": r.failed[:5],
                   "tenants": r.seconds, "workers": catch_up.parallel_tenants(settings, maker),
                   "rss_peak_mb": hwm()}}))
"""


class PgCpu:
    """CPU time of the PostgreSQL backends connected to one database while a pass runs:
    /proc sampled every 0.1 s, each backend's last reading kept (a backend that lives
    less than that is missed; other databases' backends, other users' on a shared
    machine, are not counted)."""

    def __init__(self, database: str):
        self.tag = f" {database} ".encode()
        self.seen: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PgCpu:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while True:
            self._sample()
            if self.stop.wait(0.1):
                self._sample()
                return

    def _sample(self) -> None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if not (proc / "cmdline").read_bytes().startswith(b"postgres:"):
                    continue
                if self.tag not in (proc / "cmdline").read_bytes():
                    continue
                text = (proc / "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()
            self.seen[int(proc.name)] = int(fields[11]) + int(fields[12])  # utime stime

    @property
    def seconds(self) -> float:
        return sum(self.seen.values()) / os.sysconf("SC_CLK_TCK")


def fleet_pass(url: str, now: dt.datetime, parallel: int, shards: int = 1,
               ids: list[str] | None = None) -> dict[str, Any]:
    """One close pass in fresh processes: the scheduler's `run_due` (shards=1), or
    `shards` processes each closing its share of the tenants serially (the processes
    alternative to threads). Wall time, CPU of the bench processes and of PostgreSQL."""
    files: list[str] = []
    if shards > 1:
        assert ids is not None
        for k in range(shards):
            path = RESULTS / f"fleet-shard-{k}.json"
            path.write_text(json.dumps(ids[k::shards]))
            files.append(str(path))
    codes = [FLEET_CHILD.format(root=str(ROOT), url=url, parallel=parallel, now=now.isoformat(),
                                pool=max(5, parallel + 1), shard=f) for f in (files or [""])]
    cpu_self = os.times()
    started = time.perf_counter()
    with PgCpu(url.rsplit("/", 1)[1]) as pg:
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for code in codes]
        outs = [p.communicate() for p in procs]
        wall = time.perf_counter() - started
    after = os.times()
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"close pass failed:\n{err[-3000:]}")
    parts = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    tenants = sorted((t for part in parts for t in part["tenants"]), key=lambda t: t[1])
    times = [t[1] for t in tenants]

    def pct(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))] if times else 0.0

    return {"seconds": wall, "closed": sum(p["closed"] for p in parts),
            "created": sum(p["created"] for p in parts),
            "waiting": sum(p["waiting"] for p in parts),
            "failed": [f for p in parts for f in p["failed"]],
            "tenants_per_s": len(tenants) / wall if wall else 0.0,
            "p50_s": pct(0.5), "p99_s": pct(0.99), "max_s": times[-1] if times else 0.0,
            "slowest": tenants[-1][0] if tenants else "",
            "rss_peak_mb": max(p["rss_peak_mb"] for p in parts),
            "workers": parts[0]["workers"], "processes": len(parts),
            "cpu_bench_s": (after.children_user + after.children_system
                            - cpu_self.children_user - cpu_self.children_system),
            "cpu_postgres_s": pg.seconds}


def cli_pass(url: str, tmp: Path) -> dict[str, Any]:
    """`connector billing close-due --json` in a new interpreter (the wall clock decides
    what is due: today, November 2026 and any later month)."""
    env = {**os.environ, "CONNECTOR_DATABASE__URL": url,
           "CONNECTOR_CONFIG": str(tmp / "none.toml")}
    before = os.times()
    started = time.perf_counter()
    with PgCpu(url.rsplit("/", 1)[1]) as pg:
        done = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m",
                               "connector.cli", "billing", "close-due", "--json"], env=env,
                              cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
    after = os.times()
    if done.returncode != 0:
        raise SystemExit(f"close-due failed ({done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout)
    tenants = len({c["tenantId"] for c in out["closed"]})
    return {"seconds": wall, "closed": len(out["closed"]),
            "created": sum(c["created"] for c in out["closed"]),
            "waiting": len(out["waiting"]), "failed": out["failed"][:5],
            "tenants_per_s": tenants / wall if wall else 0.0,
            "cpu_bench_s": (after.children_user + after.children_system
                            - before.children_user - before.children_system),
            "cpu_postgres_s": pg.seconds,
            "rss_peak_mb": int(done.stderr.strip().splitlines()[-1]) / 1024}


def month_hashes(url: str, month: str) -> dict[str, str]:
    from sqlalchemy import select

    from connector import db
    from connector.config import DatabaseSettings
    from connector.models import BillingClose

    engine = db.make_engine(DatabaseSettings(url=url))
    with db.make_sessionmaker(engine)() as s:
        got = {t: h for t, h in s.execute(select(BillingClose.tenant_id,
                                                 BillingClose.content_hash).where(
            BillingClose.month == month, BillingClose.state == "closed"))}
    engine.dispose()
    return got


def run_fleet(args: argparse.Namespace) -> dict[str, Any]:
    n = args.fleet_tenants
    users = args.fleet_users or max(1, args.fleet_total_users // n)
    kind = args.db if args.db != "both" else "postgresql"
    if kind == "sqlite":
        path = RESULTS / f"fleet-{n}.sqlite3"
        url = f"sqlite:///{path}"
    else:
        url = f"{args.pg_base}/{args.pg_name}_fleet"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        if kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        else:
            fresh_database(kind, 0, args.pg_base, f"{args.pg_name}_fleet")
        started = time.monotonic()
        seed_fleet(url, n, users, args.fleet_events)
        analyze(url)
        seeded_s = time.monotonic() - started
    else:  # keep October's closes: time November again
        seeded_s = 0.0
        _drop_closes(url, "2026-11")
    ids = _fleet_ids(url)
    log(f"fleet {kind}: {n:,} tenants × {users:,} users × {args.fleet_events} events "
        f"(seeded in {seeded_s:.0f} s)")
    out: dict[str, Any] = {"db": kind, "tenants": n, "users_per_tenant": users,
                           "events_per_user": args.fleet_events, "seed_s": seeded_s,
                           "passes": {}}
    if not args.reuse:
        october = fleet_pass(url, FLEET_OCTOBER_NOW, args.fleet_parallel)
        _show("2026-10, cold (scheduler)", october)
        out["passes"]["october_cold_scheduler"] = october
        analyze(url)
    runs: list[tuple[str, int, int]] = [("scheduler", args.fleet_parallel, 1)]
    if args.fleet_compare and kind == "postgresql":
        # One tenant at a time, and K shards closing their share one tenant at a time
        # side by side (what the pass's own processes do, by hand).
        runs += [("serial", 1, 1), (f"shards-{args.fleet_compare}", 1, args.fleet_compare)]
    reference: dict[str, str] | None = None
    for name, parallel, shards in runs:
        _drop_closes(url, "2026-11")
        got = fleet_pass(url, FLEET_NOVEMBER_NOW, parallel, shards, ids)
        _show(f"2026-11 ({name}, {shards} process(es))", got)
        hashes = month_hashes(url, "2026-11")
        got["same_hashes"] = reference is None or hashes == reference
        reference = reference or hashes
        out["passes"][f"november_{name}"] = got
    idle = fleet_pass(url, FLEET_NOVEMBER_NOW, args.fleet_parallel)
    _show("nothing due (scheduler)", idle)
    out["passes"]["nothing_due_scheduler"] = idle
    if not args.fleet_no_cli:
        _drop_closes(url, "2026-11")
        got = cli_pass(url, RESULTS)
        hashes = month_hashes(url, "2026-11")
        got["same_hashes"] = hashes == reference
        _show("2026-11 (close-due CLI)", got)
        out["passes"]["november_cli"] = got
    return out


def _fleet_ids(url: str) -> list[str]:
    from sqlalchemy import select

    from connector import db
    from connector.config import DatabaseSettings
    from connector.models import Tenant

    engine = db.make_engine(DatabaseSettings(url=url))
    with db.make_sessionmaker(engine)() as s:
        ids = list(s.scalars(select(Tenant.id).order_by(Tenant.created_at, Tenant.id)))
    engine.dispose()
    return ids


def _show(what: str, r: dict[str, Any]) -> None:
    extra = (f", p50 {r['p50_s'] * 1000:.0f} ms, p99 {r['p99_s'] * 1000:.0f} ms, max "
             f"{r['max_s'] * 1000:.0f} ms (tenant {r['slowest']}), {r['workers']} in "
             f"parallel × {r['processes']} process(es)" if "p50_s" in r else "")
    log(f"fleet {what}: {r['closed']:,} months closed ({r['created']:,} created, "
        f"{r['waiting']} waiting, {len(r['failed'])} failed) in {r['seconds']:.1f} s, "
        f"{r['tenants_per_s']:,.1f} tenants/s{extra}; peak RSS {r['rss_peak_mb']:.0f} MB; "
        f"CPU bench {r['cpu_bench_s']:.1f} s, its PostgreSQL backends {r['cpu_postgres_s']:.1f} s"
        + (f"; same hashes: {r['same_hashes']}" if "same_hashes" in r else ""))


def render_fleet(info: dict[str, Any], r: dict[str, Any]) -> str:
    lines = [f"Fleet close bench, {info['date']}, commit {info['commit']}, "
             f"{info['machine']['nproc']} cores ({info['machine']['cpu']}), "
             f"{r['db']} {info['machine'].get(r['db'])}: {r['tenants']:,} tenants × "
             f"{r['users_per_tenant']:,} users × {r['events_per_user']} events per user",
             "", "| pass | months closed | s | tenants/s | p50 (ms) | p99 (ms) | max (ms) | "
             "slowest tenant | peak RSS (MB) | CPU bench (s) | CPU its PostgreSQL backends (s) | "
             "same hashes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for name, p in r["passes"].items():
        ms = (f"{p['p50_s'] * 1000:.0f} | {p['p99_s'] * 1000:.0f} | {p['max_s'] * 1000:.0f} | "
              f"{p['slowest'][:8]}" if "p50_s" in p else "- | - | - | -")
        lines.append(f"| {name} | {p['closed']:,} | {p['seconds']:.1f} | "
                     f"{p['tenants_per_s']:,.1f} | {ms} | {p['rss_peak_mb']:.0f} | "
                     f"{p['cpu_bench_s']:.1f} | {p['cpu_postgres_s']:.1f} | "
                     f"{p.get('same_hashes', '-')} |")
    lines += ["", f"Target: every tenant's month closed ≤ {TARGET_FLEET_S:.0f} s after the "
              "collection window (the November passes)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--small", type=int, default=10_000,
                   help="users of a second, small tenant closed too (0: none)")
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--seed-only", action="store_true",
                   help="seed the databases and stop (measure later with --reuse)")
    p.add_argument("--steady-only", action="store_true",
                   help="with --reuse: keep October's close, close November again, nothing "
                        "else (a quick check of the monthly close)")
    p.add_argument("--reuse", action="store_true",
                   help="keep a database seeded by an earlier run (drops its closes; in "
                        "fleet mode only November's, and October is not closed again)")
    p.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-name", default="connector_billing_bench")
    p.add_argument("--tag", default="")
    fleet = p.add_argument_group("fleet mode: many tenants at one month boundary")
    fleet.add_argument("--fleet-tenants", type=int, default=0,
                       help="seed this many tenants and time the close passes (PostgreSQL "
                            "unless --db sqlite)")
    fleet.add_argument("--fleet-users", type=int, default=0, help="users per tenant")
    fleet.add_argument("--fleet-total-users", type=int, default=1_000_000,
                       help="users of all tenants together (without --fleet-users)")
    fleet.add_argument("--fleet-events", type=int, default=10, help="events per user")
    fleet.add_argument("--fleet-parallel", type=int, default=0,
                       help="billing.close_parallel_tenants of the passes (0: its default)")
    fleet.add_argument("--fleet-compare", type=int, default=0, metavar="K",
                       help="also time November serially and in K processes each closing "
                            "a K-th of the tenants serially")
    fleet.add_argument("--fleet-no-cli", action="store_true",
                       help="skip the `connector billing close-due` pass")
    args = p.parse_args(argv)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()
    info = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
            "machine": machine()}
    if args.fleet_tenants:
        result = run_fleet(args)
        text = render_fleet(info, result)
        name = "billing_fleet" + (f"-{args.tag}" if args.tag else "")
        (RESULTS / f"{name}.md").write_text(text)
        (RESULTS / f"{name}.json").write_text(json.dumps({"info": info, "run": result},
                                                          indent=1, default=str))
        print(text)
        return
    runs = [run(kind, args) for kind in kinds]
    if args.seed_only or args.steady_only:
        return
    text = render(info, runs)
    name = "billing_bench" + (f"-{args.tag}" if args.tag else "")
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps({"info": info, "runs": runs}, indent=1,
                                                      default=str))
    print(text)


if __name__ == "__main__":
    main()
