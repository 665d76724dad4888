"""Maximum lengths on the admin surfaces (docs/scim.md, "Maximum lengths"): the admin
API refuses an over-long text with a 400 problem naming the member, the web form with a
message after its redirect, and nothing is written; on SQLite as on PostgreSQL."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import Engine, func, select

from connector import limits
from connector.db import make_sessionmaker
from connector.models import User
from tests.support.clients import ApiClient, ScimClient
from tests.web.conftest import signed_in


def users(engine: Engine) -> int:
    with make_sessionmaker(engine)() as s:
        return int(s.scalar(select(func.count()).select_from(User)) or 0)


def refused(response: Any, member: str) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert member in response.json["detail"] and "at most" in response.json["detail"]


def test_the_api_refuses_over_long_texts_and_keeps_those_at_the_limit(
        partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    url = f"/tenants/{scim.tenant_id}/users"
    at = "é" * limits.NAME
    for member in ("userName", "displayName", "givenName", "familyName"):
        body = {"userName": "u@example.com", member: "x" * 100_000}
        refused(partner.post(url, body), member)
    refused(partner.post(url, {"userName": "u@example.com",
                               "email": "a@" + "b" * limits.NAME}), "email")
    refused(partner.post(url, {"userName": "u@example.com", "modules": ["m" * 65]}),
            "modules[0]")
    assert users(engine) == 0
    made = partner.post(url, {"userName": at, "displayName": at, "givenName": at,
                              "familyName": at, "email": "a@" + "b" * (limits.NAME - 2)})
    assert made.status_code == 201, made.get_data(as_text=True)
    assert made.json["userName"] == at
    # The directory's own check names the attribute when a surface lets a value through
    # (case folding: 256 'ﬃ' are 768 characters to compare).
    folded = partner.post(url, {"userName": "ﬃ" * limits.NAME})
    assert folded.status_code == 400 and folded.json["field"] == "userName"
    assert folded.json["type"] == "urn:connector:problem:invalid-value"
    assert users(engine) == 1


def test_a_web_form_with_an_over_long_module_answers_with_a_redirect_and_a_message(
        app: Flask, engine: Engine, partner: ApiClient, scim: ScimClient) -> None:
    made = partner.post(f"/tenants/{scim.tenant_id}/users", {"userName": "u@example.com"})
    web = signed_in(app, engine, "web@example.com")
    path = f"/admin/tenants/{scim.tenant_id}/users/{made.json['id']}/modules"
    response = web.post(path, {"modules": ["m" * 100_000]})
    assert response.status_code == 303
    html = web.follow(response)
    assert "&#39;modules&#39; is 100,000 characters long" in html
    assert "at most 64" in html
