"""The dispatcher: push each endpoint's part of the feed to it, in order, at least once.

    pass (every webhooks.poll_interval_ms; a delivery goes on until caught up)
      └─ due endpoints: enabled, next_attempt_at reached, lease free  (one read)
           └─ anything after its cursor?                               (one read each)
                └─ claim: UPDATE … SET lease WHERE lease expired; COMMIT
                   loop: read ≤ max_batch events after the cursor;     (transaction ends)
                         sign and POST them                            (no transaction open)
                         2xx   → attempt row + cursor moved, lease renewed; COMMIT
                         other → attempt row + backoff (or disable); lease dropped; COMMIT

No database transaction is open during an HTTP call: an open transaction would hold back
the feed's horizon (connector.feed) for every consumer. The cursor moves only in the
transaction that records the 2xx, and only while this process still holds the lease and
the cursor is where it read from (a replay in between wins). A crash between the POST
and that commit sends the same events again after the lease expires: at least once,
never lost, never out of order.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from connector import feed, logs, notify
from connector.clock import now as wall_clock
from connector.config import ConfigError, Settings
from connector.models import WebhookEndpoint
from connector.webhooks import messages, schedule, service
from connector.webhooks.sender import Outcome, Sender

log = logging.getLogger("connector.webhooks")
SKIP_AHEAD_SECONDS = 10.0  # how often an idle filtered endpoint's cursor is moved on
PAGE_REUSE_SECONDS = 0.5  # how long a short page read for one endpoint serves others
PAGES_KEPT = 256
TURN_SECONDS = 2.0  # longest one endpoint keeps a delivery thread while others wait


@dataclass(frozen=True)
class Page:
    """A feed page and its events' JSON, as endpoints of one stream share it."""

    feed: feed.FeedPage
    encoded: tuple[bytes, ...]


