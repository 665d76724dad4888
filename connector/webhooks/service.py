"""Webhook endpoints and their delivery log, as the admin actions, the CLI and the
dispatcher use them: each function takes the caller's session and never commits.

Management (connector.actions.webhooks wraps these with the admin's checks and audit
line): create (the secret is returned once, whsec_…), update, rotate the secret,
enable/disable, delete, replay from a feed position; the JSON the API shows.
Delivery bookkeeping (connector.webhooks.dispatcher): record an attempt, fail or
succeed an endpoint, disable it after `webhooks.disable_after_hours` (its admins are
told: notification kind "webhook_disabled").
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from connector import feed, notify, sealed
from connector.config import Settings
from connector.errors import InvalidSetting, NotFound
from connector.models import WebhookAttempt, WebhookEndpoint
from connector.webhooks import messages, sender
from connector.webhooks.sender import Outcome

PARTNER_WIDE = ""  # the notification "tenant" of an endpoint of every tenant
NOTIFY_KIND = "webhook_disabled"
MAX_ENDPOINTS = 50  # per tenant, and partner-wide


def _secret_remedy() -> str:
    return "Rotate the endpoint's signing secret (and give the new one to the receiver)."


# -- reading ------------------------------------------------------------------------------


def get_endpoint(session: Session, endpoint_id: str, tenant_id: str | None = None,
                 any_tenant: bool = False) -> WebhookEndpoint:
    """The endpoint; NotFound unless it belongs to `tenant_id` (None: partner-wide), or
    `any_tenant`."""
    found = session.get(WebhookEndpoint, endpoint_id) if len(endpoint_id) <= 36 else None
    if found is None or (not any_tenant and found.tenant_id != tenant_id):
        raise NotFound(f"Webhook endpoint {endpoint_id} not found.")
    return found


def list_endpoints(session: Session, tenant_id: str | None, every: bool = False
                   ) -> list[WebhookEndpoint]:
    """A tenant's endpoints (None: the partner-wide ones; `every`: all), oldest first."""
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    if not every:
        query = query.where(WebhookEndpoint.tenant_id.is_(None) if tenant_id is None
                            else WebhookEndpoint.tenant_id == tenant_id)
    return list(session.scalars(query))


def list_attempts(session: Session, endpoint_id: str, limit: int = 50,
                  before: int | None = None) -> list[WebhookAttempt]:
    """The endpoint's delivery log, newest first; `before` an attempt id (paging)."""
    query = select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id)
    if before is not None:
        query = query.where(WebhookAttempt.id < before)
    return list(session.scalars(query.order_by(WebhookAttempt.id.desc())
                                .limit(max(1, min(limit, 500)))))


def get_attempt(session: Session, endpoint_id: str, attempt_id: int) -> WebhookAttempt:
    found = session.get(WebhookAttempt, attempt_id)
    if found is None or found.endpoint_id != endpoint_id:
        raise NotFound(f"Delivery attempt {attempt_id} of endpoint {endpoint_id} not found.")
    return found


def position(endpoint: WebhookEndpoint) -> feed.Position:
    return feed.Position(endpoint.cursor_txid, endpoint.cursor_id)


def kinds_of(endpoint: WebhookEndpoint) -> tuple[str, ...]:
    """The internal event kinds the endpoint's filter takes (empty: every public type)."""
    return tuple(feed.KINDS_OF_TYPE[t] for t in endpoint.event_types
                 if t in feed.KINDS_OF_TYPE)


def signing_secrets(settings: Settings, endpoint: WebhookEndpoint, now: dt.datetime
                    ) -> list[str]:
    """The secrets a message is signed with: the current one, and the previous one
    during a rotation's grace period."""
    found = [sealed.unseal(settings.azure_sync, endpoint.secret_encrypted,
                           "webhook signing secret", _secret_remedy())]
    if (endpoint.previous_secret_encrypted and endpoint.previous_secret_until
            and endpoint.previous_secret_until > now):
        found.append(sealed.unseal(settings.azure_sync, endpoint.previous_secret_encrypted,
                                   "webhook signing secret", _secret_remedy()))
    return found


