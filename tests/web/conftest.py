"""Helpers for the admin web UI's tests: a signed-in browser session on the Flask test
client, and realistic seed data pushed through SCIM as an identity provider would."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from connector.commands import UserFields
from connector.db import make_sessionmaker
from connector.directory import Directory
from connector.events import WriteContext
from connector.models import AdminAccount, AuditEntry, Tenant
from connector.status import Source
from tests.support.clients import PASSWORD, ScimClient, quick_hash

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
CONNECTOR_USER = "urn:connector:params:scim:schemas:extension:2.0:User"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives chromium through Playwright")


@dataclass
class WebSession:
    """One browser's cookie jar on the test client, with the CSRF token its pages carry."""

    client: FlaskClient
    csrf: str = ""

    def get(self, path: str, **kw: Any) -> Any:
        response = self.client.get(path, **kw)
        if found := CSRF.search(response.get_data(as_text=True)):
            self.csrf = found.group(1)
        return response

    def post(self, path: str, data: dict[str, Any] | None = None, csrf: bool = True,
             **kw: Any) -> Any:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        response = self.client.post(path, data=form, **kw)
        if found := CSRF.search(response.get_data(as_text=True)):
            self.csrf = found.group(1)
        return response

    def sign_in(self, email: str, password: str = PASSWORD, **kw: Any) -> Any:
        self.get("/admin/sign-in")
        response = self.post("/admin/sign-in", {"email": email, "password": password, **kw})
        if response.status_code == 303:  # signing in issues a new CSRF token: pick it up
            self.get(response.location, follow_redirects=True)
        return response

    def page(self, path: str) -> str:
        """The page's HTML, which must answer 200."""
        response = self.get(path)
        assert response.status_code == 200, (path, response.status_code, response.location)
        return response.get_data(as_text=True)

    def follow(self, response: Any) -> str:
        """After a form's 303: the page it leads to (with its flash message)."""
        assert response.status_code == 303, response.get_data(as_text=True)[:2000]
        return self.page(response.location)


# A cheap hash of PASSWORD, as tests.support.clients.make_admin gives its accounts.
FAST_HASH = quick_hash(PASSWORD)


def make_web_admin(engine: Engine, email: str, role: str = "partner",
                   tenant_id: str | None = None) -> str:
    """An admin account whose password is PASSWORD; returns its id."""
    with make_sessionmaker(engine)() as s:
        account = AdminAccount(id=str(uuid.uuid4()), email=email, email_norm=email.casefold(),
                               role=role, tenant_id=tenant_id, password_hash=FAST_HASH,
                               must_change_password=False, session_epoch=0,
                               created_at=dt.datetime.now(dt.UTC))
        s.add(account)
        s.commit()
        return account.id


def signed_in(app: Flask, engine: Engine, email: str, role: str = "partner",
              tenant_id: str | None = None) -> WebSession:
    make_web_admin(engine, email, role, tenant_id)
    web = WebSession(app.test_client())
    assert web.sign_in(email).status_code == 303
    return web


@pytest.fixture
def partner_web(app: Flask, engine: Engine) -> WebSession:
    return signed_in(app, engine, "partner@example.com")


def audit_actions(engine: Engine) -> list[str]:
    with make_sessionmaker(engine)() as s:
        return list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


# -- seed data ------------------------------------------------------------------------------

FIRST = ["Amira", "Bram", "Chloé", "Dmitri", "Elif", "Femke", "Goran", "Hana", "Ivo", "Jasna",
         "Kees", "Lotte", "Milan", "Nadia", "Olaf", "Petra", "Quinten", "Ruth", "Stefan", "Tess"]
LAST = ["de Vries", "Novak", "Jansen", "Horvat", "Bakker", "Kovač", "Visser", "Dvořák",
        "Smit", "Marković"]


def scim_user(scim: ScimClient, given: str, family: str, **extra: Any) -> dict[str, Any]:
    plain = unicodedata.normalize("NFKD", f"{given}.{family}").encode("ascii", "ignore")
    handle = plain.decode().lower().replace(" ", "")
    body = {"schemas": [USER, CONNECTOR_USER], "userName": f"{handle}@northwind.example",
            "displayName": f"{given} {family}", "externalId": f"entra-{handle}",
            "name": {"givenName": given, "familyName": family},
            "emails": [{"value": f"{handle}@northwind.example", "type": "work",
                        "primary": True}], "active": True, **extra}
    response = scim.post("/Users", body)
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def scim_group(scim: ScimClient, name: str, members: list[str]) -> dict[str, Any]:
    response = scim.post("/Groups", {"schemas": [GROUP], "displayName": name,
                                     "members": [{"value": m} for m in members]})
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


@dataclass
class Seed:
    users: dict[str, str]  # userName -> id
    groups: dict[str, str]  # displayName -> id
    disabled: str  # a user the IdP disabled: on the deleted-users list
    deleted: str  # a user the IdP deleted


def seed_directory(scim: ScimClient, users: int = 24) -> Seed:
    """A tenant as an identity provider leaves it: users (some guests, some with own
    modules), two groups with modules, one user disabled and one deleted."""
    made: dict[str, str] = {}
    for n in range(users):
        given = FIRST[n % len(FIRST)]
        family = LAST[(n * 7 + n // len(FIRST)) % len(LAST)]
        extra: dict[str, Any] = {}
        if n % 6 == 5:
            extra["userType"] = "Guest"
        if n % 4 == 0:
            extra[CONNECTOR_USER] = {"modules": ["Hybrid"]}
        body = scim_user(scim, given, family, **extra)
        made[body["userName"]] = body["id"]
    ids = list(made.values())
    groups = {g["displayName"]: g["id"] for g in (
        scim_group(scim, "Sales", ids[: users // 2]),
        scim_group(scim, "Everyone", ids))}
    disabled = scim_user(scim, "Vera", "Disabled")
    assert scim.patch(f"/Users/{disabled['id']}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}]}).status_code == 200
    deleted = scim_user(scim, "Wim", "Deleted")
    assert scim.delete(f"/Users/{deleted['id']}").status_code == 204
    return Seed(made, groups, disabled["id"], deleted["id"])


def entra_user(engine: Engine, tenant_id: str, user_name: str) -> str:
    """A user the Entra ID poller created (until azure_sync exists, through the directory
    with the poller's source, as the poller will)."""
    with make_sessionmaker(engine, writes=True)() as s:
        tenant = s.get(Tenant, tenant_id)
        ctx = WriteContext(tenant_id, Source.ENTRA_SYNC, "entra-sync", "test",
                           dt.datetime.now(dt.UTC))
        user = Directory(s, tenant, ctx).create_user(UserFields(user_name=user_name,
                                                                active=True))
        s.commit()
        return user.id


def rename_tenant(engine: Engine, tenant_id: str, name: str) -> None:
    with make_sessionmaker(engine)() as s:
        s.get(Tenant, tenant_id).name = name  # type: ignore[union-attr]
        s.commit()
