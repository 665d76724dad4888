"""The web app on the test database: its settings, the Flask test client, and the same app
served on loopback for clients that speak real HTTP (browsers, scim2-tester,
schemathesis)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from werkzeug.serving import make_server

from connector import sealed
from connector.app import create_app
from connector.config import Settings, load_settings
from tests.support.clients import make_tenant


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml")},
        # A key, as `connector bootstrap` makes one: admins' two-factor secrets are sealed.
        overrides={"database": {"url": database_url}, "logging": {"access_log": False},
                   "azure_sync": {"encryption_key": sealed.new_key()}},
    )


@pytest.fixture
def app(settings: Settings, engine: Engine) -> Flask:
    return create_app(settings, engine=engine)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class LiveServer:
    url: str
    tenant_id: str
    token: str


@pytest.fixture
def live_server(app: Flask, engine: Engine) -> Iterator[LiveServer]:
    """The app served by a threaded WSGI server on 127.0.0.1, on a free port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    tenant_id, token = make_tenant(engine, "Live")
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", tenant_id, token)
    finally:
        server.shutdown()
        thread.join(timeout=10)