def owner_name() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    """Delivers for one process; safe beside any number of others (the lease)."""

    def __init__(self, maker: sessionmaker[Session], settings: Settings,
                 clock: Callable[[], dt.datetime] = wall_clock,
                 rng: random.Random | None = None, sender: Sender | None = None,
                 owner: str | None = None) -> None:
        self.maker = maker
        self.settings = settings
        self.cfg = settings.webhooks
        self.clock = clock
        self.rng = rng or random.Random()
        self.sender = sender or Sender(settings.webhooks)
        self.owner = owner or owner_name()
        self.lease = dt.timedelta(seconds=self.cfg.lease_seconds)
        self._skipped: dict[str, float] = {}
        self._lock = threading.Lock()
        self._pages: OrderedDict[tuple[Any, ...], tuple[float, Page]] = OrderedDict()

    # -- finding work -----------------------------------------------------------------

    def due(self, busy: frozenset[str] = frozenset()) -> list[str]:
        """Endpoints that have events waiting and no other process on them (`busy`:
        those this process is delivering to already, not looked at)."""
        now = self.clock()
        with self.maker() as s:
            candidates = list(s.scalars(select(WebhookEndpoint).where(
                WebhookEndpoint.enabled.is_(True), WebhookEndpoint.next_attempt_at <= now,
                or_(WebhookEndpoint.lease_until.is_(None), WebhookEndpoint.lease_until < now,
                    WebhookEndpoint.lease_owner == self.owner))))
            waiting = [e.id for e in candidates
                       if e.id not in busy and self._has_events(s, e)]
            s.rollback()
        return waiting

    def _has_events(self, s: Session, endpoint: WebhookEndpoint) -> bool:
        kinds = service.kinds_of(endpoint)
        mark = None
        if kinds and self._may_skip(endpoint.id):
            mark = feed.latest(s, endpoint.tenant_id)  # before the read: see feed.latest
        page = feed.read(s, endpoint.tenant_id, feed.FeedQuery(
            after=service.position(endpoint), limit=1, kinds=kinds))
        if page.data:
            return True
        if mark is not None and mark > service.position(endpoint):
            self._skip_ahead(endpoint, mark)
        return False

    def _may_skip(self, endpoint_id: str) -> bool:
        with self._lock:
            last = self._skipped.get(endpoint_id, 0.0)
            if time.monotonic() - last < SKIP_AHEAD_SECONDS:
                return False
            self._skipped[endpoint_id] = time.monotonic()
            return True

    def _skip_ahead(self, endpoint: WebhookEndpoint, mark: feed.Position) -> None:
        """Move a filtered endpoint's cursor past events it does not take, so that its
        reads do not rescan them: nothing it takes lies before `mark` (read after it
        was taken). Only while nobody holds the lease and the cursor is unchanged."""
        now = self.clock()
        with self.maker() as s:
            s.execute(update(WebhookEndpoint).where(
                WebhookEndpoint.id == endpoint.id,
                WebhookEndpoint.cursor_txid == endpoint.cursor_txid,
                WebhookEndpoint.cursor_id == endpoint.cursor_id,
                or_(WebhookEndpoint.lease_until.is_(None), WebhookEndpoint.lease_until < now))
                .values(cursor_txid=mark.txid, cursor_id=mark.id))
            s.commit()

    def run_pass(self, submit: Callable[[str], Any] | None = None,
                 busy: frozenset[str] = frozenset()) -> int:
        """Deliver to every endpoint with work (through `submit`, or here one after
        another), but those `busy` already; how many endpoints had work. Never raises."""
        try:
            waiting = self.due(busy)
        except Exception:  # noqa: BLE001 - the loop must survive a database hiccup
            log.exception("webhook pass: finding due endpoints failed")
            return 0
        for endpoint_id in waiting:
            if submit is not None:
                submit(endpoint_id)
            else:
                self.deliver(endpoint_id)
        return len(waiting)

    # -- one endpoint ---------------------------------------------------------------------

    def claim(self, endpoint_id: str) -> bool:
        now = self.clock()
        with self.maker() as s:
            taken = s.execute(update(WebhookEndpoint).where(
                WebhookEndpoint.id == endpoint_id, WebhookEndpoint.enabled.is_(True),
                WebhookEndpoint.next_attempt_at <= now,
                or_(WebhookEndpoint.lease_until.is_(None), WebhookEndpoint.lease_until < now,
                    WebhookEndpoint.lease_owner == self.owner))
                .values(lease_owner=self.owner, lease_until=now + self.lease)).rowcount  # type: ignore[attr-defined]
            s.commit()
        return bool(taken)

    def release(self, endpoint_id: str) -> None:
        with self.maker() as s:
            s.execute(update(WebhookEndpoint).where(
                WebhookEndpoint.id == endpoint_id, WebhookEndpoint.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None))
            s.commit()

    def deliver(self, endpoint_id: str) -> int:
        """Claim the endpoint and deliver while it is behind, for one turn (at most
        TURN_SECONDS, so that endpoints waiting for a thread get theirs); messages
        delivered. Never raises."""
        try:
            if not self.claim(endpoint_id):
                return 0
        except Exception:  # noqa: BLE001
            log.exception("webhook endpoint %s: claim failed", endpoint_id)
            return 0
        delivered = 0
        turn_ends = time.monotonic() + min(TURN_SECONDS, self.cfg.lease_seconds / 2)
        try:
            while time.monotonic() < turn_ends:
                sent, behind = self._deliver_one(endpoint_id)
                delivered += sent
                if not (sent and behind):
                    break
        except Exception:  # noqa: BLE001 - the lease runs out; another pass tries again
            log.exception("webhook endpoint %s: delivery failed", endpoint_id)
        finally:
            try:
                self.release(endpoint_id)
            except Exception:  # noqa: BLE001
                log.exception("webhook endpoint %s: lease not released", endpoint_id)
        return delivered

    def _deliver_one(self, endpoint_id: str) -> tuple[bool, bool]:
        """One message: (delivered, a full page: more may be waiting)."""
        now = self.clock()
        with self.maker() as s:
            endpoint = s.get(WebhookEndpoint, endpoint_id)
            if endpoint is None or not endpoint.enabled or endpoint.lease_owner != self.owner:
                return False, False
            start = service.position(endpoint)
            shared, fresh = self._page(s, endpoint, start)
            page = shared.feed
            if not page.data:
                return False, False
            url, tenant_id = endpoint.url, endpoint.tenant_id
            attempt = endpoint.consecutive_failures + 1
            secrets = service.signing_secrets(self.settings, endpoint, now)
            s.rollback()  # the transaction ends before the HTTP call
        message = messages.for_events(page.data, now, shared.encoded)
        outcome = self.sender.post(url, message.body, messages.headers(message, secrets, now))
        span = service.Span(start, page.next_cursor)
        done = self.clock()
        with self.maker() as s:
            service.record_attempt(s, endpoint_id, message, outcome, done, attempt, False,
                                   span)
            if outcome.succeeded:
                moved = self._succeeded(s, endpoint_id, span, done)
            else:
                moved = False
                self._failed(s, endpoint_id, tenant_id, outcome, done)
            s.commit()
        log_fields = {"endpoint": endpoint_id, "webhook_id": message.webhook_id,
                      "events": len(message.event_ids), "status": outcome.status,
                      "ms": outcome.duration_ms}
        if outcome.succeeded:
            logs.log(log, logging.DEBUG, "webhook delivered", **log_fields)
            # A page read now and not full: caught up. One that another endpoint read a
            # moment ago may have left newer events out: look again.
            return True, moved and (page.has_more or not fresh)
        logs.log(log, logging.WARNING, "webhook delivery failed", error=outcome.error,
                 **log_fields)
        return False, False

    def _page(self, s: Session, endpoint: WebhookEndpoint, start: feed.Position
              ) -> tuple[Page, bool]:
        """The events after `start` for this endpoint, as one feed read or, when another
        endpoint of the same tenant and filter read from the same place a moment ago, as
        that read (several endpoints of one stream then cost one read, and stay in step).
        Reusing it is safe: a page the feed served is final, no event can later appear
        inside it; a full page is kept as long as there is room, a short one briefly.
        (The page, and whether it was read now.)"""
        limit = max(1, min(self.cfg.max_batch, feed.MAX_LIMIT))
        kinds = service.kinds_of(endpoint)
        key = (endpoint.tenant_id, kinds, start, limit)
        now = time.monotonic()
        with self._lock:
            found = self._pages.get(key)
        if found is not None and (len(found[1].feed.data) == limit
                                  or now - found[0] < PAGE_REUSE_SECONDS):
            return found[1], False
        read = feed.read(s, endpoint.tenant_id, feed.FeedQuery(after=start, limit=limit,
                                                                kinds=kinds))
        page = Page(read, messages.encode_events(read.data))
        if read.data:
            with self._lock:
                self._pages[key] = (now, page)
                self._pages.move_to_end(key)
                while len(self._pages) > PAGES_KEPT:
                    self._pages.popitem(last=False)
        return page, True

    def _succeeded(self, s: Session, endpoint_id: str, span: service.Span,
                   now: dt.datetime) -> bool:
        """Move the cursor past what was delivered, if this process still holds the
        endpoint and nothing moved the cursor meanwhile (a replay)."""
        moved = s.execute(update(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id, WebhookEndpoint.lease_owner == self.owner,
            WebhookEndpoint.cursor_txid == span.start.txid,
            WebhookEndpoint.cursor_id == span.start.id).values(
                cursor_txid=span.end.txid, cursor_id=span.end.id, consecutive_failures=0,
                failing_since=None, last_success_at=now, next_attempt_at=now,
                lease_until=now + self.lease)).rowcount  # type: ignore[attr-defined]
        return bool(moved)

    def _failed(self, s: Session, endpoint_id: str, tenant_id: str | None,
                outcome: Outcome, now: dt.datetime) -> None:
        endpoint = s.get(WebhookEndpoint, endpoint_id, with_for_update=True)
        if endpoint is None or endpoint.lease_owner != self.owner:
            return  # replaced or taken over: its new holder keeps the count
        endpoint.consecutive_failures += 1
        endpoint.failing_since = endpoint.failing_since or now
        cap = dt.timedelta(seconds=self.cfg.max_retry_after_seconds)
        endpoint.next_attempt_at = schedule.next_attempt(
            now, endpoint.consecutive_failures, outcome.retry_after, cap, self.rng)
        limit = dt.timedelta(hours=self.cfg.disable_after_hours)
        if now - endpoint.failing_since >= limit:
            self._disable(s, endpoint, outcome, now)
        else:  # never past the moment it would be disabled: one last try then
            endpoint.next_attempt_at = min(endpoint.next_attempt_at,
                                           endpoint.failing_since + limit)

    def _disable(self, s: Session, endpoint: WebhookEndpoint, outcome: Outcome,
                 now: dt.datetime) -> None:
        hours = self.cfg.disable_after_hours
        reason = (f"No delivery succeeded for {hours} hours ({endpoint.consecutive_failures} "
                  f"attempts); the last one: {outcome.error or 'failed'}.")
        service.set_enabled(s, endpoint, False, now, reason)
        notify.raise_condition(
            s, endpoint.tenant_id or service.PARTNER_WIDE, service.NOTIFY_KIND,
            f"Webhook endpoint {endpoint.url} was disabled. {reason} Events wait in the "
            "feed: enabling it again delivers them from where it stopped.", now,
            endpoint.id)
        logs.log(log, logging.ERROR, "webhook endpoint disabled", endpoint=endpoint.id,
                 tenant=endpoint.tenant_id, reason=reason)


def send_now(settings: Settings, url: str, message: messages.Message,
             signing_secrets: list[str], now: dt.datetime) -> Outcome:
    """Send one message at once (a ping, a manual redelivery), outside the dispatcher."""
    try:
        one = Sender(settings.webhooks)
    except ConfigError as exc:  # a [webhooks] proxy or ca_bundle this process cannot use
        return Outcome(None, None, str(exc), 0)
    try:
        return one.post(url, message.body, messages.headers(message, signing_secrets, now))
    finally:
        one.close()
