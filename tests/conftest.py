"""Shared fixtures: every storage-backed test runs on real SQLite and real PostgreSQL.

PostgreSQL: a fresh database is created per test session on the server named by
CONNECTOR_TEST_PG_URL (default: postgres@127.0.0.1:5432, trust auth, via database
`test`) and dropped at the end. Tables are emptied after each test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from connector import migrate
from connector.config import DatabaseSettings
from connector.db import make_engine, make_sessionmaker
from connector.models import Base

PG_ADMIN_DSN = os.environ.get(
    "CONNECTOR_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)
PG_URL_TEMPLATE = os.environ.get(
    "CONNECTOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[str]:
    """A migrated, empty database of each kind, for the whole session."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("sqlite") / "connector.sqlite3"
        yield f"sqlite:///{path}"
        return
    name = f"connector_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL_TEMPLATE.format(db=name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(DatabaseSettings(url=database_url, pool_size=5))
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _empty_tables(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "engine" not in request.fixturenames:
        return
    engine: Engine = request.getfixturevalue("engine")
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session the test owns; commit to make rows visible to other connections."""
    with make_sessionmaker(engine)() as session:
        yield session


# -- the web app --------------------------------------------------------------------

import datetime as dt  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402

from connector import tenants  # noqa: E402
from connector.app import create_app  # noqa: E402
from connector.config import Settings, load_settings  # noqa: E402

SCIM = "/scim/v2"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml")},
        overrides={"database": {"url": database_url}, "logging": {"access_log": False}},
    )


@pytest.fixture
def app(settings: Settings, engine: Engine) -> Flask:
    return create_app(settings, engine=engine)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class HttpVerbs:
    """get/post/put/patch/delete on top of a client's `request`."""

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)


@dataclass
class ScimClient(HttpVerbs):
    """Speaks SCIM to the app with one tenant's token."""

    client: FlaskClient
    token: str
    tenant_id: str
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", **self.headers,
                   **kwargs.pop("headers", {})}
        if body is not None:
            kwargs["json"] = body
            headers.setdefault("Content-Type", "application/scim+json")
        return self.client.open(SCIM + path, method=method, headers=headers, **kwargs)



def make_tenant(engine: Engine, name: str = "Acme") -> tuple[str, str]:
    with make_sessionmaker(engine)() as s:
        tenant, issued = tenants.create_tenant(s, name, dt.datetime.now(dt.UTC))
        s.commit()
        return tenant.id, issued.token


@pytest.fixture
def scim(client: FlaskClient, engine: Engine) -> ScimClient:
    tenant_id, token = make_tenant(engine)
    return ScimClient(client, token, tenant_id)


@pytest.fixture
def other_scim(client: FlaskClient, engine: Engine) -> ScimClient:
    tenant_id, token = make_tenant(engine, "Other Corp")
    return ScimClient(client, token, tenant_id)


# -- a live server on loopback, for clients that speak real HTTP ---------------------

import threading  # noqa: E402

from werkzeug.serving import make_server  # noqa: E402


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


# -- the admin API ----------------------------------------------------------------------

from connector import admins  # noqa: E402

API = "/api/v1"


@dataclass
class ApiClient(HttpVerbs):
    """Speaks to the admin API with one admin's personal API token."""

    client: FlaskClient
    token: str
    admin_id: str
    email: str

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        if body is not None:
            kwargs["json"] = body
        return self.client.open(API + path, method=method, headers=headers, **kwargs)



PASSWORD = "correct horse battery staple"


def make_admin(engine: Engine, email: str, role: str = "partner",
               tenant_id: str | None = None, password: str | None = PASSWORD
               ) -> tuple[str, str]:
    """An admin account with a chosen password and a personal API token: (id, token)."""
    now = dt.datetime.now(dt.UTC)
    with make_sessionmaker(engine)() as s:
        account, _ = admins.create_admin(s, email, role, tenant_id, now, password=password)
        _, clear = admins.create_token(s, account.id, "tests", now)
        s.commit()
        return account.id, clear


@pytest.fixture
def partner(client: FlaskClient, engine: Engine) -> ApiClient:
    admin_id, token = make_admin(engine, "partner@example.com")
    return ApiClient(client, token, admin_id, "partner@example.com")


@pytest.fixture
def tenant_admin(app: Flask, engine: Engine, scim: ScimClient) -> ApiClient:
    """A tenant admin of the `scim` fixture's tenant, on its own client (own cookies)."""
    admin_id, token = make_admin(engine, "ta@example.com", "tenant", scim.tenant_id)
    return ApiClient(app.test_client(), token, admin_id, "ta@example.com")
