#!/usr/bin/env python3
"""SCIM and admin API request cost in one process, without HTTP or a load generator.

    .venv/bin/python bench/inprocess_bench.py --users 2000 --rounds 5

Builds the app on a fresh SQLite file, creates N users over SCIM, then times each kind
of request through Flask's test client, best and median of --rounds passes. With no
server, no wrk and no second process, it compares two checkouts of the code (run it in
each, alternately) far more steadily than bench/scim_bench.py does on a busy machine;
it measures the Python cost of a request, not throughput. docs/benchmarks.md holds the
published comparisons.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy.orm import Session  # noqa: E402

from connector import admins, migrate, tenants  # noqa: E402
from connector.app import create_app  # noqa: E402
from connector.config import DatabaseSettings, load_settings  # noqa: E402
from connector.db import make_engine  # noqa: E402

SCIM_JSON = "application/scim+json"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5, help="timed passes per kind")
    p.add_argument("--provisioning-log", choices=["on", "off"], default="on",
                   help="write the provisioning log (default, as production); off: the A/B")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="inprocess-bench-"))
    url = f"sqlite:///{workdir}/bench.sqlite3"
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
    some = ids[:min(len(ids), 500)]
    base = f"/api/v1/tenants/{tenant_id}"
    posted = iter(range(10**9))
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
                    {"op": "replace", "path": "active", "value": bool(k % 2)}]}))
            for k, i in enumerate(some)]),
        ("API GET …/users?page=P", 50, lambda: [
            client.get(f"{base}/users?page={k % 10 + 1}", headers=api) for k in range(50)]),
        ("API PATCH …/users/{id} (guest)", len(some), lambda: [
            client.patch(f"{base}/users/{i}", headers=api,
                         data=json.dumps({"guest": bool(k % 2)}))
            for k, i in enumerate(some)]),
    ]
    print(f"{args.users:,} users, SQLite, best and median of {args.rounds} passes, "
          f"provisioning log {args.provisioning_log}")
    print("| request | best µs | median µs |\n| --- | ---: | ---: |")
    for name, count, run in kinds:
        run()  # warm-up: caches and statements
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            run()
            times.append((time.perf_counter() - started) / count * 1e6)
        print(f"| {name} | {min(times):,.0f} | {statistics.median(times):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
