#!/usr/bin/env python3
"""The dispatcher's CPU per message, in one process, without the web server's noise.

    .venv/bin/python bench/webhook_cpu.py --endpoints 10 --events 60 --rounds 100
    .venv/bin/python bench/webhook_cpu.py --profile 30      # cProfile, top 30 by own time

A fresh PostgreSQL database (or --sqlite), one tenant, --endpoints endpoints at a
webhook receiver on loopback (a process of its own: its CPU is not counted). Each round
records --per-turn transactions of --events group-membership events each, then
delivers to every endpoint one after another in this thread (Dispatcher.deliver: claim,
then per message page, POST, attempt row and cursor; release), with max_batch = --events:
each endpoint gets --per-turn messages of --events events in one turn.
Reported: this process's CPU (user + system) per message and per 1,000 event deliveries,
measured around the deliveries only (the event writes are left out).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.webhook_bench import drop_database, fresh_database, start_receiver  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--events", type=int, default=60, help="events per round (per message)")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--per-turn", type=int, default=1,
                   help="messages per endpoint per round (one delivery turn)")
    p.add_argument("--warmup", type=int, default=5, help="rounds not measured")
    p.add_argument("--profile", type=int, default=0, help="print the top N functions")
    p.add_argument("--sqlite", action="store_true")
    p.add_argument("--pg-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    from sqlalchemy.orm import Session

    from connector import db, events, migrate, sealed, tenants
    from connector.config import load_settings
    from connector.db import make_engine
    from connector.status import Source
    from connector.webhooks import service
    from connector.webhooks.dispatcher import Dispatcher

    workdir = Path(tempfile.mkdtemp(prefix="webhook-cpu-"))
    name = None
    if args.sqlite:
        url = f"sqlite:///{workdir / 'bench.db'}"
    else:
        url, name = fresh_database(args.pg_base)
    ours, receiving, port = start_receiver()
    try:
        settings = load_settings(
            environ={"CONNECTOR_CONFIG": str(workdir / "none.toml")},
            overrides={"database": {"url": url},
                       "azure_sync": {"encryption_key": sealed.new_key()},
                       "webhooks": {"allow_private_targets": True,
                                    "max_batch": args.events}})
        engine = make_engine(settings.database)
        migrate.upgrade(engine)
        maker = db.make_sessionmaker(engine)  # as `connector webhooks run` has it
        now = dt.datetime.now(dt.UTC)
        with Session(engine) as s:
            tenant, _ = tenants.create_tenant(s, "Bench", now)
            tenant_id = tenant.id
            endpoint_ids = [service.create_endpoint(
                s, settings, tenant_id, f"http://127.0.0.1:{port}/hook/{n}", now)[0].id
                for n in range(args.endpoints)]
            s.commit()
        dispatcher = Dispatcher(maker, settings)
        group, users = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(args.events)]
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        cpu = 0.0
        messages = 0
        for r in range(args.warmup + args.rounds):
            for k in range(args.per_turn):
                with maker() as s:
                    ctx = events.WriteContext(tenant_id, Source.SCIM, "bench",
                                              uuid.uuid4().hex, dt.datetime.now(dt.UTC))
                    kind = events.MEMBER_ADDED if k % 2 == 0 else events.MEMBER_REMOVED
                    events.record_many(s, [events.row(ctx, "group", group, kind,
                                                      object_id=u) for u in users])
                    s.commit()
            measured = r >= args.warmup
            if measured and profiler is not None:
                profiler.enable()
            started = time.process_time()
            sent = sum(dispatcher.deliver(e) for e in endpoint_ids)
            if measured:
                cpu += time.process_time() - started
                messages += sent
            if measured and profiler is not None:
                profiler.disable()
        dispatcher.sender.close()
        ours.send("counts")
        counts = ours.recv()
        total = args.events * args.per_turn * (args.warmup + args.rounds)
        complete = len(counts) == args.endpoints and min(counts.values()) >= total
        if not complete:
            print(f"expected {total} events at each endpoint, got {counts}", file=sys.stderr)
        deliveries = messages * args.events  # every message is full (max_batch)
        result = {"database": "sqlite" if args.sqlite else "postgresql",
                  "endpoints": args.endpoints, "events_per_message": args.events,
                  "messages_per_turn": args.per_turn,
                  "rounds": args.rounds, "messages": messages,
                  "every_event_delivered": complete,
                  "cpu_s": round(cpu, 3),
                  "cpu_ms_per_message": round(cpu * 1000 / max(messages, 1), 3),
                  "cpu_s_per_1000_deliveries": round(cpu * 1000 / max(deliveries, 1), 4)}
        print(json.dumps(result, indent=None if args.json else 2))
        if profiler is not None:
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(
                args.profile)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(
                args.profile * 2)
        engine.dispose()
        return 0 if complete else 1
    finally:
        receiving.kill()
        if name is not None:
            drop_database(args.pg_base, name)


if __name__ == "__main__":
    sys.exit(main())
