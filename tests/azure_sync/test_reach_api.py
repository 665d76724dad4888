"""Reach and trust on the admin surfaces (issue 16): who may point a registration where,
no port scanner through the preview, errors in plain words with the raw cause one click
away, and the StagedChange.action enum (defect 7). Every answer is checked against
openapi.json."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine

from azure_sync import pages, secrets
from connector.app import create_app
from connector.config import Settings, load_settings
from connector.db import make_sessionmaker
from connector.models import EntraRegistration
from tests.api.contract import check_response
from tests.azure_sync.harness import request_taker
from tests.azure_sync.test_api import run_and_wait
from tests.conftest import ApiClient, make_admin, make_tenant
from tests.fakes.fixtures import FakeApp
from tests.fakes.graph import FakeGraph
from tests.web.conftest import signed_in

ROOT = Path(__file__).resolve().parents[2]
DOD = {"authorityHost": "https://login.microsoftonline.us",
       "graphBaseUrl": "https://dod-graph.microsoft.us/"}


def make_settings(database_url: str, tmp_path: Path, fake_tls: Any,
                  allow_private_hosts: bool) -> Settings:
    return load_settings(
        environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml")},
        overrides={"database": {"url": database_url}, "logging": {"access_log": False},
                   "azure_sync": {"encryption_key": secrets.new_key(),
                                  "ca_bundle": str(fake_tls.ca_path),
                                  "allow_private_hosts": allow_private_hosts,
                                  "graph_scope": "https://graph.microsoft.com/.default"}})


@pytest.fixture
def loopback_app(database_url: str, engine: Engine, tmp_path: Path, fake_tls: Any
                 ) -> Iterator[Flask]:
    """The tests' setting: the fakes live on loopback. A worker takes its "Run now"."""
    settings = make_settings(database_url, tmp_path, fake_tls, True)
    with request_taker(settings, engine):
        yield create_app(settings, engine=engine)


@pytest.fixture
def strict_app(database_url: str, engine: Engine, tmp_path: Path, fake_tls: Any) -> Flask:
    """The default: no private, loopback or link-local hosts."""
    return create_app(make_settings(database_url, tmp_path, fake_tls, False), engine=engine)


def client(app: Flask, engine: Engine, role: str = "partner",
           tenant_id: str | None = None) -> ApiClient:
    email = f"{role}-{tenant_id or 'all'}@example.com"
    admin_id, token = make_admin(engine, email, role, tenant_id)
    return ApiClient(app.test_client(), token, admin_id, email)


def put(api: ApiClient, tenant_id: str, app: FakeApp, **changes: Any) -> Any:
    body = {"directoryId": app.tenant_id, "clientId": app.client_id,
            "clientSecret": app.client_secret, "authorityHost": app.authority_host,
            "graphBaseUrl": app.graph_base_url, **changes}
    response = api.put(f"/tenants/{tenant_id}/entra", body)
    check_response("PUT", f"/tenants/{tenant_id}/entra", response)
    return response


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- who may point a registration where -----------------------------------------------------


@pytest.mark.parametrize("host", ["https://127.0.0.1:8443", "https://169.254.169.254",
                                  "https://graph.example.net"])
def test_a_tenant_admin_may_choose_only_microsofts_clouds(
        loopback_app: Flask, engine: Engine, fake_app: FakeApp, host: str) -> None:
    tenant_id, _ = make_tenant(engine, "Own")
    api = client(loopback_app, engine, "tenant", tenant_id)
    refused = put(api, tenant_id, fake_app, authorityHost=host)
    assert refused.status_code == 400
    assert ("The sign-in (authority) host must be one of Microsoft's clouds"
            in refused.json["detail"])
    assert put(api, tenant_id, fake_app, **{**DOD, "graphBaseUrl": host}).status_code == 400
    chosen = put(api, tenant_id, fake_app, **DOD)
    assert chosen.status_code == 200, chosen.json
    assert chosen.json["graphBaseUrl"] == "https://dod-graph.microsoft.us"


@pytest.mark.parametrize("host", ["https://127.0.0.1:8443", "https://169.254.169.254",
                                  "https://10.0.0.8", "https://localhost:9000",
                                  "https://[::1]:8443", "https://[::ffff:192.168.0.1]"])
def test_nobody_may_choose_a_private_address_unless_the_setting_allows(
        strict_app: Flask, engine: Engine, fake_app: FakeApp, host: str) -> None:
    tenant_id, _ = make_tenant(engine, "Strict")
    api = client(strict_app, engine)
    refused = put(api, tenant_id, fake_app, graphBaseUrl=host)
    assert refused.status_code == 400
    assert "may not be a private, loopback or link-local address" in refused.json["detail"]


def test_a_partner_admin_may_choose_another_public_host(
        strict_app: Flask, engine: Engine, fake_app: FakeApp) -> None:
    tenant_id, _ = make_tenant(engine, "Proxied")
    api = client(strict_app, engine)
    chosen = put(api, tenant_id, fake_app, authorityHost="https://login.example.net",
                 graphBaseUrl="https://graph-gateway.example.net:8443/")
    assert chosen.status_code == 200, chosen.json
    assert chosen.json["graphBaseUrl"] == "https://graph-gateway.example.net:8443"
    assert put(api, tenant_id, fake_app, graphBaseUrl="http://graph.example.net"
               ).status_code == 400


