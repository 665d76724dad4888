"""A process counting into a shared metrics directory, for tests/connector/test_metrics.py.

    python -m tests.connector.metrics_child DATABASE_URL web TOKEN
        3 SCIM requests without a token, 1 user created with TOKEN; then exits
    python -m tests.connector.metrics_child DATABASE_URL worker
        a month close and a sync round counted, one database connection held; prints
        "ready", waits for a line on stdin, marks itself gone and exits
    python -m tests.connector.metrics_child DATABASE_URL scrape
        prints /metrics as the app answers it

PROMETHEUS_MULTIPROC_DIR comes from the environment, as `connector serve` and
`connector worker` pass it on.
"""

from __future__ import annotations

import os
import sys

from connector import metrics
from connector.app import create_app
from connector.config import load_settings
from tests.support.metrics import TOKEN


def main(database_url: str, role: str, *rest: str) -> None:
    if role == "worker":
        metrics.set_process("worker")
    settings = load_settings(environ={"CONNECTOR_CONFIG": "/nonexistent.toml"}, overrides={
        "database": {"url": database_url}, "logging": {"access_log": False},
        "metrics": {"token": TOKEN}})
    app = create_app(settings)
    client = app.test_client()
    if role == "web":
        for _ in range(3):
            assert client.get("/scim/v2/Users").status_code == 401
        created = client.post("/scim/v2/Users", json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": f"child-{os.getpid()}@example.com"},
            headers={"Authorization": f"Bearer {rest[0]}"})
        assert created.status_code == 201, created.get_data(as_text=True)
    elif role == "worker":
        metrics.month_close("closed", 2.0)
        metrics.sync_round("succeeded", 3.0)
        engine = app.extensions["engine"]
        metrics.watch_pool(engine, "billing")
        with engine.connect():
            print("ready", flush=True)
            sys.stdin.readline()
        metrics.mark_process_dead(os.getpid())
    elif role == "scrape":
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        sys.stdout.write(response.get_data(as_text=True))
    app.extensions["engine"].dispose()


if __name__ == "__main__":
    main(*sys.argv[1:])
