"""Webhook endpoints as admins manage them: of one tenant (its admins and the partner
admins), or partner-wide (tenant_id None: every tenant's events; partner admins only).

Each action checks who may act, calls connector.webhooks.service and writes one audit
line. `ping` and `redeliver` send an HTTP request now: they commit the request's
transaction first (no transaction stays open during an HTTP call) and record the
attempt in a new one, which the caller commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from connector import feed
from connector.actions import AdminCall
from connector.clock import now as wall_clock
from connector.config import Settings
from connector.errors import StateConflict
from connector.models import WebhookAttempt, WebhookEndpoint
from connector.webhooks import dispatcher, messages, service


def _scope(call: AdminCall, tenant_id: str | None) -> None:
    if tenant_id is None:
        call.principal.require_partner()
    else:
        call.tenant(tenant_id)


def _endpoint(call: AdminCall, tenant_id: str | None, endpoint_id: str) -> WebhookEndpoint:
    _scope(call, tenant_id)
    return service.get_endpoint(call.session, endpoint_id, tenant_id)


def list_endpoints(call: AdminCall, tenant_id: str | None) -> list[WebhookEndpoint]:
    """The tenant's endpoints, or (None) the partner-wide ones."""
    _scope(call, tenant_id)
    return service.list_endpoints(call.session, tenant_id)


def get_endpoint(call: AdminCall, tenant_id: str | None, endpoint_id: str) -> WebhookEndpoint:
    return _endpoint(call, tenant_id, endpoint_id)


def create_endpoint(call: AdminCall, settings: Settings, tenant_id: str | None, url: str,
                    description: str = "", event_types: Sequence[str] | None = None
                    ) -> tuple[WebhookEndpoint, str]:
    """A new endpoint, receiving events from now on; its signing secret is returned
    here once (whsec_…) and never shown again."""
    _scope(call, tenant_id)
    endpoint, secret = service.create_endpoint(call.session, settings, tenant_id, url,
                                               call.now, description, event_types)
    call.audit("webhook.created", tenant_id, endpoint.id,
               {"url": endpoint.url, "eventTypes": endpoint.event_types})
    return endpoint, secret


def update_endpoint(call: AdminCall, settings: Settings, tenant_id: str | None,
                    endpoint_id: str, url: str | None = None, description: str | None = None,
                    event_types: Sequence[str] | None = None) -> WebhookEndpoint:
    """Change the URL, description or event-type filter (None: unchanged)."""
    endpoint = _endpoint(call, tenant_id, endpoint_id)
    changed = service.update_endpoint(call.session, settings, endpoint, call.now, url,
                                      description, event_types)
    if changed:
        call.audit("webhook.updated", tenant_id, endpoint.id, changed)
    return endpoint


def rotate_secret(call: AdminCall, settings: Settings, tenant_id: str | None,
                  endpoint_id: str) -> tuple[WebhookEndpoint, str]:
    """A new signing secret, returned once; the old one also signs for
    `webhooks.secret_grace_hours`."""
    endpoint = _endpoint(call, tenant_id, endpoint_id)
    secret = service.rotate_secret(call.session, settings, endpoint, call.now)
    call.audit("webhook.secret_rotated", tenant_id, endpoint.id)
    return endpoint, secret


def set_enabled(call: AdminCall, tenant_id: str | None, endpoint_id: str, enabled: bool
                ) -> WebhookEndpoint:
    """Enable (delivery resumes from where it stopped, at once) or disable."""
    endpoint = _endpoint(call, tenant_id, endpoint_id)
    if service.set_enabled(call.session, endpoint, enabled, call.now):
        call.audit("webhook.enabled" if enabled else "webhook.disabled", tenant_id,
                   endpoint.id)
    return endpoint


def delete_endpoint(call: AdminCall, tenant_id: str | None, endpoint_id: str) -> None:
    endpoint = _endpoint(call, tenant_id, endpoint_id)
    service.delete_endpoint(call.session, endpoint, call.now)
    call.audit("webhook.deleted", tenant_id, endpoint_id, {"url": endpoint.url})


def list_attempts(call: AdminCall, tenant_id: str | None, endpoint_id: str, limit: int = 50,
                  before: int | None = None) -> list[WebhookAttempt]:
    """The endpoint's delivery log, newest first (`before`: an attempt id, for paging)."""
    _endpoint(call, tenant_id, endpoint_id)
    return service.list_attempts(call.session, endpoint_id, limit, before)


def replay(call: AdminCall, tenant_id: str | None, endpoint_id: str, cursor: str
           ) -> WebhookEndpoint:
    """Deliver again, in order, every event after `cursor` (a feed cursor, as the feed
    and `GET …/events/cursor` hand out; "" for the oldest event)."""
    endpoint = _endpoint(call, tenant_id, endpoint_id)
    after = feed.decode_cursor(cursor) if cursor else feed.START
    service.replay(call.session, endpoint, after, call.now)
    call.audit("webhook.replayed", tenant_id, endpoint.id, {"after": cursor})
    return endpoint


def ping(call: AdminCall, settings: Settings, tenant_id: str | None, endpoint_id: str
         ) -> WebhookAttempt:
    """Send a test message (type webhook.ping) now; the attempt, with the answer."""
    endpoint = _endpoint(call, tenant_id, endpoint_id)
    message = messages.ping(endpoint.id, call.now)
    call.audit("webhook.pinged", tenant_id, endpoint.id)
    return _send(call, settings, endpoint, message, None)


def redeliver(call: AdminCall, settings: Settings, tenant_id: str | None, endpoint_id: str,
              attempt_id: int) -> WebhookAttempt:
    """Send the events of an earlier attempt again now, as the same message (same
    webhook-id). It does not move the endpoint's position: a failing endpoint's own
    retries go on."""
    endpoint = _endpoint(call, tenant_id, endpoint_id)
    earlier = service.get_attempt(call.session, endpoint_id, attempt_id)
    events = service.events_of(call.session, settings, endpoint, earlier)
    if not events:
        raise StateConflict("That attempt carried no events (a ping), or its events are "
                            "no longer in the feed: nothing to redeliver.")
    message = messages.for_events(events, call.now)
    call.audit("webhook.redelivered", tenant_id, endpoint.id, {"attempt": attempt_id})
    return _send(call, settings, endpoint, message, service.span_of(earlier))


def _send(call: AdminCall, settings: Settings, endpoint: WebhookEndpoint,
          message: messages.Message, span: service.Span | None) -> WebhookAttempt:
    url, endpoint_id = endpoint.url, endpoint.id
    signing = service.signing_secrets(settings, endpoint, call.now)
    call.session.commit()  # the audit line stands; nothing stays open during the call
    sent_at = wall_clock()
    outcome = dispatcher.send_now(settings, url, message, signing, sent_at)
    return service.record_attempt(call.session, endpoint_id, message, outcome,
                                  _later(call.now, sent_at), 1, True, span)


def _later(a: dt.datetime, b: dt.datetime) -> dt.datetime:
    return max(a, b)
