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
import random
import subprocess
import sys
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


def user_history(rng: random.Random, uid: str, name: str, events: int,
                 groups: list[str]) -> list[tuple[dt.datetime, str, str, Any, Any, str | None]]:
    """(instant, subject type, kind, old, new, object id) of one user, in time order."""
    created = _random_instant(rng, HISTORY_START, CREATED_BY)
    modules = sorted(rng.sample(MODULES, rng.randrange(0, 3)))
    out: list[tuple[dt.datetime, str, str, Any, Any, str | None]] = [
        (created, "user", "user.created", None,
         {"userName": name, "active": True, "idp_active": True, "in_deleted_list": False,
          "guest": rng.random() < 0.1, "external_company_guest": False, "admin": False,
          "modules": modules}, None)]
    active, member_of = True, set()
    for at in sorted(_random_instant(rng, created, HISTORY_END) for _ in range(events - 1)):
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
                   help="keep a database seeded by an earlier run (drops its closes)")
    p.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-name", default="connector_billing_bench")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()
    info = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
            "machine": machine()}
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
