"""Make sure the services the suite needs are up before pytest starts.

PostgreSQL on 127.0.0.1:5432 is started with the machine's cluster tools when it is
down (the same command .ci/run uses), so `make test` works on a fresh session too.
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


if __name__ == "__main__":
    ensure_postgres()
