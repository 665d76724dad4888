#!/usr/bin/env python3
"""A partner's lists with a fleet of tenants (tenants, admin accounts, audit log): API and
admin pages, in one process.

    .venv/bin/python bench/tenants_bench.py --tenants 10000
    .venv/bin/python bench/tenants_bench.py --tenants 1000 10000 --db both --rounds 7

For each database and size: a fresh database (SQLite file, or the PostgreSQL database
--pg-name, dropped at the end), migrated, N tenants with their live-user counters and
one tenant admin each (server-side INSERT … SELECT, a tenth of the tenants closed), a
partner admin with an API token and a signed-in browser session. Then, through Flask's
test client (no HTTP, no load generator: the cost of a request), best and median
milliseconds of --rounds passes and the response size: GET /api/v1/tenants (its first
page, its last, a search by part of a name, the closed ones), GET /admin/tenants (the
page a partner admin opens), GET /api/v1/admins and /admin/admins (the accounts), and
GET /admin/audit (every tenant's audit log).

Run it in a checkout from before the tenants list was paged to see what one answer with
every tenant cost. docs/benchmarks.md holds the published figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inprocess_bench import recreate_database  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from connector import admins, migrate  # noqa: E402
from connector.app import create_app  # noqa: E402
from connector.config import DatabaseSettings, load_settings  # noqa: E402
from connector.db import make_engine  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tenants", type=int, nargs="+", default=[10_000])
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-name", default="tenants_bench")
    args = p.parse_args()
    databases = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    for database in databases:
        for count in args.tenants:
            workdir = Path(tempfile.mkdtemp(prefix="tenants-bench-"))
            url = f"sqlite:///{workdir}/bench.sqlite3"
            if database == "postgresql":
                url = f"{args.pg_base}/{args.pg_name}"
                recreate_database(args.pg_base, args.pg_name)
            try:
                run(url, workdir, database, count, args.rounds)
            finally:
                if database == "postgresql":
                    recreate_database(args.pg_base, args.pg_name, create=False)
    return 0


def seed(engine: Engine, count: int) -> None:
    """N tenants, created a minute apart, every tenth closed, each with a counter row."""
    started = time.perf_counter()
    minutes = ("datetime('2020-01-01', '+' || value || ' minutes')"
               if engine.dialect.name == "sqlite"
               else "timestamptz '2020-01-01' + value * interval '1 minute'")
    series = ("WITH RECURSIVE s(value) AS (SELECT 0 UNION ALL SELECT value + 1 FROM s "
              "WHERE value + 1 < :n) " if engine.dialect.name == "sqlite" else
              "WITH s(value) AS (SELECT generate_series(0, CAST(:n AS integer) - 1)) ")
    with engine.begin() as conn:
        conn.execute(text(
            series + "INSERT INTO tenants (id, name, created_at, status_source, "
            "scim_default_status, provisioning_paused, time_zone, entra_sync, closed_at) "
            "SELECT 'bench-' || value, 'Customer ' || value || ' Ärztehaus', " + minutes
            + ", 'identity_provider', 'active', false, 'UTC', false, CASE WHEN value % 10 = 9 "
            "THEN " + minutes + " END FROM s"), {"n": count})
        conn.execute(text("INSERT INTO tenant_counters (tenant_id, live_users, generation) "
                          "SELECT id, 100, 0 FROM tenants"))
        conn.execute(text(
            "INSERT INTO admin_accounts (id, email, email_norm, role, tenant_id, "
            "password_hash, must_change_password, session_epoch, created_at) SELECT "
            "'admin-' || id, 'it@' || id || '.example', 'it@' || id || '.example', 'tenant', "
            "id, 'x', false, 0, created_at FROM tenants"))
    print(f"[{time.perf_counter() - started:6.1f}s] seeded {count:,} tenants and their "
          "admins")


def run(url: str, workdir: Path, database: str, count: int, rounds: int) -> None:
    settings = load_settings(environ={"CONNECTOR_CONFIG": str(workdir / "none.toml")},
                             overrides={"database": {"url": url},
                                        "logging": {"access_log": False},
                                        "azure_sync": {"scheduler_in_web": False},
                                        "billing": {"scheduler_in_web": False}})
    engine = make_engine(DatabaseSettings(url=url))
    migrate.upgrade(engine)
    seed(engine, count)
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as s:
        account, _ = admins.create_admin(s, "bench@example.com", "partner", None, now)
        account.must_change_password = False
        _token, api_token = admins.create_token(s, account.id, "bench", now)
        session_id = admins.start_session(s, account, now, dt.timedelta(hours=1))
        admin_id, epoch = account.id, account.session_epoch
        s.commit()
    app = create_app(settings, engine=engine)
    api, browser = app.test_client(), app.test_client()
    with browser.session_transaction() as cookie:
        cookie.update(admin_id=admin_id, epoch=epoch, sid=session_id, csrf="bench",
                      issued=int(time.time()))
    headers = {"Authorization": f"Bearer {api_token}"}
    last = -(-count // 50)
    reads = [
        ("API first page", api, "/api/v1/tenants", headers),
        ("API last page", api, f"/api/v1/tenants?page={last}", headers),
        ("API search q=customer 77", api, "/api/v1/tenants?q=customer%2077", headers),
        ("API closed tenants", api, "/api/v1/tenants?state=closed", headers),
        ("admin page /admin/tenants", browser, "/admin/tenants", {}),
        ("API admin accounts", api, "/api/v1/admins", headers),
        ("admin page /admin/admins", browser, "/admin/admins", {}),
        ("admin page /admin/audit", browser, "/admin/audit", {}),
    ]
    print(f"\n{'SQLite' if database == 'sqlite' else 'PostgreSQL'}, {count:,} tenants; best "
          f"and median of {rounds} (the first read dropped)")
    print("| read | status | KiB | best ms | median ms |\n| --- | ---: | ---: | ---: | ---: |")
    for name, client, path, head in reads:
        times, size, status = [], 0, 0
        for _ in range(rounds + 1):
            started = time.perf_counter()
            answer = client.get(path, headers=head)
            times.append((time.perf_counter() - started) * 1000)
            size, status = len(answer.data), answer.status_code
        times = times[1:]
        print(f"| {name} | {status} | {size / 1024:,.0f} | {min(times):,.1f} | "
              f"{statistics.median(times):,.1f} |")
    engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
