"""Webhooks in the admin web UI on the Flask test client: a tenant's endpoints and the
partner-wide ones, the secret shown once, settings refused field by field, rotate,
disable and delete behind a confirmation, a test ping and a redelivery answered by a
real receiver on loopback, replay from a cursor, the delivery log's paging and detail,
the notification's link, who may see what; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select

from connector import notify
from connector.config import Settings
from connector.db import make_sessionmaker
from connector.models import WebhookAttempt, WebhookEndpoint
from connector.webhooks import service
from connector.webhooks.dispatcher import Dispatcher
from tests.fakes.receiver import Answer, Receiver, verify
from tests.scim.factories import created, patch, user
from tests.support.clients import ScimClient, make_tenant
from tests.support.webhooks import receiving_settings
from tests.web.conftest import WebSession, audit_actions, signed_in
from tests.web.test_hostile_forms import Forms, hostile

SECRET = re.compile(r'id="secret" type="text" value="(whsec_[^"]+)"')
DEACTIVATE = patch({"op": "replace", "path": "active", "value": False})


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return receiving_settings(database_url, tmp_path)


@pytest.fixture
def web(app: Flask, engine: Engine) -> WebSession:
    return signed_in(app, engine, "partner@example.com")


def text(html: str) -> str:
    """The page's visible text, roughly: tags dropped, whitespace folded, and no space
    before a full stop or comma that follows a tag (`<time>…</time>.`)."""
    words = " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())
    return re.sub(r" ([.,])", r"\1", words)


def endpoints(engine: Engine) -> list[WebhookEndpoint]:
    with make_sessionmaker(engine)() as s:
        return list(s.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.created_at)))


def attempts(engine: Engine) -> list[WebhookAttempt]:
    with make_sessionmaker(engine)() as s:
        return list(s.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)))


def create(web: WebSession, base: str, url: str, **form: Any) -> tuple[str, str]:
    """Add an endpoint through the form: (its page, the secret shown once)."""
    web.get(f"{base}/new")
    response = web.post(base, {"url": url, **form})
    assert response.status_code == 303, text(response.get_data(as_text=True))[:500]
    html = web.page(response.location)
    secret = SECRET.search(html)
    assert secret, text(html)[:1000]
    page = re.search(r'href="([^"]+)">Go to the endpoint', html)
    assert page
    return page.group(1), secret.group(1)


# -- a tenant's endpoint, end to end -----------------------------------------------------------


def test_create_shows_the_secret_once_and_a_reload_repeats_nothing(
        web: WebSession, scim: ScimClient, engine: Engine, receiver: Receiver) -> None:
    base = f"/admin/tenants/{scim.tenant_id}/webhooks"
    assert "No endpoints yet" in text(web.page(base))
    web.get(f"{base}/new")
    response = web.post(base, {"url": receiver.url, "description": "HR system",
                               "event_types": ["user.created", "user.status_changed"]})
    assert response.status_code == 303
    secret_page = response.location
    html = web.page(secret_page)
    assert "Webhook endpoint created" in html
    secret = SECRET.search(html)
    assert secret and secret.group(1).startswith("whsec_")
    [endpoint] = endpoints(engine)
    assert (endpoint.tenant_id, endpoint.url, endpoint.description, endpoint.event_types) == (
        scim.tenant_id, receiver.url, "HR system", ["user.created", "user.status_changed"])

    again = web.page(secret_page)  # a reload: the secret is gone, nothing re-issued
    assert "whsec_" not in again and "was shown once and cannot be shown again" in text(again)
    assert len(endpoints(engine)) == 1
    assert audit_actions(engine).count("webhook.created") == 1

    listed = text(web.page(base))
    assert receiver.url in listed and "HR system" in listed and "Delivering" in listed
    assert "user.created, user.status_changed" in listed

    # The secret shown is the one messages are signed with.
    page = f"{base}/{endpoint.id}"
    answer = web.post(f"{page}/ping")
    assert answer.status_code == 303
    shown = text(web.page(answer.location))
    assert "Test ping delivered: the receiver answered 200" in shown
    assert verify(receiver.accepted[-1], secret.group(1))["type"] == "webhook.ping"


def test_a_refused_form_keeps_what_was_typed_with_the_error_next_to_the_field(
        web: WebSession, scim: ScimClient, engine: Engine) -> None:
    base = f"/admin/tenants/{scim.tenant_id}/webhooks"
    web.get(f"{base}/new")
    response = web.post(base, {"url": "ftp://files.example/in", "description": "Files",
                               "event_types": ["group.created"]})
    assert response.status_code == 303 and response.location == f"{base}/new"
    html = web.page(response.location)
    assert 'id="url-error"' in html and "The URL must be an https:// URL" in text(html)
    assert 'value="ftp://files.example/in"' in html and 'value="Files"' in html
    assert re.search(r'value="group.created"\s+checked', html)
    assert not re.search(r'value="user.created"\s+checked', html)
    assert endpoints(engine) == []
    assert 'id="url-error"' not in web.page(f"{base}/new")  # a reload: the blank form

    web.get(f"{base}/new")
    response = web.post(base, {"url": "https://hooks.example/in", "description": "x" * 201})
    html = web.page(response.location)
    assert 'id="description-error"' in html and "The description must be text" in text(html)
    assert endpoints(engine) == []


def test_settings_rotate_disable_enable_and_delete(
        web: WebSession, scim: ScimClient, engine: Engine, receiver: Receiver) -> None:
    base = f"/admin/tenants/{scim.tenant_id}/webhooks"
    page, first_secret = create(web, base, receiver.url)
    assert "Every event type" in text(web.page(base))

    # Settings: change the types; then a bad URL comes back with the types as ticked.
    response = web.post(f"{page}/settings", {"url": receiver.url, "description": "CRM",
                                             "event_types": ["user.deleted"]})
    assert "The endpoint's settings are saved." in text(web.follow(response))
    assert (endpoints(engine)[0].description, endpoints(engine)[0].event_types) == (
        "CRM", ["user.deleted"])
    response = web.post(f"{page}/settings", {"url": "not a url", "description": "CRM 2",
                                             "event_types": ["group.renamed"]})
    assert response.location == f"{page}#settings"
    html = web.page(page)
    assert 'id="url-error"' in html and 'value="not a url"' in html
    assert re.search(r'value="group.renamed"\s+checked', html)
    assert not re.search(r'value="user.deleted"\s+checked', html)
    assert endpoints(engine)[0].description == "CRM"  # nothing saved
    response = web.post(f"{page}/settings", {"url": receiver.url, "description": "CRM"})
    assert "saved" in text(web.follow(response))
    assert endpoints(engine)[0].event_types == []  # none ticked: every type
    response = web.post(f"{page}/settings", {"url": receiver.url, "description": "CRM"})
    assert "Nothing changed" in text(web.follow(response))

    # Rotate: asks first; the new secret once; both sign during the grace period.
    assert "Rotate the signing secret?" in web.page(f"{page}/rotate")
    assert len(endpoints(engine)) == 1 and "webhook.secret_rotated" not in audit_actions(engine)
    response = web.post(f"{page}/rotate")
    html = web.page(response.location)
    new_secret = SECRET.search(html)
    assert new_secret and new_secret.group(1) != first_secret
    assert "The previous secret signs them too" in text(html)
    assert "whsec_" not in web.page(response.location)
    web.post(f"{page}/ping")
    verify(receiver.accepted[-1], first_secret)
    verify(receiver.accepted[-1], new_secret.group(1))
    assert "Previous signing secret" in text(web.page(page))

    # Disable: asks first, says so; enable again.
    assert "Disable this endpoint?" in web.page(f"{page}/disable")
    assert endpoints(engine)[0].enabled
    shown = text(web.follow(web.post(f"{page}/disable")))
    assert "The endpoint is disabled" in shown and "Disabled by an admin on" in shown
    assert not endpoints(engine)[0].enabled
    assert "Disabled" in text(web.page(base))
    shown = text(web.follow(web.post(f"{page}/enable")))
    assert "The endpoint is enabled" in shown and endpoints(engine)[0].enabled
    assert "Nothing changed" in text(web.follow(web.post(f"{page}/enable")))

    # Delete: asks first, then the list has it no more.
    assert "Delete this endpoint?" in web.page(f"{page}/delete")
    assert len(endpoints(engine)) == 1
    response = web.post(f"{page}/delete")
    assert response.location == base
    assert "is deleted, with its delivery log" in text(web.follow(response))
    assert endpoints(engine) == [] and attempts(engine) == []
    assert web.get(page).status_code == 404
    assert [a for a in audit_actions(engine) if a.startswith("webhook.")] == [
        "webhook.created", "webhook.updated", "webhook.updated", "webhook.secret_rotated",
        "webhook.pinged", "webhook.disabled", "webhook.enabled", "webhook.deleted"]


def test_a_failing_ping_says_what_the_receiver_answered(
        web: WebSession, scim: ScimClient, engine: Engine, receiver: Receiver) -> None:
    base = f"/admin/tenants/{scim.tenant_id}/webhooks"
    page, _secret = create(web, base, receiver.url)
    receiver.answer = lambda _r: Answer(503, body=b"<h1>down for maintenance</h1>")
    response = web.post(f"{page}/ping")
    [attempt] = attempts(engine)
    assert response.location == f"{page}/attempts/{attempt.id}"
    html = web.follow(response)
    shown = text(html)
    assert "Test ping failed." in shown and "The receiver answered 503" in shown
    assert "&lt;h1&gt;down for maintenance&lt;/h1&gt;" in html  # the excerpt, escaped
    assert "A test ping carries no events" in shown and "Redeliver</button>" not in html


def test_the_delivery_log_pages_and_an_attempt_is_redelivered(
        web: WebSession, scim: ScimClient, engine: Engine, receiver: Receiver,
        settings: Settings) -> None:
    base = f"/admin/tenants/{scim.tenant_id}/webhooks"
    page, _secret = create(web, base, receiver.url)
    uid = created(scim.post("/Users", user()))["id"]
    assert scim.patch(f"/Users/{uid}", DEACTIVATE).status_code == 200
    Dispatcher(make_sessionmaker(engine), settings).run_pass()
    [delivery] = attempts(engine)
    assert delivery.event_count >= 3 and not delivery.manual
    log = text(web.page(page))
    assert "Delivered: the last message arrived at" in log and "batch" in log

    detail = web.page(f"{page}/attempts/{delivery.id}")
    assert delivery.webhook_id in detail and "Delivery: delivered" in text(detail)
    response = web.post(f"{page}/attempts/{delivery.id}/redeliver")
    again = attempts(engine)[-1]
    assert response.location == f"{page}/attempts/{again.id}"
    shown = text(web.follow(response))
    assert "Redelivery delivered: the receiver answered 200" in shown
    assert (again.manual, again.webhook_id) == (True, delivery.webhook_id)
    assert [e["id"] for e in receiver.accepted[-1].events] == [
        e["id"] for e in receiver.accepted[0].events]
    assert "Redelivery: delivered" in shown

    for _ in range(3):
        web.post(f"{page}/ping")
    with pytest.MonkeyPatch.context() as mp:  # a short page, to see paging with a few rows
        mp.setattr("connector.web.webhooks.LOG_PER_PAGE", 2)
        newest = web.page(page)
        ids = [int(i) for i in re.findall(r"/attempts/(\d+)\"", newest)]
        assert ids == sorted(ids, reverse=True) and len(ids) == 2
        older = re.search(r'href="([^"]+)#log" rel="next">Older', newest)
        assert older
        second = web.page(unescape(older.group(1)))
        more = [int(i) for i in re.findall(r"/attempts/(\d+)\"", second)]
        assert len(more) == 2 and max(more) < min(ids) and "← Newest" in second
        last = re.search(r'href="([^"]+)#log" rel="next">Older', second)
        assert last
        final = web.page(unescape(last.group(1)))
        assert [int(i) for i in re.findall(r"/attempts/(\d+)\"", final)] == [delivery.id]
        assert "Older →" not in final
    response = web.get(f"{page}?before=soon")
    assert response.status_code == 303
    assert "before must be a delivery-log entry number" in text(web.page(response.location))
    assert web.get(f"{page}/attempts/{again.id + 100}").status_code == 404


def test_replay_from_a_cursor_or_from_the_oldest_event(
        web: WebSession, scim: ScimClient, engine: Engine, receiver: Receiver,
        settings: Settings) -> None:
    base = f"/admin/tenants/{scim.tenant_id}/webhooks"
    created(scim.post("/Users", user("early@example.com")))
    page, _secret = create(web, base, receiver.url)
    Dispatcher(make_sessionmaker(engine), settings).run_pass()
    assert receiver.events() == []  # a new endpoint starts at "now"

    response = web.post(f"{page}/replay", {"cursor": "not-a-cursor"})
    assert response.location == f"{page}#replay"
    html = web.page(page)
    assert 'id="cursor-error"' in html and 'value="not-a-cursor"' in html
    assert "webhook.replayed" not in audit_actions(engine)

    shown = text(web.follow(web.post(f"{page}/replay", {"cursor": ""})))
    assert "every event from the oldest event in the feed is delivered again" in shown
    Dispatcher(make_sessionmaker(engine), settings).run_pass()
    assert any(e["type"] == "user.created" for e in receiver.events())

    cursor = service.position(endpoints(engine)[0]).encode()
    assert cursor in web.page(page)
    shown = text(web.follow(web.post(f"{page}/replay", {"cursor": cursor})))
    assert "every event after that cursor is delivered again" in shown


# -- partner-wide endpoints, and who sees what ---------------------------------------------------


def test_partner_wide_endpoints_are_for_partner_admins(
        app: Flask, web: WebSession, scim: ScimClient, engine: Engine,
        receiver: Receiver) -> None:
    assert 'href="/admin/webhooks"' in web.page("/admin/tenants")  # the partner navigation
    page, _secret = create(web, "/admin/webhooks", receiver.url, description="Data lake")
    [endpoint] = endpoints(engine)
    assert endpoint.tenant_id is None and page == f"/admin/webhooks/{endpoint.id}"
    shown = text(web.page(page))
    assert "every tenant’s events" in shown and "Data lake" in shown
    assert "Data lake" in text(web.page("/admin/webhooks"))
    assert "Data lake" not in text(web.page(f"/admin/tenants/{scim.tenant_id}/webhooks"))
    shown = text(web.follow(web.post(f"{page}/ping")))
    assert "Test ping delivered" in shown

    tenant_web = signed_in(app, engine, "ta@example.com", "tenant", scim.tenant_id)
    assert 'href="/admin/webhooks"' not in tenant_web.page(
        f"/admin/tenants/{scim.tenant_id}/webhooks")
    assert tenant_web.get("/admin/webhooks").status_code == 403
    assert tenant_web.get(page).status_code == 403
    assert tenant_web.post(f"{page}/disable").status_code == 403
    assert tenant_web.post("/admin/webhooks", {"url": receiver.url}).status_code == 403
    assert endpoints(engine)[0].enabled and len(endpoints(engine)) == 1


def test_a_tenant_admin_manages_its_own_tenants_endpoints_only(
        app: Flask, web: WebSession, scim: ScimClient, engine: Engine,
        receiver: Receiver) -> None:
    other_id, _token = make_tenant(engine, "Other Corp")
    other_page, _secret = create(web, f"/admin/tenants/{other_id}/webhooks", receiver.url)
    tenant_web = signed_in(app, engine, "ta@example.com", "tenant", scim.tenant_id)
    base = f"/admin/tenants/{scim.tenant_id}/webhooks"
    html = tenant_web.page(base)
    assert 'aria-current="page">Webhooks</a>' in html  # the tab
    page, _secret = create(tenant_web, base, receiver.url)
    pinged = tenant_web.follow(tenant_web.post(f"{page}/ping"))
    assert "Test ping delivered" in text(pinged)
    for html in (pinged, tenant_web.page(f"{base}/new"), tenant_web.page(page),
                 tenant_web.page(f"{page}/delete")):
        assert 'aria-current="page">Webhooks</a>' in html  # the tab on every page of it

    other_id_of_endpoint = other_page.rsplit("/", 1)[1]
    for path in (other_page, f"{base}/{other_id_of_endpoint}",
                 f"/admin/webhooks/{other_id_of_endpoint}"):
        assert tenant_web.get(path).status_code == 404, path
    assert tenant_web.post(f"{base}/{other_id_of_endpoint}/delete").status_code == 404
    assert tenant_web.post(f"{other_page}/delete").status_code == 404
    assert len(endpoints(engine)) == 2


def test_a_failing_endpoint_says_since_when_and_when_it_is_tried_next(
        web: WebSession, scim: ScimClient, engine: Engine, receiver: Receiver) -> None:
    base = f"/admin/tenants/{scim.tenant_id}/webhooks"
    page, _secret = create(web, base, receiver.url)
    since = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)
    with make_sessionmaker(engine)() as s:  # as the dispatcher leaves it after 4 failures
        found = s.get(WebhookEndpoint, page.rsplit("/", 1)[1])
        assert found is not None
        found.failing_since, found.consecutive_failures = since, 4
        found.next_attempt_at = since + dt.timedelta(minutes=9)
        s.commit()
    shown = text(web.page(page))
    assert ("Failing since 2026-12-05 08:00 UTC (4 attempts in a row), next try at "
            "2026-12-05 08:09 UTC. Unless one succeeds, it is disabled at 2026-12-08 08:00 "
            "UTC.") in shown
    listed = text(web.page(base))
    assert "Failing — 2026-12-05 08:00 UTC" in listed  # state, no success, failing since


def test_the_notification_link_leads_to_the_endpoint(
        app: Flask, web: WebSession, scim: ScimClient, engine: Engine,
        receiver: Receiver) -> None:
    page, _secret = create(web, f"/admin/tenants/{scim.tenant_id}/webhooks", receiver.url)
    endpoint_id = page.rsplit("/", 1)[1]
    with make_sessionmaker(engine)() as s:  # as the dispatcher leaves it after 3 days
        found = s.get(WebhookEndpoint, endpoint_id)
        assert found is not None
        now = dt.datetime.now(dt.UTC)
        found.failing_since = now - dt.timedelta(hours=72)
        service.set_enabled(s, found, False, now, "No delivery succeeded for 72 hours (14 "
                            "attempts); the last one: connection refused.")
        notify.raise_condition(s, scim.tenant_id, service.NOTIFY_KIND, "Disabled.", now,
                               endpoint_id)
        s.commit()
    for who in (web, signed_in(app, engine, "ta@example.com", "tenant", scim.tenant_id)):
        banner = who.page(f"/admin/tenants/{scim.tenant_id}/users")
        assert f'href="/admin/webhooks/{endpoint_id}">Open</a>' in banner
        response = who.get(f"/admin/webhooks/{endpoint_id}")
        assert response.status_code == 303 and response.location == page
        shown = text(who.page(page))
        assert "Disabled after 3 days of failures" in shown
        assert "the last one: connection refused" in shown
    assert "Disabled" in text(web.page(f"/admin/tenants/{scim.tenant_id}/webhooks"))
    assert web.get("/admin/webhooks/no-such-endpoint").status_code == 404
    web.follow(web.post(f"{page}/enable"))  # enabling clears the notice
    banner = web.page(f"/admin/tenants/{scim.tenant_id}/users")
    assert f'href="/admin/webhooks/{endpoint_id}">Open</a>' not in banner


def test_every_webhook_form_takes_huge_values_without_a_server_error(
        app: Flask, web: WebSession, scim: ScimClient, engine: Engine,
        receiver: Receiver) -> None:
    base = f"/admin/tenants/{scim.tenant_id}/webhooks"
    page, _secret = create(web, base, receiver.url)
    web.post(f"{page}/ping")
    [ping] = attempts(engine)
    max_body = app.config["SETTINGS"].server.max_body_bytes
    submitted = set()
    for path in (f"{base}/new", page, f"{page}/rotate", f"{page}/disable",
                 "/admin/webhooks/new", f"{page}/attempts/{ping.id}", f"{page}/delete"):
        parser = Forms()
        parser.feed(web.page(path))
        for action, fields in parser.forms:
            if action.endswith("/sign-out") or action in submitted:
                continue
            submitted.add(action)
            answer = web.post(action, hostile(fields, web.csrf, max_body), csrf=False)
            where = f"{path}: POST {action} -> {answer.status_code}"
            assert answer.status_code < 500, where
            if answer.status_code == 303:
                assert web.get(answer.location).status_code < 500, where
            web.get(path)
    assert len(submitted) >= 8, submitted
