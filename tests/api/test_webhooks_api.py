"""Webhook endpoints over the admin API (/api/v1/webhooks, /tenants/{id}/webhooks): the
secret shown once, rotation with both secrets signing during the grace period, enable and
disable, a test ping and a manual redelivery answered by a real receiver on loopback,
replay from a feed cursor, the delivery log, who may manage what, bad input; every
answer checked against openapi.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from connector import sealed
from connector.api import PREFIX
from connector.config import Settings, load_settings
from connector.db import make_sessionmaker
from connector.webhooks.dispatcher import Dispatcher
from tests.api.contract import check_response
from tests.fakes.receiver import Answer, Receiver, verify
from tests.scim.factories import created, patch, user
from tests.support.clients import ApiClient, ScimClient, make_admin, make_tenant
from tests.support.webhooks import receiving_settings

DEACTIVATE = patch({"op": "replace", "path": "active", "value": False})


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return receiving_settings(database_url, tmp_path)


def call(api: ApiClient, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    response = api.request(method, path, body, **kw)
    check_response(method, PREFIX + path, response)
    return response


def test_create_ping_rotate_and_manage_a_tenant_endpoint(
        partner: ApiClient, scim: ScimClient, receiver: Receiver) -> None:
    base = f"/tenants/{scim.tenant_id}/webhooks"
    made = call(partner, "POST", base, {"url": receiver.url, "description": "HR system",
                                        "eventTypes": ["user.status_changed"]})
    assert made.status_code == 201, made.json
    endpoint = made.json
    secret = endpoint.pop("secret")
    assert secret.startswith("whsec_")
    assert (endpoint["tenantId"], endpoint["enabled"], endpoint["eventTypes"]) == (
        scim.tenant_id, True, ["user.status_changed"])
    path = f"{base}/{endpoint['id']}"
    shown = call(partner, "GET", path).json
    assert "secret" not in shown and shown == {**endpoint, "updated": shown["updated"]}
    assert [e["id"] for e in call(partner, "GET", base).json["items"]] == [endpoint["id"]]

    ping = call(partner, "POST", f"{path}/ping")
    assert ping.status_code == 200, ping.json
    assert (ping.json["succeeded"], ping.json["status"], ping.json["type"],
            ping.json["manual"]) == (True, 200, "webhook.ping", True)
    [message] = receiver.accepted
    assert verify(message, secret)["data"]["endpointId"] == endpoint["id"]

    rotated = call(partner, "POST", f"{path}/rotate-secret").json
    new_secret = rotated["secret"]
    assert new_secret != secret and rotated["secretRotatedGraceUntil"]
    call(partner, "POST", f"{path}/ping")
    both = receiver.accepted[-1]
    assert len(both.headers["webhook-signature"].split(" ")) == 2
    verify(both, secret)  # either secret verifies during the grace period
    verify(both, new_secret)

    changed = call(partner, "PATCH", path, {"description": "HR", "eventTypes": []}).json
    assert (changed["description"], changed["eventTypes"]) == ("HR", [])
    assert call(partner, "POST", f"{path}/disable").json["enabled"] is False
    assert call(partner, "POST", f"{path}/enable").json["enabled"] is True
    log = call(partner, "GET", f"{path}/attempts").json["items"]
    assert [a["type"] for a in log] == ["webhook.ping", "webhook.ping"]
    assert call(partner, "GET", f"{path}/attempts", query_string={"limit": 1,
                                                                   "before": log[0]["id"]}
                ).json["items"] == log[1:]
    assert call(partner, "DELETE", path).status_code == 204
    assert call(partner, "GET", path).status_code == 404


def test_redelivery_and_replay(partner: ApiClient, scim: ScimClient, receiver: Receiver,
                               engine: Engine, settings: Settings) -> None:
    base = f"/tenants/{scim.tenant_id}/webhooks"
    endpoint = call(partner, "POST", base, {"url": receiver.url}).json
    path = f"{base}/{endpoint['id']}"
    uid = created(scim.post("/Users", user()))["id"]
    assert scim.patch(f"/Users/{uid}", DEACTIVATE).status_code == 200
    Dispatcher(make_sessionmaker(engine), settings).run_pass()
    first = [e["id"] for e in receiver.events()]
    assert len(first) >= 3  # created, status, deleted list
    [delivery] = call(partner, "GET", f"{path}/attempts").json["items"]

    again = call(partner, "POST", f"{path}/attempts/{delivery['id']}/redeliver")
    assert again.status_code == 200, again.json
    assert (again.json["manual"], again.json["succeeded"], again.json["webhookId"]) == (
        True, True, delivery["webhookId"])  # the same message: a receiver dedupes it
    assert [e["id"] for e in receiver.accepted[-1].events] == first

    start = call(partner, "GET", f"/tenants/{scim.tenant_id}/events",
                 query_string={"limit": 1}).json["nextCursor"]  # after the tenant's first
    replayed = call(partner, "POST", f"{path}/replay", {"after": start})
    assert replayed.status_code == 200 and replayed.json["cursor"] == start
    Dispatcher(make_sessionmaker(engine), settings).run_pass()
    assert [e["id"] for e in receiver.events()][-len(first):] == first

    bad = call(partner, "POST", f"{path}/replay", {"after": "nonsense"})
    assert bad.status_code == 400
    ping = call(partner, "POST", f"{path}/ping").json
    assert call(partner, "POST", f"{path}/attempts/{ping['id']}/redeliver").status_code == 409


def test_a_failed_ping_says_why(partner: ApiClient, scim: ScimClient,
                                receiver: Receiver) -> None:
    receiver.answer = lambda _r: Answer(500, body=b"database down")
    endpoint = call(partner, "POST", f"/tenants/{scim.tenant_id}/webhooks",
                    {"url": receiver.url}).json
    ping = call(partner, "POST", f"/tenants/{scim.tenant_id}/webhooks/{endpoint['id']}/ping")
    assert ping.status_code == 200
    assert (ping.json["succeeded"], ping.json["status"], ping.json["response"]) == (
        False, 500, "database down")
    assert "500" in ping.json["error"]


def test_partner_wide_endpoints_are_the_partners(
        partner: ApiClient, tenant_admin: ApiClient, scim: ScimClient, engine: Engine,
        receiver: Receiver) -> None:
    made = call(partner, "POST", "/webhooks", {"url": receiver.url})
    assert made.status_code == 201 and made.json["tenantId"] is None
    assert call(tenant_admin, "GET", "/webhooks").status_code == 403
    assert call(tenant_admin, "POST", "/webhooks", {"url": receiver.url}).status_code == 403
    # A tenant admin manages its own tenant's endpoints, and sees no other tenant's.
    own = call(tenant_admin, "POST", f"/tenants/{scim.tenant_id}/webhooks",
               {"url": receiver.url})
    assert own.status_code == 201
    other, _ = make_tenant(engine, "Other")
    assert call(tenant_admin, "GET", f"/tenants/{other}/webhooks").status_code == 404
    # An endpoint is found only under its own scope.
    assert call(partner, "GET", f"/tenants/{scim.tenant_id}/webhooks/{made.json['id']}"
                ).status_code == 404
    assert call(partner, "GET", f"/webhooks/{own.json['id']}").status_code == 404


@pytest.mark.parametrize("body", [
    {"url": "ftp://example.com/"}, {"url": "http://hooks.example.com/"},
    {"url": "https://user:secret@hooks.example.com/"}, {"url": ""},
    {"url": "https://hooks.example.com/", "eventTypes": ["user.nonsense"]},
    {"url": "https://hooks.example.com/", "extra": 1}, {},
])
def test_bad_input_is_a_400(partner: ApiClient, scim: ScimClient, body: dict[str, Any]
                            ) -> None:
    answer = call(partner, "POST", f"/tenants/{scim.tenant_id}/webhooks", body)
    assert answer.status_code == 400, answer.json
    assert answer.json["detail"]


def test_private_targets_are_refused_by_default(client: Any, engine: Engine,
                                                database_url: str, tmp_path: Path) -> None:
    from connector.app import create_app

    strict = load_settings(environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml")},
                           overrides={"database": {"url": database_url},
                                      "azure_sync": {"encryption_key": sealed.new_key()}})
    app = create_app(strict, engine=engine)
    tenant_id, _ = make_tenant(engine)
    _, token = make_admin(engine, "p2@example.com")
    api = ApiClient(app.test_client(), token, "", "p2@example.com")
    for url in ("https://127.0.0.1:8443/", "https://10.0.0.5/", "https://[fd00::1]/",
                "https://169.254.169.254/", "http://127.0.0.1:9/"):
        answer = call(api, "POST", f"/tenants/{tenant_id}/webhooks", {"url": url})
        assert answer.status_code == 400, url
        assert "address" in answer.json["detail"] or "https://" in answer.json["detail"]


def test_the_docs_receiver_example_handles_what_is_sent(
        partner: ApiClient, scim: ScimClient, receiver: Receiver, engine: Engine,
        settings: Settings) -> None:
    """docs/webhooks.md's "Verifying a message" code, run as written on what the
    connector really sends: a test ping, a batch and a single event."""
    doc = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    code = doc.split("## Verifying a message", 1)[1].split("```python\n", 1)[1]
    code = code.split("```", 1)[0]
    made = call(partner, "POST", f"/tenants/{scim.tenant_id}/webhooks",
                {"url": receiver.url}).json
    handled: list[str] = []

    class Forbidden(Exception):
        pass

    namespace: dict[str, Any] = {"Forbidden": Forbidden, "handle": lambda e: handled.append(
        e["id"]), "already_handled": lambda event_id: event_id in handled}
    exec(code.replace('"whsec_…"', repr(made["secret"])), namespace)  # noqa: S102
    assert call(partner, "POST", f"/tenants/{scim.tenant_id}/webhooks/{made['id']}/ping"
                ).json["succeeded"]
    uid = created(scim.post("/Users", user()))["id"]
    Dispatcher(make_sessionmaker(engine), settings).run_pass()  # a batch: several events
    assert scim.patch(f"/Users/{uid}", DEACTIVATE).status_code == 200
    Dispatcher(make_sessionmaker(engine), settings).run_pass()
    kinds = [m.payload["type"] for m in receiver.accepted]
    assert kinds[0] == "webhook.ping" and "batch" in kinds
    for message in receiver.accepted:
        namespace["receive"](message.body, message.headers)
    assert handled == [e["id"] for e in receiver.events()] and handled
