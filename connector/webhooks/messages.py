"""What is sent: the Standard Webhooks message around feed events, its id and its
signature headers (https://www.standardwebhooks.com; signed with the `standardwebhooks`
package, the specification's own implementation).

    one event       {"type": "user.status_changed", "timestamp": "…Z", "data": <event>}
    several events  {"type": "batch", "timestamp": "…Z",
                     "data": {"events": [<event>, <event>, …]}}   (oldest first)
    a test ping     {"type": "webhook.ping", "timestamp": "…Z", "data": {"endpointId": …}}

<event> is exactly an event of the feed (connector.feed.public, docs/events.md). The
`webhook-id` of a single-event message is the event's id (evt_42); of a batch, a digest
of the ids it carries (the same events always give the same id); of a ping, a new id.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook

BATCH_TYPE = "batch"
PING_TYPE = "webhook.ping"
SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class Message:
    webhook_id: str
    type: str
    body: bytes
    event_ids: tuple[int, ...]  # the feed ids carried (none for a ping)


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes them: whsec_ + base64 of 32 bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _instant(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# One encoder for every message: json.dumps with arguments builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _encode(payload: Any) -> bytes:
    return _ENCODER.encode(payload).encode()


def event_number(event: dict[str, Any]) -> int:
    return int(str(event["id"]).removeprefix("evt_"))


def encode_events(events: Sequence[dict[str, Any]]) -> tuple[bytes, ...]:
    """Each event's JSON, once: endpoints that send the same events share it."""
    return tuple(_encode(e) for e in events)


def for_events(events: Sequence[dict[str, Any]], now: dt.datetime,
               encoded: Sequence[bytes] | None = None,
               numbers: tuple[int, ...] | None = None) -> Message:
    """The message carrying these feed events (one: single; several: a batch);
    `encoded`: their JSON from `encode_events`, `numbers`: their feed ids, when
    already known."""
    assert events
    parts = encoded if encoded is not None else encode_events(events)
    ids = numbers if numbers is not None else tuple(event_number(e) for e in events)
    stamp = _encode(_instant(now))
    if len(events) == 1:
        kind = str(events[0]["type"])
        return Message(str(events[0]["id"]), kind, b'{"type":' + _encode(kind)
                       + b',"timestamp":' + stamp + b',"data":' + parts[0] + b"}", ids)
    digest = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:32]
    body = (b'{"type":"' + BATCH_TYPE.encode() + b'","timestamp":' + stamp
            + b',"data":{"events":[' + b",".join(parts) + b"]}}")
    return Message(f"batch_{digest}", BATCH_TYPE, body, ids)


def ping(endpoint_id: str, now: dt.datetime) -> Message:
    body = {"type": PING_TYPE, "timestamp": _instant(now),
            "data": {"endpointId": endpoint_id,
                     "message": "A test message from the connector: answer 2xx."}}
    return Message(f"ping_{secrets.token_hex(12)}", PING_TYPE, _encode(body), ())


def headers(message: Message, signing_secrets: Sequence[str], now: dt.datetime
            ) -> dict[str, str]:
    """The Standard Webhooks headers: webhook-id, webhook-timestamp and one signature
    per secret (two during a rotation's grace period), space-separated."""
    signatures = " ".join(Webhook(s).sign(message.webhook_id, now, message.body)
                          for s in signing_secrets)
    return {"webhook-id": message.webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures,
            "content-type": "application/json",
            "user-agent": "connector-webhooks/1"}