# -- management ---------------------------------------------------------------------------


def check_event_types(types: Sequence[str] | None) -> list[str]:
    """The filter as stored: known public type names, each once, in the given order."""
    if types is None:
        return []
    if isinstance(types, str) or not all(isinstance(t, str) for t in types):
        raise InvalidSetting("eventTypes must be a list of event type names.", "eventTypes")
    unknown = [t for t in types if t not in feed.KINDS_OF_TYPE]
    if unknown:
        raise InvalidSetting(f"Unknown event type {', '.join(map(repr, unknown))}: "
                             "docs/events.md lists the types (e.g. user.created).",
                             "eventTypes")
    return list(dict.fromkeys(types))


def check_description(description: str | None) -> str:
    text = (description or "").strip()
    if len(text) > 200 or "\x00" in text:
        raise InvalidSetting("description must be text of 200 characters at most.",
                             "description")
    return text


def create_endpoint(session: Session, settings: Settings, tenant_id: str | None, url: str,
                    now: dt.datetime, description: str = "",
                    event_types: Sequence[str] | None = None,
                    start: feed.Position | None = None) -> tuple[WebhookEndpoint, str]:
    """A new enabled endpoint and its signing secret (whsec_…, shown once). It receives
    the events recorded from now on (`start`: from that feed position instead)."""
    url = sender.check_url(url, settings.webhooks.allow_private_targets)
    types = check_event_types(event_types)
    text = check_description(description)
    count = session.scalar(select(func.count()).select_from(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id.is_(None) if tenant_id is None
        else WebhookEndpoint.tenant_id == tenant_id)) or 0
    if count >= MAX_ENDPOINTS:
        raise InvalidSetting(f"At most {MAX_ENDPOINTS} webhook endpoints per tenant (and "
                             "partner-wide); delete one first.")
    at = start if start is not None else feed.latest(session, tenant_id)
    secret = messages.new_secret()
    endpoint = WebhookEndpoint(
        id=str(uuid.uuid4()), tenant_id=tenant_id, url=url, description=text,
        event_types=types, secret_encrypted=sealed.seal(settings.azure_sync, secret),
        enabled=True, cursor_txid=at.txid, cursor_id=at.id, consecutive_failures=0,
        next_attempt_at=now, created_at=now, updated_at=now)
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def update_endpoint(session: Session, settings: Settings, endpoint: WebhookEndpoint,
                    now: dt.datetime, url: str | None = None, description: str | None = None,
                    event_types: Sequence[str] | None = None) -> dict[str, Any]:
    """Change what is given; returns {field: new value} of what changed."""
    changed: dict[str, Any] = {}
    if url is not None:
        url = sender.check_url(url, settings.webhooks.allow_private_targets)
        if url != endpoint.url:
            endpoint.url = changed["url"] = url
    if description is not None:
        text = check_description(description)
        if text != endpoint.description:
            endpoint.description = changed["description"] = text
    if event_types is not None:
        types = check_event_types(event_types)
        if types != list(endpoint.event_types):
            endpoint.event_types = changed["eventTypes"] = types
    if changed:
        endpoint.updated_at = now
        if "url" in changed:  # a new address: try it now rather than after the backoff
            endpoint.next_attempt_at = now
    return changed


def rotate_secret(session: Session, settings: Settings, endpoint: WebhookEndpoint,
                  now: dt.datetime) -> str:
    """A new signing secret (shown once); the old one keeps signing beside it for
    `webhooks.secret_grace_hours`."""
    secret = messages.new_secret()
    grace = settings.webhooks.secret_grace_hours
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted if grace > 0 else None
    endpoint.previous_secret_until = now + dt.timedelta(hours=grace) if grace > 0 else None
    endpoint.secret_encrypted = sealed.seal(settings.azure_sync, secret)
    endpoint.updated_at = now
    return secret


