#!/usr/bin/env python3
"""What an update of `users` costs PostgreSQL, on a database the sync bench filled.

    .venv/bin/python bench/sync_bench.py --users 200000 --db postgresql \\
        --incremental-rounds 1 --churn-rename-pct 0 --churn-reuse-pct 0 --churn-swaps 0 \\
        --pg-name users_update_bench
    .venv/bin/python bench/users_update_bench.py --pg-name users_update_bench flush
    .venv/bin/python bench/users_update_bench.py --pg-name users_update_bench \\
        statements --shape attributes --checkpoint

`flush`: a sync page's flush of its changed users (the incremental round's mix: a new
display name, a new userPrincipalName, a status, a profile attribute only in `data`),
written the way main did (the unit of work's own statements: one per run of users with
the same changed columns) and with `azure_sync.applier.uniform_user_updates` (one
executemany), in alternation, --pairs times; each rolled back. It reports the CPU time of
this process (`time.process_time`) and of the PostgreSQL backend (its
/proc/PID/schedstat: the server runs on this machine) spent in the flush, medians.

`statements`: --updates UPDATEs of random live users in one executemany and one commit,
--rounds times, of one --shape: `attributes` (data, modified_at, version: what a profile
change writes), `seen` (seen_in_run alone: what a full round writes for an unchanged
user) or `status` (active, modified_at, version). It reports the backend's CPU time, the
WAL the round wrote (pg_current_wal_insert_lsn) and how many of the updates were HOT
(the transaction's own statistics). --checkpoint runs CHECKPOINT before each round: the first change
of each page after a checkpoint writes the whole page to the WAL, as it does in
production between checkpoints. --wal-compression sets it for the session (superuser).
The table's indexes and fillfactor are the database's: change them on a copy
(`CREATE DATABASE copy TEMPLATE users_update_bench`) to compare.

Results are printed; docs/benchmarks.md ("Incremental round: one UPDATE a page") holds
the published ones.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def backend_cpu_s(pid: int) -> float:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def change_page(users: list[Any], serial: int, now: dt.datetime, rng: random.Random) -> None:
    """What `Directory.update_user` does to the ORM objects of an incremental page: it
    assigns the names every time (changed or not), then the changes, of a kind drawn at
    random for each user (in a delta page they come in no order)."""
    for i, user in enumerate(users):
        kind = rng.randrange(5)
        data = dict(user.data)
        user.user_name, user.user_name_norm = user.user_name, user.user_name_norm
        user.external_id, user.display_name = user.external_id, user.display_name
        user.display_name_norm = user.display_name_norm
        if kind == 0:  # an enable or a disable
            user.active = not user.active
            user.idp_active = user.active
        elif kind in (1, 2):  # a new display name (surname, givenName)
            user.display_name = f"Renamed{serial}x{i}"
            user.display_name_norm = user.display_name.casefold()
            data["displayName"] = user.display_name
        elif kind == 3:  # a new userPrincipalName
            user.user_name = f"r{serial}x{i}.{user.user_name}"
            user.user_name_norm = user.user_name.casefold()
            data["userName"] = user.user_name
        else:  # mail, employeeId: only in the profile
            data["employeeNumber"] = f"R{serial}x{i}"
        user.data = data
        user.version += 1
        user.modified_at = now


def flush(args: argparse.Namespace) -> None:
    from sqlalchemy import event, select

    from azure_sync.applier import uniform_user_updates
    from connector.config import DatabaseSettings
    from connector.db import make_engine, make_sessionmaker
    from connector.models import User

    engine = make_engine(DatabaseSettings(url=f"{args.pg_base}/{args.pg_name}"))
    maker = make_sessionmaker(engine)
    with maker() as s:
        ids = list(s.scalars(select(User.id).where(User.removed_at.is_(None))))
    rng = random.Random(args.seed)
    spent: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
    for pair in range(args.pairs):
        for uniform in ((False, True) if pair % 2 == 0 else (True, False)):
            with maker() as s:
                picked = rng.sample(ids, args.page_size)
                users = s.scalars(select(User).where(User.id.in_(picked))
                                  .order_by(User.id).with_for_update()).all()
                raw = s.connection().connection.driver_connection
                assert raw is not None
                pid = raw.info.backend_pid
                change_page(list(users), pair, dt.datetime.now(dt.UTC), rng)
                statements = []

                def count(*_a: Any, _seen: list[int] = statements) -> None:
                    _seen.append(1)

                event.listen(engine, "before_cursor_execute", count)
                here, there = time.process_time(), backend_cpu_s(pid)
                if uniform:
                    uniform_user_updates(s)
                s.flush()
                here, there = time.process_time() - here, backend_cpu_s(pid) - there
                event.remove(engine, "before_cursor_execute", count)
                s.rollback()
            spent[uniform].append((here, there, len(statements)))
    engine.dispose()
    for uniform in (False, True):
        rows = spent[uniform]
        print(f"{'one executemany (uniform_user_updates)' if uniform else 'per run (main)':40} "
              f"page of {args.page_size}: statements {statistics.median(r[2] for r in rows):.0f}, "
              f"CPU here {statistics.median(r[0] for r in rows) * 1000:.1f} ms, "
              f"PostgreSQL {statistics.median(r[1] for r in rows) * 1000:.1f} ms "
              f"(medians of {len(rows)})")


SHAPES = {
    "attributes": ("UPDATE users SET data = %s::json, modified_at = %s, version = version + 1 "
                   "WHERE tenant_id = %s AND id = %s"),
    "seen": "UPDATE users SET seen_in_run = %s WHERE tenant_id = %s AND id = %s",
    "status": ("UPDATE users SET active = NOT active, modified_at = %s, version = version + 1 "
               "WHERE tenant_id = %s AND id = %s"),
}


def statements(args: argparse.Namespace) -> None:
    import psycopg

    url = f"{args.pg_base}/{args.pg_name}".replace("postgresql+psycopg://", "postgresql://")
    rng = random.Random(args.seed)
    with psycopg.connect(url) as conn:
        if args.wal_compression:
            conn.execute(f"SET wal_compression = {args.wal_compression}")
        pid = conn.info.backend_pid
        keys = conn.execute("SELECT tenant_id, id FROM users WHERE removed_at IS NULL").fetchall()
        conn.commit()

        for n in range(args.rounds):
            if args.checkpoint:
                conn.execute("CHECKPOINT")
                conn.commit()
            picked = rng.sample(keys, args.updates)
            now = dt.datetime.now(dt.UTC)
            if args.shape == "attributes":
                params: list[tuple[Any, ...]] = [
                    (json.dumps({"round": n, "title": "x" * 300}), now, t, i) for t, i in picked]
            elif args.shape == "seen":
                params = [(1000 + n, t, i) for t, i in picked]
            else:
                params = [(now, t, i) for t, i in picked]
            wal = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
            conn.commit()
            assert wal is not None
            before = backend_cpu_s(pid)
            with conn.cursor() as cur:
                cur.executemany(SHAPES[args.shape], params)
                # this transaction's own counts (the cumulative statistics lag)
                cur.execute("SELECT pg_stat_get_xact_tuples_updated('users'::regclass), "
                            "pg_stat_get_xact_tuples_hot_updated('users'::regclass)")
                counted = cur.fetchone()
            conn.commit()
            assert counted is not None
            cpu = backend_cpu_s(pid) - before
            written = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)",
                                   (wal[0],)).fetchone()
            conn.commit()
            assert written is not None
            print(f"{args.shape} round {n + 1}: {args.updates} updates, PostgreSQL CPU "
                  f"{cpu * 1000:.0f} ms, WAL {int(written[0]) / 1e6:.1f} MB, "
                  f"HOT {counted[1]} of {counted[0]}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-name", required=True, help="a database the sync bench filled")
    p.add_argument("--seed", type=int, default=7)
    sub = p.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("flush")
    f.add_argument("--pairs", type=int, default=20)
    f.add_argument("--page-size", type=int, default=170,
                   help="changed users a page (an incremental round: ~800 in 5-6 pages)")
    st = sub.add_parser("statements")
    st.add_argument("--shape", choices=sorted(SHAPES), default="attributes")
    st.add_argument("--updates", type=int, default=1000)
    st.add_argument("--rounds", type=int, default=3)
    st.add_argument("--checkpoint", action="store_true")
    st.add_argument("--wal-compression", default=None, help="off, pglz, lz4, zstd")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    flush(args) if args.mode == "flush" else statements(args)


if __name__ == "__main__":
    main()
