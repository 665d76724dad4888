#!/usr/bin/env python3
"""The per-request cost of the slow-client watchdog (connector/slow_clients.py).

    .venv/bin/python bench/watchdog_bench.py [--gevent] [--number 20000]

Every request on the gthread and sync workers arms a watchdog for its headers, and every
request with a body arms one for it (all workers): arm it, then cancel it, as a request
that arrives in time does. Prints the microseconds per arm-and-cancel (best of 5 runs of
--number each), with a live socket pair as the request's socket. --gevent patches the
process first, as gunicorn's gevent worker does.
"""

from __future__ import annotations

import argparse
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--gevent", action="store_true")
parser.add_argument("--number", type=int, default=20_000)
args = parser.parse_args()
if args.gevent:
    from gevent import monkey

    monkey.patch_all()

import socket  # noqa: E402 - after gevent's patching, as in its worker
import timeit  # noqa: E402

from connector.slow_clients import Watchdog  # noqa: E402


def main() -> int:
    left, right = socket.socketpair()
    try:
        def one() -> None:
            Watchdog(left, 10.0).cancel()

        one()  # the first use starts what the watchdog keeps per process
        runs = timeit.repeat(one, number=args.number, repeat=5)
    finally:
        left.close()
        right.close()
    per = min(runs) / args.number * 1e6
    where = "gevent" if args.gevent else "threads"
    print(f"watchdog arm+cancel ({where}): {per:.2f} µs per request "
          f"(best of 5 × {args.number:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