def set_enabled(session: Session, endpoint: WebhookEndpoint, enabled: bool,
                now: dt.datetime, reason: str = "disabled by an admin") -> bool:
    """Enable (delivery resumes at once, from where it stopped) or disable; True when
    it changed. Enabling clears the failure count and the "webhook disabled" notice."""
    if enabled:
        was = endpoint.enabled
        endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = True, None, None
        endpoint.consecutive_failures, endpoint.failing_since = 0, None
        endpoint.next_attempt_at = now
        endpoint.updated_at = now
        notify.clear_condition(session, endpoint.tenant_id or PARTNER_WIDE, NOTIFY_KIND, now,
                               endpoint.id)
        return not was
    if not endpoint.enabled:
        return False
    endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = False, reason, now
    endpoint.updated_at = now
    return True


def delete_endpoint(session: Session, endpoint: WebhookEndpoint, now: dt.datetime) -> None:
    """Delete the endpoint and its delivery log."""
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint.id))
    notify.clear_condition(session, endpoint.tenant_id or PARTNER_WIDE, NOTIFY_KIND, now,
                           endpoint.id)
    session.delete(endpoint)
    session.flush()


def replay(session: Session, endpoint: WebhookEndpoint, after: feed.Position,
           now: dt.datetime) -> None:
    """Deliver again every event after `after` (a feed cursor), in order, from now on.
    A delivery under way when this commits does not move the endpoint past it."""
    endpoint.cursor_txid, endpoint.cursor_id = after.txid, after.id
    endpoint.consecutive_failures, endpoint.failing_since = 0, None
    endpoint.next_attempt_at = now
    endpoint.updated_at = now


# -- the delivery log ------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """The feed range a message carried: after `start`, up to and including `end`."""

    start: feed.Position
    end: feed.Position


ATTEMPT_COLUMNS = ("endpoint_id", "webhook_id", "message_type", "first_event_id",
                   "last_event_id", "event_count", "from_txid", "from_id", "to_txid", "to_id",
                   "attempt", "attempted_at", "duration_ms", "status_code",
                   "response_excerpt", "error", "succeeded", "manual")


def attempt_values(endpoint_id: str, message: messages.Message, outcome: Outcome,
                   now: dt.datetime, attempt: int, manual: bool, span: Span | None = None
                   ) -> dict[str, Any]:
    """A delivery-log row's column values (the dispatcher inserts them with a plain
    INSERT, `record_attempt` as an object)."""
    ids = message.event_ids
    return {
        "endpoint_id": endpoint_id, "webhook_id": message.webhook_id,
        "message_type": message.type[:40], "first_event_id": ids[0] if ids else None,
        "last_event_id": ids[-1] if ids else None, "event_count": len(ids),
        "from_txid": span.start.txid if span else None,
        "from_id": span.start.id if span else None,
        "to_txid": span.end.txid if span else None, "to_id": span.end.id if span else None,
        "attempt": attempt, "attempted_at": now, "duration_ms": outcome.duration_ms,
        "status_code": outcome.status, "response_excerpt": outcome.excerpt,
        "error": (outcome.error or None) and outcome.error[:2000],
        "succeeded": outcome.succeeded, "manual": manual}


def record_attempt(session: Session, endpoint_id: str, message: messages.Message,
                   outcome: Outcome, now: dt.datetime, attempt: int, manual: bool,
                   span: Span | None = None) -> WebhookAttempt:
    row = WebhookAttempt(**attempt_values(endpoint_id, message, outcome, now, attempt,
                                          manual, span))
    session.add(row)
    session.flush()
    return row


def span_of(attempt: WebhookAttempt) -> Span | None:
    if attempt.from_txid is None or attempt.to_txid is None:
        return None
    return Span(feed.Position(attempt.from_txid, attempt.from_id or 0),
                feed.Position(attempt.to_txid, attempt.to_id or 0))