def test_a_tenant_admin_keeps_the_host_a_partner_set(
        loopback_app: Flask, engine: Engine, fake_app: FakeApp) -> None:
    tenant_id, _ = make_tenant(engine, "Kept")
    assert put(client(loopback_app, engine), tenant_id, fake_app).status_code == 200
    tenant_admin = client(loopback_app, engine, "tenant", tenant_id)
    same = put(tenant_admin, tenant_id, fake_app, intervalMinutes=30)
    assert same.status_code == 200 and same.json["intervalMinutes"] == 30
    other = fake_app.graph_base_url.rsplit(":", 1)[0] + f":{closed_port()}"
    assert put(tenant_admin, tenant_id, fake_app, graphBaseUrl=other).status_code == 400


# -- no port scanner, plain words, the raw cause for partner admins -------------------------


def test_an_unreachable_host_in_plain_words_and_generic_to_a_tenant_admin(
        loopback_app: Flask, engine: Engine, fake_app: FakeApp) -> None:
    tenant_id, _ = make_tenant(engine, "Closed")
    partner = client(loopback_app, engine)
    closed = f"https://127.0.0.1:{closed_port()}"
    assert put(partner, tenant_id, fake_app, authorityHost=closed).status_code == 200
    path = f"/tenants/{tenant_id}/entra/preview"

    answer = partner.post(path)
    check_response("POST", path, answer)
    assert answer.status_code == 502
    assert answer.json["detail"] == ("Entra ID could not be reached: connection refused "
                                     "by 127.0.0.1.")
    assert "ConnectionRefusedError" in answer.json["cause"]

    tenant_admin = client(loopback_app, engine, "tenant", tenant_id)
    generic = tenant_admin.post(path)
    check_response("POST", path, generic)
    assert generic.status_code == 502 and "cause" not in generic.json
    assert generic.json["detail"].startswith("Entra ID could not be reached.")
    assert not re.search(r"refused|reset|timed? ?out|127\.0\.0\.1", json.dumps(generic.json))

    run = run_and_wait(partner, tenant_id)
    runs = f"/tenants/{tenant_id}/entra/runs/{run['id']}"
    seen = partner.get(runs)
    check_response("GET", runs, seen)
    assert seen.json["status"] == "failed"
    assert seen.json["error"] == "Entra ID could not be reached: connection refused by 127.0.0.1."
    assert "ConnectionRefusedError" in seen.json["detail"]
    hidden = tenant_admin.get(runs)
    check_response("GET", runs, hidden)
    assert hidden.json["detail"] is None and "refused" not in hidden.json["error"]

    page = f"/admin/tenants/{tenant_id}/entra/runs/{run['id']}"
    partner_page = signed_in(loopback_app, engine, "web-partner@example.com").get(page)
    body = partner_page.get_data(as_text=True)
    assert "connection refused by 127.0.0.1" in body
    assert re.search(r"<details[^>]*>\s*<summary>Technical detail</summary>\s*<pre>"
                     r"[^<]*ConnectionRefusedError", body)
    tenant_page = signed_in(loopback_app, engine, "web-tenant@example.com", "tenant",
                            tenant_id).get(page)
    shown = tenant_page.get_data(as_text=True)
    assert "Entra ID could not be reached." in shown
    assert "<details class=\"error-detail\"" not in shown and "refused" not in shown


# -- defect 7: StagedChange.action --------------------------------------------------------


def test_every_staged_action_the_api_returns_is_in_the_openapi_enum(
        loopback_app: Flask, engine: Engine, fake_app: FakeApp,
        fake_graph: FakeGraph) -> None:
    spec = json.loads((ROOT / "connector/api/openapi.json").read_text())
    enum = spec["components"]["schemas"]["StagedChange"]["properties"]["action"]["enum"]
    # The UI labels every action a round stages; the contract must declare each of them.
    assert set(enum) == set(pages.ACTIONS)

    tenant_id, _ = make_tenant(engine, "Staged")
    api = client(loopback_app, engine)
    directory = fake_graph.directory(fake_app.tenant_id)
    ids = [directory.add_user(f"u{i}@contoso.example") for i in range(8)]
    assert put(api, tenant_id, fake_app, thresholdCount=1,
               scopeDomains=["contoso.example"]).status_code == 200
    assert run_and_wait(api, tenant_id)["status"] == "succeeded"
    directory.update_user(ids[0], userPrincipalName="u0@elsewhere.example")  # out of scope
    directory.disable_user(ids[1])
    directory.soft_delete_user(ids[2])
    directory.hard_delete_user(ids[3])
    held = run_and_wait(api, tenant_id)
    assert held["status"] == "awaiting_approval"
    path = f"/tenants/{tenant_id}/entra/runs/{held['id']}"
    detail = api.get(path)
    check_response("GET", path, detail)
    assert {s["action"] for s in detail.json["staged"]} == {
        "out_of_scope", "disable", "soft_delete", "hard_delete"}


def test_the_registration_form_says_which_hosts_a_tenant_admin_may_choose(
        loopback_app: Flask, engine: Engine, fake_app: FakeApp) -> None:
    tenant_id, _ = make_tenant(engine, "Form")
    web = signed_in(loopback_app, engine, "form-tenant@example.com", "tenant", tenant_id)
    form = f"/admin/tenants/{tenant_id}/entra/registration"
    answer = web.post(form, {
        "directory_id": fake_app.tenant_id, "client_id": fake_app.client_id,
        "client_secret": fake_app.client_secret, "certificate_pem": "",
        "authority_host": "https://169.254.169.254", "graph_base_url": fake_app.graph_base_url,
        "interval_minutes": "10", "threshold_count": "500", "threshold_percent": "20"})
    assert answer.status_code == 303
    shown = web.follow(answer)
    assert "The sign-in (authority) host must be one of Microsoft&#39;s clouds" in shown
    with make_sessionmaker(engine)() as s:
        assert s.get(EntraRegistration, tenant_id) is None  # nothing half-saved
