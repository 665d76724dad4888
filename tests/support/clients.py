"""Who talks to the app in tests: an identity provider over SCIM with a tenant's token,
and admins over the admin API with a personal API token; with the tenants and admin
accounts they need."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from werkzeug.security import generate_password_hash

from connector import admins, tenants
from connector.db import make_sessionmaker
from connector.models import AuditEntry

SCIM = "/scim/v2"
API = "/api/v1"
PASSWORD = "correct horse battery staple"


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


# -- SCIM -------------------------------------------------------------------------------


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
    """A tenant and its SCIM token: (id, token). Written as the product writes (a
    writing session: on SQLite, BEGIN IMMEDIATE), so a worker thread of the test writing
    at the same moment makes it wait, not fail with "database is locked"."""
    with make_sessionmaker(engine, writes=True)() as s:
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


# -- the admin API ----------------------------------------------------------------------


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


def quick_hash(password: str) -> str:
    """A cheap PBKDF2 hash of the password (see `make_admin`)."""
    return generate_password_hash(password, method="pbkdf2:sha256:1000")


def make_admin(engine: Engine, email: str, role: str = "partner",
               tenant_id: str | None = None, password: str | None = PASSWORD
               ) -> tuple[str, str]:
    """An admin account with a chosen password and a personal API token: (id, token).

    The product hashes passwords with scrypt (~0.2 s a hash, on purpose); the account is
    made by the product's own `create_admin`, but with a cheap PBKDF2 hash of the same
    password. Werkzeug checks a hash by the method it names, so signing in takes the real
    path without costing a fifth of a second per test. Passwords set later (a change, a
    reset) are hashed with scrypt as in production.
    """
    now = dt.datetime.now(dt.UTC)
    with (make_sessionmaker(engine, writes=True)() as s,  # as make_tenant
          mock.patch.object(admins, "_hash_password", quick_hash)):
        account, _ = admins.create_admin(s, email, role, tenant_id, now, password=password)
        _, clear = admins.create_token(s, account.id, "tests", now)
        s.commit()
        return account.id, clear


CLEAR_TOTP_SECRET = "JBSWY3DPEHPK3PXP"


def insert_admin_with_clear_totp(engine: Engine) -> None:
    """An admin row as revisions before 0029 stored it: the TOTP secret in clear (raw
    SQL, so that it works on a schema of that revision too)."""
    from sqlalchemy import text

    with engine.begin() as c:
        c.execute(text(
            "INSERT INTO admin_accounts (id, email, email_norm, role, password_hash,"
            " must_change_password, session_epoch, created_at, totp_secret) VALUES ('a1',"
            " 'a@example.com', 'a@example.com', 'partner', 'x', :no, 0, :at, :secret)"),
            {"no": False, "at": dt.datetime(2026, 1, 1), "secret": CLEAR_TOTP_SECRET})


def add_audit_lines(engine: Engine, tenant_id: str | None, admin_id: str, k: int) -> None:
    """k audit lines of an admin's actions, as the admin API records them."""
    now = dt.datetime.now(dt.UTC)
    with make_sessionmaker(engine)() as s:
        s.add_all(AuditEntry(at=now, admin_id=admin_id, actor="partner@example.com",
                             action="module.added", tenant_id=tenant_id, target=f"Module {n}",
                             detail={"why": "test"}, remote_addr="127.0.0.1",
                             correlation_id=uuid.uuid4().hex) for n in range(k))
        s.commit()


@pytest.fixture
def partner(client: FlaskClient, engine: Engine) -> ApiClient:
    admin_id, token = make_admin(engine, "partner@example.com")
    return ApiClient(client, token, admin_id, "partner@example.com")


@pytest.fixture
def tenant_admin(app: Flask, engine: Engine, scim: ScimClient) -> ApiClient:
    """A tenant admin of the `scim` fixture's tenant, on its own client (own cookies)."""
    admin_id, token = make_admin(engine, "ta@example.com", "tenant", scim.tenant_id)
    return ApiClient(app.test_client(), token, admin_id, "ta@example.com")
