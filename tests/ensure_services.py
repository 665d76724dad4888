"""Make sure the services and tools the suite needs are there before pytest starts.

PostgreSQL on 127.0.0.1:5432 is started with the machine's cluster tools when it is
down (the same command .ci/run uses), so `make test` works on a fresh session too.
Debian's chromium, which the admin UI's browser tests drive through Playwright, and
Debian's pgbouncer, which the PgBouncer tests start on a port of their own, are
installed with apt-get when missing (this runs as root in CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def ensure_postgres() -> None:
    if port_open("127.0.0.1", 5432):
        return
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or not shutil.which("pg_ctlcluster"):
        sys.exit("PostgreSQL is not running on 127.0.0.1:5432 and no cluster was found to start.")
    print(f"Starting PostgreSQL {versions[-1]}...", flush=True)
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                   check=False)
    for _ in range(30):
        if port_open("127.0.0.1", 5432):
            return
        time.sleep(1)
    sys.exit("PostgreSQL did not come up on 127.0.0.1:5432 within 30 s.")


CHROMIUM = "/usr/bin/chromium"
PGBOUNCER = "/usr/sbin/pgbouncer"


def ensure_package(path: str, package: str) -> None:
    """Install Debian's `package` when `path` is missing: Playwright drives the
    distribution's chromium rather than a browser of its own download, and the PgBouncer
    tests run the distribution's pgbouncer (only the binary: no service is started)."""
    if os.path.exists(path):
        return
    if not shutil.which("apt-get"):
        sys.exit(f"{path} is missing and apt-get is not available to install it.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", package]
    print(f"{path} is missing: running {' '.join(install)}", flush=True)
    if subprocess.run(install, env=env, check=False).returncode != 0:
        # A fresh machine may have no package lists yet (or stale ones): fetch, retry.
        print("apt-get install failed: running apt-get update, then retrying", flush=True)
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(install, env=env, check=False)
    if not os.path.exists(path):
        sys.exit(f"Could not install {package}; {path} is still missing.")


if __name__ == "__main__":
    ensure_postgres()
    ensure_package(CHROMIUM, "chromium")
    ensure_package(PGBOUNCER, "pgbouncer")
