#!/usr/bin/env python3
"""The fake Entra token endpoint and fake Microsoft Graph (tests/fakes) as a process of
their own, for bench/sync_bench.py: the connector under measurement then shares no
interpreter (and no GIL) with the server that builds the pages.

    .venv/bin/python bench/fake_graph_server.py --users 100000 --disabled 1000 \
        --groups 10 --group-members 1000 --latency-ms 0

It generates a throwaway CA and loopback certificate, starts both fakes on 127.0.0.1,
registers one Entra tenant with one app (a client secret; User.Read.All and
GroupMember.Read.All), seeds the directory (seeded users cost O(1): tests/fakes/seeding.py)
and prints ONE line of JSON on stdout:

    {"ready": true, "authority_host": "https://127.0.0.1:P1", "graph_base_url":
     "https://127.0.0.1:P2", "ca_path": "...", "tenant_id": "...", "client_id": "...",
     "client_secret": "...", "users": N, "disabled": D, "groups": G, "pid": ...}

Then it reads control requests from stdin, one JSON object per line, and answers each with
one line of JSON on stdout:

    {"cmd": "change", "updates": 600, "disables": 200, "enables": 200}
        change that many distinct users at random (a fixed seed): attribute updates of
        selected properties (name, mail, employeeId, a userPrincipalName rename), disables
        of enabled users, enables of disabled ones; answers the counts and the number of
        users disabled now;
    {"cmd": "churn", "renames": 100000, "reuses": 10000, "swaps": 1}
        directory churn: rename that many users (a new userPrincipalName), re-hire that
        many (the user deleted for good and a new one created with its name, in the same
        round), and swap the names of that many pairs; answers the counts and a sample of
        (object id, expected userPrincipalName) to check against;
    {"cmd": "latency", "ms": 20}     the fake Graph's per-request latency from now on;
    {"cmd": "stats"}                 request/page counters, this process's RSS and CPU seconds;
    {"cmd": "stop"}                  (or end of stdin) stop the servers and exit.

With --tenants N (bench/fleet_bench.py), it holds N Entra tenants instead, each with an
app of its own and --users users (--disabled of them disabled), and the ready line also
lists them: "tenants": [[tenant_id, client_id, client_secret], ...]; the control
requests then act on the first one.

Progress and errors go to stderr. Page size: --page-size users per page (default 200, also
the largest a client may ask for with Prefer: odata.maxpagesize).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.entra_token import FakeTokenEndpoint  # noqa: E402
from tests.fakes.graph import FakeGraph  # noqa: E402
from tests.fakes.seeding import SeededUsers  # noqa: E402
from tests.fakes.tls import create_loopback_tls  # noqa: E402

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[fake graph {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def rss_mb() -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


class Population:
    """The seeded users by a global index (enabled block first, then the disabled one),
    and which of them are disabled now."""

    def __init__(self, enabled: SeededUsers, disabled: SeededUsers | None) -> None:
        self.enabled_block = enabled
        self.disabled_block = disabled
        self.total = len(enabled) + (len(disabled) if disabled else 0)
        first = len(enabled)
        self.disabled = set(range(first, self.total))
        self.renamed: set[int] = set()
        self.replaced: dict[int, str] = {}  # re-hired: the index's new object id

    def user_id(self, index: int) -> str:
        if index in self.replaced:
            return self.replaced[index]
        if index < len(self.enabled_block):
            return str(self.enabled_block[index])
        assert self.disabled_block is not None
        return str(self.disabled_block[index - len(self.enabled_block)])


def change(graph: FakeGraph, tenant: str, people: Population, rng: random.Random,
           updates: int, disables: int, enables: int, serial: int) -> dict[str, Any]:
    directory = graph.directory(tenant)
    started = time.monotonic()
    enables = min(enables, len(people.disabled))
    to_enable = rng.sample(sorted(people.disabled), enables) if enables else []
    wanted = updates + disables
    if wanted > people.total - len(people.disabled):
        raise ValueError("more updates and disables than enabled users")
    picked: list[int] = []
    chosen: set[int] = set()
    while len(picked) < wanted:
        for index in rng.sample(range(people.total), min(people.total, 2 * wanted)):
            if index not in people.disabled and index not in chosen:
                chosen.add(index)
                picked.append(index)
                if len(picked) == wanted:
                    break
    kinds: dict[str, int] = {}
    for k, index in enumerate(picked[:updates]):
        user_id = people.user_id(index)
        kind = k % 5
        if kind == 0:
            props = {"surname": f"Renamed{serial}x{index}",
                     "displayName": f"Given{index} Renamed{serial}x{index}"}
        elif kind == 1:
            props = {"mail": f"mail{serial}x{index}@mail.contoso.example"}
        elif kind == 2:
            props = {"employeeId": f"R{serial:02d}{index:08d}"}
        elif kind == 3:
            props = {"givenName": f"Given{serial}x{index}",
                     "displayName": f"Given{serial}x{index} Surname{index}"}
        else:
            upn = f"user{index}.r{serial}@contoso.example"
            props = {"userPrincipalName": upn, "mail": upn}
        directory.update_user(user_id, **props)
        name = ("name", "mail", "employeeId", "givenName", "userPrincipalName")[kind]
        kinds[name] = kinds.get(name, 0) + 1
    for index in picked[updates:]:
        directory.disable_user(people.user_id(index))
        people.disabled.add(index)
    for index in to_enable:
        directory.enable_user(people.user_id(index))
        people.disabled.discard(index)
    return {"ok": True, "updated": updates, "update_kinds": kinds, "disabled": disables,
            "enabled": len(to_enable), "disabled_now": len(people.disabled),
            "seconds": round(time.monotonic() - started, 3)}


def churn(graph: FakeGraph, tenant: str, people: Population, rng: random.Random,
          renames: int, reuses: int, swaps: int, serial: int) -> dict[str, Any]:
    """Names that move: renames, re-hires under the old name, swaps (distinct enabled
    users for each)."""
    directory = graph.directory(tenant)
    started = time.monotonic()
    enabled = [i for i in range(people.total) if i not in people.disabled]
    wanted = renames + reuses + 2 * swaps
    if wanted > len(enabled):
        raise ValueError("more churn than enabled users")
    picked = rng.sample(enabled, wanted)
    expected: list[tuple[str, str]] = []

    def upn_of(user_id: str) -> str:
        found = directory.get_user(user_id)
        assert found is not None, user_id
        return str(found["userPrincipalName"])

    for index in picked[:renames]:
        user_id = people.user_id(index)
        upn = f"user{index}.c{serial}@contoso.example"
        directory.update_user(user_id, userPrincipalName=upn, mail=upn)
        expected.append((user_id, upn))
    for index in picked[renames:renames + reuses]:
        old = people.user_id(index)
        upn = upn_of(old)
        directory.hard_delete_user(old)
        new = directory.add_user(upn, givenName=f"Rehired{serial}")
        people.replaced[index] = new
        expected.append((new, upn))
    rest = picked[renames + reuses:]
    for k in range(swaps):
        a, b = people.user_id(rest[2 * k]), people.user_id(rest[2 * k + 1])
        upn_a, upn_b = upn_of(a), upn_of(b)
        directory.update_user(a, userPrincipalName=f"swap{serial}x{k}@contoso.example")
        directory.update_user(b, userPrincipalName=upn_a)
        directory.update_user(a, userPrincipalName=upn_b)
        expected += [(a, upn_b), (b, upn_a)]
    sample = expected[-2 * swaps:] + rng.sample(expected[:len(expected) - 2 * swaps],
                                                min(2000, len(expected) - 2 * swaps))
    return {"ok": True, "renamed": renames, "reused": reuses, "swapped_pairs": swaps,
            "expected": sample, "seconds": round(time.monotonic() - started, 3)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100_000, help="users in the tenant, in all")
    p.add_argument("--disabled", type=int, default=1000,
                   help="of those, seeded with accountEnabled false (the last ones)")
    p.add_argument("--groups", type=int, default=0, help="security groups to create")
    p.add_argument("--group-members", type=int, default=1000,
                   help="direct user members per group (consecutive enabled users)")
    p.add_argument("--page-size", type=int, default=200)
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="the fake Graph sleeps this long before each answer")
    p.add_argument("--seed", type=int, default=20261130, help="random seed for changes")
    p.add_argument("--tenants", type=int, default=1,
                   help="Entra tenants, each with its own app and --users users")
    args = p.parse_args(argv)
    if not 0 <= args.disabled <= args.users:
        p.error("--disabled must be between 0 and --users")

    tmp = Path(tempfile.mkdtemp(prefix="fake-graph-"))
    tls = create_loopback_tls(tmp)
    entra = FakeTokenEndpoint(tls).start()
    graph = FakeGraph(tls, entra).start()
    try:
        graph.knobs.page_size = graph.knobs.max_page_size = args.page_size
        graph.knobs.latency = args.latency_ms / 1000
        apps = []
        for _ in range(max(1, args.tenants)):
            tenant, client, secret = str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4().hex
            entra.add_app(tenant, client, secret=secret)
            apps.append([tenant, client, secret])
            directory = graph.directory(tenant)
            enabled = directory.seed_users(args.users - args.disabled)
            disabled = (directory.seed_users(args.disabled, account_enabled=False)
                        if args.disabled else None)
            if len(apps) == 1:  # the control requests act on the first tenant
                people = Population(enabled, disabled)
                first_directory, first_enabled = directory, enabled
        tenant, client, secret = apps[0]
        directory, enabled = first_directory, first_enabled
        say(f"seeded {len(apps):,} tenant(s) of {args.users:,} users ({args.disabled:,} "
            f"disabled) in {time.monotonic() - T0:.2f} s")
        members_per = min(args.group_members, len(enabled))
        for g in range(args.groups):
            start = (g * members_per) % max(1, len(enabled) - members_per + 1)
            directory.create_group(f"Bench group {g:03d}",
                                   members=enabled[start:start + members_per])
        if args.groups:
            say(f"created {args.groups} groups of {members_per:,} members")
        print(json.dumps({
            "ready": True, "authority_host": entra.url, "graph_base_url": graph.url,
            "ca_path": str(tls.ca_path), "tenant_id": tenant, "client_id": client,
            "client_secret": secret, "users": args.users, "disabled": args.disabled,
            "groups": args.groups, "group_members": members_per if args.groups else 0,
            "page_size": args.page_size, "latency_ms": args.latency_ms, "pid": os.getpid(),
            **({"tenants": apps} if args.tenants > 1 else {})}),
            flush=True)
        rng = random.Random(args.seed)
        serial = 0
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                request = json.loads(line)
                cmd = request.get("cmd")
                if cmd == "stop":
                    print(json.dumps({"ok": True}), flush=True)
                    break
                if cmd == "change":
                    serial += 1
                    answer = change(graph, tenant, people, rng, int(request.get("updates", 0)),
                                    int(request.get("disables", 0)),
                                    int(request.get("enables", 0)), serial)
                elif cmd == "churn":
                    serial += 1
                    answer = churn(graph, tenant, people, rng, int(request.get("renames", 0)),
                                   int(request.get("reuses", 0)), int(request.get("swaps", 0)),
                                   serial)
                elif cmd == "latency":
                    graph.knobs.latency = float(request["ms"]) / 1000
                    answer = {"ok": True, "latency_ms": float(request["ms"])}
                elif cmd == "stats":
                    answer = {"ok": True, "counters": dict(graph.counters),
                              "token_requests": entra.counters.get("token_requests", 0),
                              "errors": [repr(e) for e in graph.errors + entra.errors],
                              "rss_mb": rss_mb(),
                              # user + system CPU of this process so far (its threads)
                              "cpu_s": round(sum(os.times()[:2]), 3)}
                else:
                    answer = {"ok": False, "error": f"unknown command {cmd!r}"}
            except (ValueError, KeyError, TypeError) as exc:
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
    finally:
        graph.stop()
        entra.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        say("stopped")


if __name__ == "__main__":
    main()
