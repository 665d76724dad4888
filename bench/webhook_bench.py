#!/usr/bin/env python3
"""Webhooks under SCIM load on PostgreSQL: commit-to-delivery latency and throughput.

    .venv/bin/python bench/webhook_bench.py --endpoints 1 --rate 1000 --seconds 20
    .venv/bin/python bench/webhook_bench.py --endpoints 10 --rate 1000 --seconds 20
    .venv/bin/python bench/webhook_bench.py --endpoints 1 --rate 1000 --members 10

A fresh PostgreSQL database; the connector served by gunicorn (`connector serve` with
server.schedulers = "external": no schedulers and no supervised worker, so the bench's
dispatcher is the only one); SCIM writers in this process, paced to --rate events per
second; a webhook receiver on loopback in a process of its own. What a write is:

- by default, a PATCH of one user's `active`, back and forth: two events per request
  (the status and the deleted-users list). Two cores top out near 500 events/s so;
- with --members N, a PATCH of a group (one per writer) adding N of the writer's users
  as members, then one removing them again: N events per request
  (group.member_added / group.member_removed), still one SCIM request and one commit
  each. This is how the bench reaches 1,000 events/s and more on two cores.

Two phases of --seconds each, same load: webhooks off (no dispatcher), then on
(`connector webhooks run` in its own process, --endpoints tenant endpoints all pointing
at the receiver).

Reported: SCIM writes/s and events/s achieved in each phase (the on/off ratio is the
write cost of webhooks), commit-to-delivery latency p50/p99 (receiver's arrival time
minus the event's recordedAt, taken just before the write's commit: so a little more
than commit to delivery), events and messages delivered per second, whether every
event reached every endpoint, and the dispatcher process's CPU seconds (user + system,
from /proc) per 1,000 event deliveries (an event sent to two endpoints is two): less
sensitive to what else runs on the machine than the rates, which depend on it (the load
average is reported too).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCIM_JSON = "application/scim+json"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_instant(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Receiver:
    """Records each event's delivery latency, per endpoint path."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.seen: dict[str, set[str]] = {}
        self.messages = 0
        self.first = self.last = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: with Nagle on, the body waits for the
            # client's delayed ACK (40 ms a message), as no production server does.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived = time.time()
                payload = json.loads(body)
                events = (payload["data"]["events"] if payload["type"] == "batch"
                          else [payload["data"]])
                with receiver.lock:
                    receiver.messages += 1
                    receiver.first = receiver.first or arrived
                    receiver.last = arrived
                    seen = receiver.seen.setdefault(self.path, set())
                    for event in events:
                        if event["id"] not in seen:
                            seen.add(event["id"])
                            receiver.latencies.append(arrived - parse_instant(
                                event["recordedAt"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_port)


def start_receiver() -> tuple[Any, Any, int]:
    """The receiver's process (`serve_receiver`): (its pipe, the process, its port)."""
    import multiprocessing

    ours, theirs = multiprocessing.Pipe()
    receiving = multiprocessing.get_context("fork").Process(target=serve_receiver,
                                                            args=(theirs,), daemon=True)
    receiving.start()
    ours.send("port")
    return ours, receiving, int(ours.recv())


def serve_receiver(pipe: Any) -> None:
    """The receiver in a process of its own (its JSON parsing must not take the
    writers' CPU in this one): answers "port", "counts" and "results" on the pipe."""
    receiver = Receiver()
    while True:
        ask = pipe.recv()
        with receiver.lock:
            if ask == "port":
                pipe.send(receiver.port)
            elif ask == "counts":
                pipe.send({k: len(v) for k, v in receiver.seen.items()})
            else:
                pipe.send({"latencies": receiver.latencies, "messages": receiver.messages,
                           "span": max(receiver.last - receiver.first, 1e-9)})
                return


def fresh_database(pg_base: str) -> tuple[str, str]:
    import psycopg

    name = f"webhook_bench_{uuid.uuid4().hex[:8]}"
    admin = pg_base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{pg_base}/{name}", name


def drop_database(pg_base: str, name: str) -> None:
    import psycopg

    admin = pg_base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(url: str, users: int, endpoints: int, receiver_port: int, key: str,
         workdir: Path) -> dict[str, Any]:
    import datetime as dt

    from sqlalchemy.orm import Session

    from connector import migrate, tenants
    from connector.config import DatabaseSettings, load_settings
    from connector.db import make_engine
    from connector.webhooks import service

    engine = make_engine(DatabaseSettings(url=url))
    migrate.upgrade(engine)
    settings = load_settings(environ={"CONNECTOR_CONFIG": str(workdir / "none.toml")},
                             overrides={"database": {"url": url},
                                        "azure_sync": {"encryption_key": key},
                                        "webhooks": {"allow_private_targets": True}})
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as s:
        tenant, issued = tenants.create_tenant(s, "Bench", now)
        tenant_id = tenant.id
        s.commit()
    engine.dispose()
    return {"tenant": tenant_id, "token": issued.token, "settings": settings,
            "service": service, "users": users, "endpoints": endpoints,
            "receiver_port": receiver_port}


def add_endpoints(info: dict[str, Any], url: str) -> None:
    import datetime as dt

    from sqlalchemy.orm import Session

    from connector.config import DatabaseSettings
    from connector.db import make_engine

    engine = make_engine(DatabaseSettings(url=url))
    with Session(engine) as s:
        for n in range(info["endpoints"]):
            info["service"].create_endpoint(
                s, info["settings"], info["tenant"],
                f"http://127.0.0.1:{info['receiver_port']}/hook/{n}", dt.datetime.now(dt.UTC))
        s.commit()
    engine.dispose()


def env_for(url: str, key: str, workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT),
            "CONNECTOR_CONFIG": str(workdir / "none.toml"),
            "CONNECTOR_DATABASE__URL": url, "CONNECTOR_AZURE_SYNC__ENCRYPTION_KEY": key,
            # One dispatcher, the bench's own `connector webhooks run`: `connector serve`
            # would otherwise start its supervised `connector worker`, which delivers
            # webhooks too (two dispatchers sharing the endpoints, one of them unmeasured).
            "CONNECTOR_SERVER__SCHEDULERS": "external",
            "CONNECTOR_AZURE_SYNC__SCHEDULER_IN_WEB": "false",
            "CONNECTOR_BILLING__SCHEDULER_IN_WEB": "false",
            "CONNECTOR_LOGGING__LEVEL": "WARNING", "CONNECTOR_LOGGING__ACCESS_LOG": "false",
            "CONNECTOR_PROVISIONING_LOG__ENABLED": "true",
            "CONNECTOR_WEBHOOKS__ALLOW_PRIVATE_TARGETS": "true", **extra}


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def create(port: int, token: str, path: str, bodies: list[dict[str, Any]]) -> list[str]:
    """POST each body to the SCIM `path` over one connection: the ids created."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    ids = []
    for body in bodies:
        conn.request("POST", f"/scim/v2/{path}", json.dumps(body),
                     {"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON})
        ids.append(json.loads(conn.getresponse().read())["id"])
    conn.close()
    return ids


def create_users(port: int, token: str, users: int) -> list[str]:
    return create(port, token, "Users",
                  [{"schemas": [USER], "userName": f"u{i}@example.com"} for i in range(users)])


def create_groups(port: int, token: str, writers: int) -> list[str]:
    return create(port, token, "Groups", [{"schemas": [GROUP], "displayName": f"bench group {i}"}
                                          for i in range(writers)])


def user_write(uid: str, active: dict[str, bool]) -> tuple[str, str]:
    """A PATCH of the user's `active`, flipped (two events)."""
    active[uid] = not active[uid]
    return f"/scim/v2/Users/{uid}", json.dumps({"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "active", "value": active[uid]}]})


def group_write(group: str, members: list[str], adding: bool) -> tuple[str, str]:
    """A PATCH of a group adding or removing these members (one event each)."""
    if adding:
        ops = [{"op": "add", "path": "members", "value": [{"value": m} for m in members]}]
    else:
        ops = [{"op": "remove", "path": f'members[value eq "{m}"]'} for m in members]
    return f"/scim/v2/Groups/{group}", json.dumps({"schemas": [PATCH], "Operations": ops})


def write_load(port: int, token: str, ids: list[str], active: dict[str, bool], writers: int,
               rate: float, seconds: float, took: list[float] | None = None,
               groups: list[str] | None = None, members: int = 0
               ) -> tuple[int, int, float]:
    """Writes paced to `rate` events/s: PATCH active false/true (`active`: each user's
    state, kept across phases; 2 events each), or with `members`, group PATCHes adding
    then removing that many members (`members` events each; a group's membership is
    back to empty after each pair, so phases can follow one another);
    (writes, failures, elapsed)."""
    per_writer = len(ids) // writers
    per_write = members if members else 2
    interval = writers * per_write / rate  # seconds between one writer's PATCHes
    done = [0] * writers
    failed = [0] * writers
    stop = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON}

    def writer(w: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = ids[w * per_writer:(w + 1) * per_writer]
        nxt = time.monotonic()
        k = 0
        batch: list[str] = []
        while time.monotonic() < stop or batch:  # a group's removal always follows
            adding = False
            if groups:
                adding = not batch
                if adding:
                    start = (k * members) % max(len(mine) - members + 1, 1)
                    batch = mine[start:start + members]
                    k += 1
                path, body = group_write(groups[w], batch, adding)
            else:
                uid = mine[k % len(mine)]
                k += 1
                path, body = user_write(uid, active)
            sent = time.perf_counter()
            conn.request("PATCH", path, body, headers)
            answer = conn.getresponse()
            answer.read()
            if took is not None:
                took.append(time.perf_counter() - sent)
            if answer.status in (200, 204):
                done[w] += 1
                if groups and not adding:
                    batch = []
            else:
                failed[w] += 1
                if groups and adding:
                    batch = []
                elif groups:
                    raise RuntimeError(f"removing members failed: {answer.status}")
                else:
                    active[uid] = not active[uid]
            nxt += interval
            pause = nxt - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done), sum(failed), time.monotonic() - started


def newest_event(url: str) -> int:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
    return int(row[0]) if row else 0


def events_since(url: str, newest: int) -> int:
    """Events recorded after `newest` that webhooks deliver (the public types)."""
    import psycopg

    from connector.feed import PUBLIC_TYPES

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE id > %s AND kind = ANY(%s)",
                           (newest, list(PUBLIC_TYPES))).fetchone()
    return int(row[0]) if row else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", type=int, default=1)
    p.add_argument("--rate", type=float, default=1000, help="target events/s (2 per PATCH)")
    p.add_argument("--seconds", type=float, default=20, help="length of each phase")
    p.add_argument("--members", type=int, default=0,
                   help="write group PATCHes of this many members (events) each, not "
                        "users' active")
    p.add_argument("--writers", type=int, default=16)
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--web-workers", type=int, default=2)
    p.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep-db", action="store_true", help="leave the database for a look")
    args = p.parse_args()
    from connector import sealed

    workdir = Path(tempfile.mkdtemp(prefix="webhook-bench-"))
    key = sealed.new_key()
    url, name = fresh_database(args.pg_base)
    ours, receiving, receiver_port = start_receiver()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        info = seed(url, args.users, args.endpoints, receiver_port, key, workdir)
        port = free_port()
        env = env_for(url, key, workdir, {})
        procs.append(subprocess.Popen([sys.executable, "-m", "connector.cli", "serve",
                                       "--port", str(port), "--workers",
                                       str(args.web_workers)], env=env, cwd=workdir,
                                      stdout=subprocess.DEVNULL))
        wait_port(port)
        log(f"creating {args.users} users")
        ids = create_users(port, info["token"], args.users)
        active = {u: True for u in ids}
        groups = create_groups(port, info["token"], args.writers) if args.members else None
        load = {"groups": groups, "members": args.members}
        loadavg_start = os.getloadavg()
        log(f"phase 1: webhooks off, {args.seconds:.0f} s at {args.rate:.0f} events/s")
        took_off: list[float] = []
        off = write_load(port, info["token"], ids, active, args.writers, args.rate,
                         args.seconds, took_off, **load)
        newest = newest_event(url)
        add_endpoints(info, url)
        dispatcher = subprocess.Popen([sys.executable, "-m", "connector.cli", "webhooks",
                                       "run"], env=env, cwd=workdir, stdout=subprocess.PIPE)
        procs.append(dispatcher)
        assert dispatcher.stdout is not None
        dispatcher.stdout.readline()
        cpu_start = cpu_seconds(dispatcher.pid)
        log(f"phase 2: webhooks on, {args.endpoints} endpoint(s)")
        took_on: list[float] = []
        on = write_load(port, info["token"], ids, active, args.writers, args.rate,
                        args.seconds, took_on, **load)
        expected = events_since(url, newest)
        deadline = time.monotonic() + 60
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            ours.send("counts")
            counts = ours.recv()
            if len(counts) == args.endpoints and min(counts.values()) >= expected:
                break
            time.sleep(0.2)
        cpu = cpu_seconds(dispatcher.pid) - cpu_start
        loadavg_end = os.getloadavg()
        ours.send("results")
        results = ours.recv()
        lat = results["latencies"]
        delivered = sum(counts.values())
        span, messages = results["span"], results["messages"]
        complete = len(counts) == args.endpoints and min(counts.values()) >= expected
        result = {
            "endpoints": args.endpoints, "target_events_per_s": args.rate,
            "seconds": args.seconds, "writers": args.writers, "members": args.members,
            "scim_writes_per_s_off": round(off[0] / off[2], 1),
            "scim_writes_per_s_on": round(on[0] / on[2], 1),
            "events_per_s_on": round(expected / on[2], 1),
            "write_ratio_on_off": round((on[0] / on[2]) / max(off[0] / off[2], 1e-9), 3),
            "scim_failures": off[1] + on[1],
            "scim_patch_p50_ms_off": round(pct(took_off, 0.5) * 1000, 1),
            "scim_patch_p50_ms_on": round(pct(took_on, 0.5) * 1000, 1),
            "scim_patch_p99_ms_off": round(pct(took_off, 0.99) * 1000, 1),
            "scim_patch_p99_ms_on": round(pct(took_on, 0.99) * 1000, 1),
            "latency_p50_ms": round(pct(lat, 0.50) * 1000, 1),
            "latency_p99_ms": round(pct(lat, 0.99) * 1000, 1),
            "latency_max_ms": round(max(lat, default=float("nan")) * 1000, 1),
            "latency_mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
            "events_delivered": delivered, "messages": messages,
            "deliveries_per_s": round(delivered / span, 1),
            "events_per_message": round(delivered / max(messages, 1), 2),
            "every_event_delivered": complete,
            "dispatcher_cpu_s": round(cpu, 2),
            "dispatcher_cpu_s_per_1000_deliveries": round(cpu * 1000 / max(delivered, 1), 3),
            "loadavg_1m_start_end": [round(loadavg_start[0], 2), round(loadavg_end[0], 2)]}
        print(json.dumps(result, indent=None if args.json else 2))
        return 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        receiving.kill()
        if args.keep_db:
            log(f"kept {url}")
        else:
            drop_database(args.pg_base, name)


if __name__ == "__main__":
    sys.exit(main())