def events_of(session: Session, settings: Settings, endpoint: WebhookEndpoint,
              attempt: WebhookAttempt) -> list[dict[str, Any]]:
    """The events an attempt carried, read again from the feed (with the endpoint's
    filter as it is now)."""
    span = span_of(attempt)
    if span is None:
        return []
    page = feed.read(session, endpoint.tenant_id, feed.FeedQuery(
        after=span.start, until=span.end, kinds=kinds_of(endpoint),
        limit=max(1, min(attempt.event_count or 1, feed.MAX_LIMIT))))
    return page.data


def prune_attempts(session: Session, now: dt.datetime, days: int, batch: int = 5000) -> int:
    """Delete up to `batch` delivery-log rows older than `days`; how many."""
    cutoff = now - dt.timedelta(days=max(days, 0))
    ids = list(session.scalars(select(WebhookAttempt.id).where(
        WebhookAttempt.attempted_at < cutoff).limit(batch)))
    if ids:
        session.execute(delete(WebhookAttempt).where(WebhookAttempt.id.in_(ids)))
    return len(ids)


# -- the backlog (metrics) ------------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    behind: int  # enabled endpoints with at least one event not delivered yet
    oldest_seconds: float  # age of the oldest such event (0 when none)
    disabled: int  # endpoints disabled (by an admin, or after failing too long)


def backlog(session: Session, now: dt.datetime) -> Backlog:
    """How far the enabled endpoints are behind: one feed probe per stream (endpoints of
    one tenant and filter at one position share it), the index range the dispatcher's
    own probe reads."""
    endpoints = list(session.scalars(select(WebhookEndpoint)))
    disabled = sum(1 for e in endpoints if not e.enabled)
    probes: dict[tuple[Any, ...], int] = {}
    for e in endpoints:
        if e.enabled:
            key = (e.tenant_id, kinds_of(e), position(e))
            probes[key] = probes.get(key, 0) + 1
    behind, oldest = 0, 0.0
    for (tenant_id, kinds, after), count in probes.items():
        first = feed.rows_of(session, tenant_id, feed.FeedQuery(after=after, limit=1,
                                                                kinds=kinds))
        if first:
            behind += count
            oldest = max(oldest, (now - first[0].recorded_at).total_seconds())
    return Backlog(behind, oldest, disabled)


# -- the public shape -----------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def endpoint_json(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as the API and the CLI show it (never its secret)."""
    return {"id": endpoint.id, "tenantId": endpoint.tenant_id, "url": endpoint.url,
            "description": endpoint.description, "eventTypes": list(endpoint.event_types),
            "enabled": endpoint.enabled, "disabledReason": endpoint.disabled_reason,
            "disabledAt": _iso(endpoint.disabled_at),
            "cursor": position(endpoint).encode(),
            "failingSince": _iso(endpoint.failing_since),
            "consecutiveFailures": endpoint.consecutive_failures,
            "nextAttemptAt": _iso(endpoint.next_attempt_at),
            "lastSuccessAt": _iso(endpoint.last_success_at),
            "secretRotatedGraceUntil": _iso(endpoint.previous_secret_until),
            "created": _iso(endpoint.created_at), "updated": _iso(endpoint.updated_at)}


def attempt_json(attempt: WebhookAttempt) -> dict[str, Any]:
    return {"id": attempt.id, "endpointId": attempt.endpoint_id,
            "webhookId": attempt.webhook_id, "type": attempt.message_type,
            "firstEventId": f"{feed.ID_PREFIX}{attempt.first_event_id}"
            if attempt.first_event_id is not None else None,
            "lastEventId": f"{feed.ID_PREFIX}{attempt.last_event_id}"
            if attempt.last_event_id is not None else None,
            "eventCount": attempt.event_count, "attempt": attempt.attempt,
            "attemptedAt": _iso(attempt.attempted_at), "durationMs": attempt.duration_ms,
            "status": attempt.status_code, "response": attempt.response_excerpt,
            "error": attempt.error, "succeeded": attempt.succeeded, "manual": attempt.manual}
