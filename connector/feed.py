"""The event feed: the event log as the host product reads it, page after page.

Public shape (version 1) of each event, whatever its kind::

    {"id": "evt_42", "type": "user.status_changed", "version": 1,
     "occurredAt": ..., "recordedAt": ..., "tenantId": ..., "source": "scim",
     "subject": {"type": "user", "id": ...}, "data": {...}}

`PUBLIC_TYPES` is the one table from the log's internal kinds to public type names;
`data` holds the change's old and new values with camelCase keys (docs/events.md is the
catalogue). Internal column names and storage kinds never leave this module.

The cursor, and why it never skips nor repeats an event
--------------------------------------------------------
On PostgreSQL an event's id comes from a sequence at INSERT, but transactions commit in
another order: "events after id N" can skip an event with a smaller id whose
transaction commits later. So every event stores its writing transaction's id (`txid`,
pg_current_xact_id(), the server default). The feed serves only events whose txid is
below the xmin of the reading statement's snapshot (its oldest transaction in
progress; `_XMIN` leaves out those running in other databases of the server): every
transaction that could still commit has a txid at or above it, and new transactions get
larger ones, so the set of events below it is final. Horizon and page are one
statement, one snapshot (a GET's session may run each statement on its own). Served in
(txid, id) order, the cursor is the last served (txid, id) and the next page is
`(txid, id) > cursor`: nothing that could still appear sorts before a position already
served. The price: an event appears only once every transaction of this database older
than its own has ended (a long transaction, on any table, holds the feed back while it
runs). On SQLite one writer at a time commits, in id order; txid is 0 and the order is
the id's.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.orm import Session

from connector import events
from connector.errors import DomainError
from connector.models import Event

VERSION = 1
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
ID_PREFIX = "evt_"

# Internal kind -> public type name: the only place the two meet.
PUBLIC_TYPES: dict[str, str] = {
    events.USER_CREATED: "user.created",
    events.USER_PROFILE: "user.profile_changed",
    events.USER_STATUS: "user.status_changed",
    events.USER_IDP_STATUS: "user.idp_status_reported",
    events.USER_DELETED_LIST: "user.deleted_list_changed",
    events.USER_REMOVED: "user.deleted",
    events.USER_RESTORED: "user.restored",
    events.USER_PURGED: "user.purged",
    events.USER_GUEST: "user.guest_changed",
    events.USER_EXTERNAL_GUEST: "user.external_guest_changed",
    events.USER_ADMIN: "user.admin_changed",
    events.USER_MODULES: "user.modules_changed",
    events.USER_INVITED: "user.invited",
    events.USER_CLAIMED: "user.claimed",
    events.USER_FRONTLINE: "user.frontline_changed",
    events.USER_ADOPTED: "user.adopted",
    events.GROUP_CREATED: "group.created",
    events.GROUP_RENAMED: "group.renamed",
    events.GROUP_REMOVED: "group.deleted",
    events.GROUP_MODULES: "group.modules_changed",
    events.MEMBER_ADDED: "group.member_added",
    events.MEMBER_REMOVED: "group.member_removed",
    events.TENANT_CREATED: "tenant.created",
    events.TENANT_SETTINGS: "tenant.settings_changed",
    events.TOKEN_ROTATED: "tenant.scim_token_rotated",
    events.MODULE_ADDED: "tenant.module_added",
    events.MODULE_RENAMED: "tenant.module_renamed",
    events.MODULE_REMOVED: "tenant.module_removed",
    events.TENANT_RENAMED: "tenant.renamed",
    events.TENANT_CLOSED: "tenant.closed",
    events.TENANT_REOPENED: "tenant.reopened",
    events.ENTRA_REGISTRATION: "tenant.entra_registration_changed",
    events.ENTRA_REGISTRATION_REMOVED: "tenant.entra_registration_removed",
    events.BILLING_PROFILE: "tenant.billing_profile_changed",
    events.SYNC_ROUND_HELD: "sync.round_held",
    events.SYNC_ROUND_COMPLETED: "sync.round_completed",
    events.MONTH_CLOSED: "billing.month_closed",
}
KINDS_OF_TYPE = {public: kind for kind, public in PUBLIC_TYPES.items()}
MEMBER_KINDS = (events.MEMBER_ADDED, events.MEMBER_REMOVED)
# Facts rather than changes: their data is the fact itself (no old value).
FACT_KINDS = (events.SYNC_ROUND_HELD, events.SYNC_ROUND_COMPLETED, events.MONTH_CLOSED)


class InvalidFeedQuery(DomainError):
    """A cursor, type, limit or user the feed cannot read: a 400."""


@dataclass(frozen=True, order=True)
class Position:
    """A place in the feed: after the event (txid, id)."""

    txid: int
    id: int

    def encode(self) -> str:
        raw = json.dumps({"v": VERSION, "t": self.txid, "i": self.id}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


START = Position(0, 0)
_BAD_CURSOR = ("The cursor {!r} is not one this feed handed out: pass a nextCursor from an "
               "earlier answer unchanged, or leave `after` out to start from the oldest "
               "event (GET …/events/cursor gives one for the newest).")


def decode_cursor(value: str) -> Position:
    """The position a cursor names; InvalidFeedQuery for anything else."""
    if len(value) > 200:
        raise InvalidFeedQuery(_BAD_CURSOR.format(value[:40] + "…"))
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidFeedQuery(_BAD_CURSOR.format(value)) from None
    if (not isinstance(data, dict) or set(data) != {"v", "t", "i"} or data["v"] != VERSION
            or not all(type(data[k]) is int and 0 <= data[k] < 2**63 for k in ("t", "i"))):
        raise InvalidFeedQuery(_BAD_CURSOR.format(value))
    return Position(data["t"], data["i"])


@dataclass(frozen=True)
class FeedQuery:
    after: Position = START
    limit: int = DEFAULT_LIMIT
    kinds: tuple[str, ...] = ()  # internal kinds; empty: all
    user_id: str | None = None
    until: Position | None = None  # up to and including this position (a redelivery)


def parse_query(args: Any) -> FeedQuery:
    """The feed's query arguments (a werkzeug MultiDict): after, limit, type (repeatable
    or comma-separated public type names), userId."""
    after = args.get("after")
    raw_limit = args.get("limit")
    if raw_limit is None:
        limit = DEFAULT_LIMIT
    else:
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidFeedQuery(f"limit must be a whole number from 1 to {MAX_LIMIT} "
                                   f"(got {raw_limit!r}); leave it out for {DEFAULT_LIMIT}.")
    names = [n.strip() for value in args.getlist("type") for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in KINDS_OF_TYPE]
    if unknown:
        raise InvalidFeedQuery(f"Unknown event type {', '.join(map(repr, unknown))}: "
                               "docs/events.md lists the types (e.g. user.created).")
    user_id = args.get("userId")
    if user_id is not None and not 1 <= len(user_id) <= 36:
        raise InvalidFeedQuery("userId must be a user's id (36 characters at most).")
    return FeedQuery(after=decode_cursor(after) if after else START, limit=limit,
                     kinds=tuple(dict.fromkeys(KINDS_OF_TYPE[n] for n in names)),
                     user_id=user_id)


@dataclass(frozen=True)
class FeedPage:
    data: list[dict[str, Any]]
    next_cursor: Position
    has_more: bool

    def as_json(self) -> dict[str, Any]:
        return {"data": self.data, "nextCursor": self.next_cursor.encode(),
                "hasMore": self.has_more}


# The horizon: the snapshot's xmin (its oldest in-progress transaction, or xmax when none
# is), leaving out transactions that pg_stat_activity shows running in another database
# of the server: they cannot write this database's events, and one long transaction
# elsewhere would otherwise hold the feed back. A transaction whose database it cannot
# tell (ended since the snapshot, prepared, stats hidden) counts as this database's:
# the horizon can only come out lower than it might, never higher.
_XMIN = """(SELECT LEAST((pg_snapshot_xmax(s)::text)::bigint,
                (SELECT min((x::text)::bigint) FROM pg_snapshot_xip(s) AS x
                 WHERE x::xid NOT IN (SELECT backend_xid FROM pg_stat_activity
                                      WHERE datname <> current_database()
                                        AND backend_xid IS NOT NULL)))
 FROM (SELECT pg_current_snapshot() AS s) AS snapshot)"""


def read(session: Session, tenant_id: str | None, query: FeedQuery) -> FeedPage:
    """One page of the feed, of one tenant or (None) of all."""
    rows = rows_of(session, tenant_id, dataclasses.replace(query, limit=query.limit + 1))
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    last = Position(rows[-1].txid, rows[-1].id) if rows else query.after
    return FeedPage([public(e) for e in rows], last, more)


def rows_of(session: Session, tenant_id: str | None, query: FeedQuery) -> Sequence[Any]:
    """The events of a page as stored rows (attributes named as Event's; up to
    `query.limit`, no look-ahead)."""
    postgresql = session.get_bind().dialect.name == "postgresql"
    statement = _statement(postgresql, tenant_id is not None, query.kinds,
                           query.until is not None, query.user_id is not None)
    params: dict[str, Any] = {"after_txid": query.after.txid, "after_id": query.after.id,
                              "tenant_id": tenant_id, "user_id": query.user_id,
                              "limit": query.limit}
    if query.until is not None:
        params.update(until_txid=query.until.txid, until_id=query.until.id)
    # On the session's connection: the statement names mapped columns, so the
    # session would run it through the ORM's compile and loading steps for plain rows
    # (a quarter of a page's CPU; the webhook dispatcher reads a page per message).
    return session.connection().execute(statement, params).all()


def _kinds_in(kinds: tuple[str, ...]) -> ColumnElement[bool]:
    """kind IN (…) written into the statement (the kinds are this module's constants,
    checked here): one cached statement per filter, nothing expanded per execution."""
    for kind in kinds:
        if not _KIND.fullmatch(kind):
            raise ValueError(f"not an event kind: {kind!r}")
    listed = ", ".join(f"'{k}'" for k in kinds)
    return text(f"events.kind IN ({listed})")  # type: ignore[return-value]


_KIND = re.compile(r"[a-z][a-z_.]{0,31}")


@functools.lru_cache(maxsize=256)
def _statement(postgresql: bool, one_tenant: bool, kinds: tuple[str, ...], until: bool,
               user: bool) -> Select[Any]:
    """The page's SELECT, built once per shape (values are bound parameters). A
    tenant's feed is one range of the index (tenant_id, txid, id); every tenant's feed
    on PostgreSQL one range of (txid, id), so a partner-wide page costs the same with
    ten tenants or ten thousand. SQLite: txid is 0, the order the id's, served by the
    primary key. PostgreSQL serves only what is below the horizon (`_XMIN`)."""
    events_table = Event.__table__
    after = tuple_(Event.txid, Event.id) > tuple_(bindparam("after_txid", type_=BigInteger()),
                                                  bindparam("after_id", type_=BigInteger()))
    conditions: list[ColumnElement[bool]] = [after]
    if one_tenant:
        conditions.append(Event.tenant_id == bindparam("tenant_id"))
    if postgresql:
        conditions.append(Event.txid < literal_column(_XMIN, BigInteger()))
    else:  # SQLite: txid is always 0, so this follows; it lets the primary key serve
        conditions.append(Event.id > bindparam("after_id", type_=BigInteger()))
    conditions.append(_kinds_in(kinds or tuple(PUBLIC_TYPES)))
    if until:
        conditions.append(tuple_(Event.txid, Event.id) <= tuple_(
            bindparam("until_txid", type_=BigInteger()),
            bindparam("until_id", type_=BigInteger())))
    if user:
        user_id: Any = bindparam("user_id")
        conditions.append(or_(
            and_(Event.subject_type == "user", Event.subject_id == user_id),
            and_(Event.kind.in_(MEMBER_KINDS), Event.object_id == user_id)))
    limit = bindparam("limit", type_=Integer())
    if one_tenant or postgresql:
        return (select(events_table).where(*conditions).order_by(Event.txid, Event.id)
                .limit(limit))
    return select(events_table).where(*conditions).order_by(Event.id).limit(limit)


def latest(session: Session, tenant_id: str | None) -> Position:
    """A position after every event served so far: where a new consumer starts."""
    if session.get_bind().dialect.name == "postgresql":
        horizon = session.scalar(text(f"SELECT {_XMIN}"))
        return Position(int(horizon or 0), 0)
    if tenant_id is None:
        newest = session.scalar(select(func.max(Event.id)))
    else:
        newest = session.scalar(select(Event.id).where(Event.tenant_id == tenant_id)
                                .order_by(Event.txid.desc(), Event.id.desc()).limit(1))
    return Position(0, newest) if newest else START


# -- the public shape --------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _public_value(value: Any) -> Any:
    """A stored old/new value with camelCase keys (the log keeps some snake_case)."""
    if isinstance(value, dict):
        return {_camel(k): v for k, v in value.items()}
    return value


def _instant(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def public(event: Event | Any) -> dict[str, Any]:
    """One event in the feed's public shape (version 1): an Event or a row of one."""
    if event.kind in MEMBER_KINDS:
        data: dict[str, Any] = {"groupId": event.subject_id, "userId": event.object_id}
    elif event.kind in FACT_KINDS:
        data = dict(event.new_value or {})
    else:
        data = {"old": _public_value(event.old_value), "new": _public_value(event.new_value)}
    out = {"id": f"{ID_PREFIX}{event.id}", "type": PUBLIC_TYPES[event.kind],
           "version": VERSION, "occurredAt": _instant(event.effective_at),
           "recordedAt": _instant(event.recorded_at), "tenantId": event.tenant_id,
           "source": event.source,
           "subject": {"type": event.subject_type, "id": event.subject_id}, "data": data}
    if event.reason:  # a back-dated correction: why the billing clerk recorded it
        out["reason"] = event.reason
    return out

