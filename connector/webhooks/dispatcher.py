"""The dispatcher: push each endpoint's part of the feed to it, in order, at least once.

    pass (every webhooks.poll_interval_ms; a delivery goes on until caught up)
      └─ due endpoints: enabled, next_attempt_at reached, lease free  (one read)
           └─ anything after their cursors?     (one probe per stream when caught up)
                └─ claim: UPDATE … SET lease WHERE lease expired; COMMIT
                   loop: read ≤ max_batch events after the cursor;     (transaction ends)
                         sign and POST them                            (no transaction open)
                         2xx   → attempt row + cursor moved, lease renewed; COMMIT
                         other → attempt row + backoff (or disable); lease dropped; COMMIT

Cost per event, not per endpoint: endpoints of one stream (tenant and filter) share
the pages read lately (any part of one: a page the feed served is final), so ten
endpoints read and encode each event about once (pages that overlap reuse the JSON
of the events they share); an endpoint's row is read once per
turn, not per message (the cursor's UPDATE says whether it is still as read).

No database transaction is open during an HTTP call: an open transaction would hold back
the feed's horizon (connector.feed) for every consumer. The cursor moves only in the
transaction that records the 2xx, and only while this process still holds the lease and
the cursor is where it read from (a replay in between wins). A crash between the POST
and that commit sends the same events again after the lease expires: at least once,
never lost, never out of order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from connector import feed, logs, notify
from connector.clock import now as wall_clock
from connector.config import ConfigError, Settings
from connector.models import WebhookAttempt, WebhookEndpoint
from connector.webhooks import messages, schedule, service
from connector.webhooks.sender import Outcome, Sender

log = logging.getLogger("connector.webhooks")
SKIP_AHEAD_SECONDS = 10.0  # how often an idle filtered endpoint's cursor is moved on
PAGES_KEPT_PER_STREAM = 16  # pages read lately that other endpoints of the stream may use
STREAMS_KEPT = 64
EVENTS_KEPT = 8192  # events read lately, in their public shape and JSON, by position
TURN_SECONDS = 2.0  # longest one endpoint keeps a delivery thread while others wait


# The statements of every message, built once (Core on the tables: building an ORM
# UPDATE, and the ORM's evaluation of its WHERE against the session's objects, cost
# more CPU than the database's work). Bound values are named apart from the columns.
_ENDPOINTS = WebhookEndpoint.__table__
_ATTEMPTS = WebhookAttempt.__table__
_E = _ENDPOINTS.c
_FREE = or_(_E.lease_until.is_(None), _E.lease_until < bindparam("b_now"),
            _E.lease_owner == bindparam("b_owner"))
_CLAIM = update(_ENDPOINTS).where(
    _E.id == bindparam("b_id"), _E.enabled.is_(True), _E.next_attempt_at <= bindparam("b_now"),
    _FREE).values(lease_owner=bindparam("b_owner"), lease_until=bindparam("b_until"))
# A pass's look for due endpoints: only the columns it needs (no ORM objects).
_DUE = select(_E.id, _E.tenant_id, _E.event_types, _E.cursor_txid, _E.cursor_id).where(
    _E.enabled.is_(True), _E.next_attempt_at <= bindparam("b_now"), _FREE)
# A turn's read of its endpoint: what a message needs (no ORM object).
_ENDPOINT = select(_E.url, _E.tenant_id, _E.event_types, _E.cursor_txid, _E.cursor_id,
                   _E.secret_encrypted, _E.previous_secret_encrypted,
                   _E.previous_secret_until, _E.enabled, _E.lease_owner,
                   _E.consecutive_failures, _E.updated_at).where(_E.id == bindparam("b_id"))
_RELEASE = update(_ENDPOINTS).where(
    _E.id == bindparam("b_id"), _E.lease_owner == bindparam("b_owner")).values(
        lease_owner=None, lease_until=None)
# Move the cursor past a delivered span: only while this process holds the lease and
# the cursor is where the span starts (a replay in between wins).
_MOVE = update(_ENDPOINTS).where(
    _E.id == bindparam("b_id"), _E.lease_owner == bindparam("b_owner"),
    _E.cursor_txid == bindparam("b_from_txid"), _E.cursor_id == bindparam("b_from_id")
).values(cursor_txid=bindparam("b_to_txid"), cursor_id=bindparam("b_to_id"),
         consecutive_failures=0, failing_since=None, last_success_at=bindparam("b_now"),
         next_attempt_at=bindparam("b_now"), lease_until=bindparam("b_until")
         ).returning(_E.enabled, _E.updated_at)
_LOG = insert(_ATTEMPTS).values({c: bindparam(f"a_{c}", type_=_ATTEMPTS.c[c].type)
                                 for c in service.ATTEMPT_COLUMNS})
# PostgreSQL: the attempt row and the cursor in one statement, its own transaction
# (one round trip instead of BEGIN, INSERT, UPDATE, COMMIT). Both parts run whatever
# the UPDATE finds; the row is logged either way, as in the two-statement form.
_moved = _MOVE.cte("moved")
_LOG_AND_MOVE = select(_moved.c.enabled, _moved.c.updated_at).add_cte(
    _LOG.cte("logged"))


@dataclass(frozen=True)
class Page:
    """A feed page and its events' JSON, as endpoints of one stream share it: the
    events after `start`, in feed order, at `positions`; `has_more` when it was full."""

    start: feed.Position
    positions: tuple[tuple[int, int], ...]
    data: tuple[dict[str, Any], ...]
    encoded: tuple[bytes, ...]
    has_more: bool

    @property
    def end(self) -> feed.Position:
        """The position after its last event (its start when empty)."""
        return feed.Position(*self.positions[-1]) if self.positions else self.start

    def covers(self, start: feed.Position) -> bool:
        return (self.start.txid, self.start.id) <= (start.txid, start.id) \
            < (self.end.txid, self.end.id)

    def after(self, start: feed.Position) -> Page:
        """Its events after `start` (inside it): what the feed would serve from there
        up to its end. A page the feed served is final (no event can appear inside it
        later), so any part of it is too."""
        if start == self.start:
            return self
        at = (start.txid, start.id)
        cut = next(i for i, p in enumerate(self.positions) if p > at)
        return Page(start, self.positions[cut:], self.data[cut:], self.encoded[cut:],
                    self.has_more)


@dataclass(frozen=True)
class Known:
    """What a delivery turn knows of its endpoint after a success, so that the next
    message needs no read of it. It goes on only while the cursor's UPDATE finds the
    row as read (`updated_at`: every admin change sets it; enabled): an admin's change
    (URL, secret, disabling) is seen after at most one more message, as one already
    under way when the change commits is sent anyway."""

    url: str
    tenant_id: str | None
    kinds: tuple[str, ...]
    start: feed.Position
    secrets: list[str]
    updated_at: dt.datetime


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
        # Pages read lately, per stream (tenant, kinds, limit), newest last.
        self._pages: dict[tuple[Any, ...], OrderedDict[feed.Position, Page]] = {}
        # Events read lately by position, as (public shape, JSON): endpoints whose
        # cursors are staggered read overlapping pages (a page is shared only from a
        # position inside it), and an event is stored once, never changed.
        self._events: OrderedDict[tuple[int, int],
                                  tuple[dict[str, Any], bytes, tuple[Any, ...]]] = OrderedDict()
        # PostgreSQL: a message's statements each on their own, in autocommit (the
        # feed's page is one statement, one snapshot; the bookkeeping one statement):
        # no BEGIN / COMMIT round trips. SQLite keeps the maker's transactions (its
        # write lock is taken at BEGIN there).
        # A delivery turn keeps one such connection (no transaction is open on it
        # between statements, so none during an HTTP call): `_turn`, per thread.
        bind = maker.kw.get("bind")
        self._autocommit: Engine | None = None
        if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
            self._autocommit = bind.execution_options(isolation_level="AUTOCOMMIT")
        self._turn = threading.local()

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The turn's autocommit connection, or one for now (PostgreSQL only)."""
        assert self._autocommit is not None
        held: Connection | None = getattr(self._turn, "conn", None)
        if held is not None:
            yield held
            held.commit()  # ends SQLAlchemy's own bookkeeping; nothing is sent
            return
        with self._autocommit.connect() as conn:
            yield conn

    @contextmanager
    def _statement(self) -> Iterator[Connection]:
        """A connection for statements that commit as one: on PostgreSQL one statement
        in autocommit (it is its own transaction), else a transaction committed after."""
        if self._autocommit is not None:
            with self._connection() as conn:
                yield conn
            return
        with self.maker() as s:
            yield s.connection()
            s.commit()

    @contextmanager
    def _reads(self) -> Iterator[Session]:
        """A session for reading an endpoint and a feed page: on PostgreSQL on the
        autocommit connection (each a single statement), else the maker's."""
        if self._autocommit is None:
            with self.maker() as s:
                yield s
            return
        with self._connection() as conn, Session(bind=conn, expire_on_commit=False,
                                                   autoflush=False) as s:
            yield s

    # -- finding work -----------------------------------------------------------------

    def due(self, busy: frozenset[str] = frozenset()) -> list[str]:
        """Endpoints that have events waiting and no other process on them (`busy`:
        those this process is delivering to already, not looked at)."""
        now = self.clock()
        with self._reads() as s:  # each statement on its own (READ COMMITTED anyway)
            # Rows of the columns service.kinds_of and service.position read.
            candidates: list[Any] = list(s.execute(_DUE, {"b_now": now,
                                                          "b_owner": self.owner}))
            streams: dict[tuple[Any, ...], list[Any]] = {}
            waiting = []
            for e in candidates:
                if e.id in busy:
                    continue
                kinds = service.kinds_of(e)
                if kinds:  # filtered: probed alone (and moved past what it does not take)
                    if self._has_events(s, e):
                        waiting.append(e.id)
                else:
                    streams.setdefault((e.tenant_id, kinds, self._limit()), []).append(e)
            for stream, endpoints in streams.items():
                waiting += self._behind(s, stream, endpoints)
            s.rollback()
        return waiting

    def _behind(self, s: Session, stream: tuple[Any, ...],
                endpoints: list[Any]) -> list[str]:
        """Those of a stream's endpoints with events after their cursor, in few probes:
        the first event after the lowest cursor is after every cursor below it; the
        next probe starts at the first cursor not below it. All caught up: one probe."""
        ordered = sorted(endpoints, key=lambda e: (e.cursor_txid, e.cursor_id))
        behind: list[str] = []
        i = 0
        while i < len(ordered):
            first = self._first_after(s, stream, service.position(ordered[i]))
            if first is None:
                break
            while i < len(ordered) and (ordered[i].cursor_txid, ordered[i].cursor_id) < first:
                behind.append(ordered[i].id)
                i += 1
        return behind

    def _first_after(self, s: Session, stream: tuple[Any, ...], start: feed.Position
                     ) -> tuple[int, int] | None:
        """The position of the stream's first event after `start` (None: none yet)."""
        cached = self._cached(stream, start)
        if cached is not None:
            return cached.after(start).positions[0]
        tenant_id, kinds, _ = stream
        rows = feed.rows_of(s, tenant_id, feed.FeedQuery(after=start, limit=1, kinds=kinds))
        return (rows[0].txid, rows[0].id) if rows else None

    def _has_events(self, s: Session, endpoint: Any) -> bool:
        kinds = service.kinds_of(endpoint)
        if self._cached((endpoint.tenant_id, kinds, self._limit()),
                        service.position(endpoint)) is not None:
            return True  # events another endpoint's read found: no query
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

    def _skip_ahead(self, endpoint: Any, mark: feed.Position) -> None:
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
        with self._statement() as conn:
            taken = conn.execute(_CLAIM, {"b_id": endpoint_id, "b_now": now,
                                          "b_owner": self.owner,
                                          "b_until": now + self.lease}).rowcount
        return bool(taken)

    def release(self, endpoint_id: str) -> None:
        with self._statement() as conn:
            conn.execute(_RELEASE, {"b_id": endpoint_id, "b_owner": self.owner})

    def deliver(self, endpoint_id: str) -> int:
        """Claim the endpoint and deliver while it is behind, for one turn (at most
        TURN_SECONDS, so that endpoints waiting for a thread get theirs); messages
        delivered. Never raises. On PostgreSQL the turn's statements share one
        autocommit connection (`_connection`)."""
        if self._autocommit is None:
            return self._one_turn(endpoint_id)
        try:
            self._turn.conn = self._autocommit.connect()
        except Exception:  # noqa: BLE001
            log.exception("webhook endpoint %s: no database connection", endpoint_id)
            return 0
        try:
            return self._one_turn(endpoint_id)
        finally:
            self._drop_connection(endpoint_id)

    def _drop_connection(self, endpoint_id: str) -> None:
        held: Connection | None = getattr(self._turn, "conn", None)
        self._turn.conn = None
        if held is not None:
            try:
                held.close()
            except Exception:  # noqa: BLE001
                log.exception("webhook endpoint %s: connection not closed", endpoint_id)

    def _one_turn(self, endpoint_id: str) -> int:
        try:
            if not self.claim(endpoint_id):
                return 0
        except Exception:  # noqa: BLE001
            log.exception("webhook endpoint %s: claim failed", endpoint_id)
            return 0
        delivered = 0
        turn_ends = time.monotonic() + min(TURN_SECONDS, self.cfg.lease_seconds / 2)
        known: Known | None = None
        try:
            while time.monotonic() < turn_ends:
                sent, behind, known = self._deliver_one(endpoint_id, known)
                delivered += sent
                if not (sent and behind):
                    break
        except Exception:  # noqa: BLE001 - the lease runs out; another pass tries again
            log.exception("webhook endpoint %s: delivery failed", endpoint_id)
            self._drop_connection(endpoint_id)  # it may be what failed: release on another
        finally:
            try:
                self.release(endpoint_id)
            except Exception:  # noqa: BLE001
                log.exception("webhook endpoint %s: lease not released", endpoint_id)
        return delivered

    def _deliver_one(self, endpoint_id: str, known: Known | None = None
                     ) -> tuple[bool, bool, Known | None]:
        """One message: (delivered, more may be waiting, what the next message of this
        turn may go on from). `known`: the endpoint as the previous success left it
        (None: read it)."""
        now = self.clock()
        with self._reads() as s:
            if known is None:
                # A row of the columns kinds_of, position and signing_secrets read.
                endpoint: Any = s.execute(_ENDPOINT, {"b_id": endpoint_id}).first()
                if (endpoint is None or not endpoint.enabled
                        or endpoint.lease_owner != self.owner):
                    return False, False, None
                known = Known(endpoint.url, endpoint.tenant_id, service.kinds_of(endpoint),
                              service.position(endpoint),
                              service.signing_secrets(self.settings, endpoint, now),
                              endpoint.updated_at)
                attempt = endpoint.consecutive_failures + 1
            else:
                attempt = 1  # the previous message succeeded
            page, fresh = self._page(s, known.tenant_id, known.kinds, known.start)
            s.rollback()  # the transaction ends before the HTTP call
        if not page.data:
            return False, False, None
        message = messages.for_events(page.data, now, page.encoded,
                                      tuple(p[1] for p in page.positions))
        outcome = self.sender.post(known.url, message.body,
                                   messages.headers(message, known.secrets, now))
        span = service.Span(known.start, page.end)
        done = self.clock()
        logged = {f"a_{k}": v for k, v in service.attempt_values(
            endpoint_id, message, outcome, done, attempt, False, span).items()}
        if outcome.succeeded:
            moved = self._succeeded(endpoint_id, span, done, known.updated_at, logged)
        else:
            moved = False
            with self.maker() as s:
                s.execute(_LOG, logged)
                self._failed(s, endpoint_id, known.tenant_id, outcome, done)
                s.commit()
        if outcome.succeeded:
            if log.isEnabledFor(logging.DEBUG):
                logs.log(log, logging.DEBUG, "webhook delivered", endpoint=endpoint_id,
                         webhook_id=message.webhook_id, events=len(message.event_ids),
                         status=outcome.status, ms=outcome.duration_ms)
            # A page read now and not full: caught up. One read earlier (by another
            # endpoint, or a part of one) may have left newer events out: look again.
            if not moved:  # replayed, changed or disabled meanwhile: read it again
                return True, True, None
            return True, page.has_more or not fresh, dataclasses.replace(known,
                                                                         start=span.end)
        logs.log(log, logging.WARNING, "webhook delivery failed", error=outcome.error,
                 endpoint=endpoint_id, webhook_id=message.webhook_id,
                 events=len(message.event_ids), status=outcome.status,
                 ms=outcome.duration_ms)
        return False, False, None

    def _page(self, s: Session, tenant_id: str | None, kinds: tuple[str, ...],
              start: feed.Position) -> tuple[Page, bool]:
        """The events after `start` of one stream (a tenant, or all, and a filter), as
        one feed read or, when a page read a moment ago for any endpoint of the stream
        covers `start`, as its part after `start`: endpoints of one stream then cost
        about one read and one encoding per event however many they are, in step or
        not. Safe: a page the feed served is final, no event can later appear inside
        it. (The page, and whether it was read now.)"""
        limit = self._limit()
        stream = (tenant_id, kinds, limit)
        found = self._cached(stream, start)
        if found is not None:
            return found.after(start), False
        rows = feed.rows_of(s, tenant_id, feed.FeedQuery(after=start, limit=limit + 1,
                                                         kinds=kinds))
        positions = tuple((r.txid, r.id) for r in rows[:limit])
        shaped = self._shaped(rows[:limit], positions)
        events = tuple(e for e, _ in shaped)
        page = Page(start, positions, events, tuple(b for _, b in shaped),
                    len(rows) > limit)
        if events:
            with self._lock:
                pages = self._pages.pop(stream, None) or OrderedDict()
                self._pages[stream] = pages  # the most recently read stream last
                pages[start] = page
                while len(pages) > PAGES_KEPT_PER_STREAM:
                    pages.popitem(last=False)
                while len(self._pages) > STREAMS_KEPT:
                    del self._pages[next(iter(self._pages))]
        return page, True

    def _shaped(self, rows: Sequence[Any], positions: tuple[tuple[int, int], ...]
                ) -> list[tuple[dict[str, Any], bytes]]:
        """Each row's public shape and JSON, made once per event (`_events`; an entry
        is used only for the same event: its kind, subject and instant checked too)."""
        marks = [(r.kind, r.subject_id, r.recorded_at) for r in rows]
        with self._lock:
            cached = [self._events.get(p) for p in positions]
        known = [c[:2] if c is not None and c[2] == mark else None
                 for c, mark in zip(cached, marks, strict=True)]
        missing = [i for i, found in enumerate(known) if found is None]
        fresh: dict[int, tuple[dict[str, Any], bytes]] = {}
        if missing:
            made = [feed.public(rows[i]) for i in missing]
            fresh = dict(zip(missing, zip(made, messages.encode_events(made), strict=True),
                             strict=True))
            with self._lock:
                for i, (event, encoded) in fresh.items():
                    self._events[positions[i]] = (event, encoded, marks[i])
                while len(self._events) > EVENTS_KEPT:
                    self._events.popitem(last=False)
        return [found if found is not None else fresh[i] for i, found in enumerate(known)]

    def _limit(self) -> int:
        return max(1, min(self.cfg.max_batch, feed.MAX_LIMIT))

    def _cached(self, stream: tuple[Any, ...], start: feed.Position) -> Page | None:
        """A page read of `stream` (tenant, kinds, limit) that covers `start`."""
        with self._lock:
            pages = self._pages.get(stream)
            if not pages:
                return None
            found = pages.get(start)
            if found is None:
                found = next((p for p in reversed(pages.values()) if p.covers(start)), None)
        return found

    def _succeeded(self, endpoint_id: str, span: service.Span, now: dt.datetime,
                   updated_at: dt.datetime, logged: dict[str, Any]) -> bool:
        """Record the attempt (`logged`: its row's values) and, in the same
        transaction, move the cursor past what was delivered, if this process still
        holds the endpoint and nothing moved the cursor meanwhile (a replay). True when
        it moved and the endpoint is as the turn knows it (enabled, unchanged since
        `updated_at`): the turn may go on without reading it again."""
        params = {"b_id": endpoint_id, "b_owner": self.owner,
                  "b_from_txid": span.start.txid, "b_from_id": span.start.id,
                  "b_to_txid": span.end.txid, "b_to_id": span.end.id, "b_now": now,
                  "b_until": now + self.lease, **logged}
        with self._statement() as conn:
            if self._autocommit is not None:  # one statement: attempt row and cursor
                row = conn.execute(_LOG_AND_MOVE, params).first()
            else:
                conn.execute(_LOG, logged)
                row = conn.execute(_MOVE, params).first()
        return row is not None and row.enabled and row.updated_at == updated_at

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
