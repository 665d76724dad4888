"""Tenants and their SCIM bearer tokens.

A token is 256 random bits, shown once, stored as its SHA-256 digest. A digest of a
high-entropy secret needs no slow KDF: nobody can guess their way to a pre-image, and
the lookup stays one indexed query. The digest found is still compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import logging
import secrets
import threading
import time
import unicodedata
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, event, select, update
from sqlalchemy.orm import Session

from connector import clock, events, search_words
from connector.errors import Conflict, InvalidFields, NotFound, StateConflict
from connector.events import WriteContext
from connector.models import Module, ScimToken, Tenant, TenantCounter
from connector.status import Source, TenantPolicy

log = logging.getLogger("connector.tenants")
DEFAULT_MODULES = ("Hybrid", "Engage", "Unify")
TOKEN_PREFIX = "scim_"


@dataclass(frozen=True)
class IssuedToken:
    tenant_id: str
    token: str  # the only time the clear token exists


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_tenant(session: Session, name: str, now: dt.datetime, actor: str = "cli",
                  source: Source = Source.ADMIN) -> tuple[Tenant, IssuedToken]:
    """Create a tenant with the default module catalogue and a first SCIM token. An
    admin's doing (UI, API, CLI: docs/events.md's `source`) unless `source` says the
    connector did it itself (bootstrap)."""
    tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=now,
                    status_source="identity_provider", scim_default_status="active",
                    provisioning_paused=False, time_zone="UTC")
    session.add(tenant)
    session.flush()
    session.add(TenantCounter(tenant_id=tenant.id, live_users=0, generation=0))
    session.add_all(Module(tenant_id=tenant.id, name=m, created_at=now) for m in DEFAULT_MODULES)
    session.flush()  # the catalogue is read in this transaction too (prices, modules)
    ctx = WriteContext(tenant.id, source, actor, "tenant-create", now)
    events.record(session, ctx, "tenant", tenant.id, events.TENANT_CREATED, None, {"name": name})
    return tenant, _issue_token(session, tenant.id, now)


def rotate_token(session: Session, tenant_id: str, now: dt.datetime, actor: str = "cli"
                 ) -> IssuedToken:
    """Revoke every live token of the tenant and issue a new one (an admin's doing)."""
    named_tenant(session, tenant_id)
    session.execute(
        update(ScimToken)
        .where(ScimToken.tenant_id == tenant_id, ScimToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    ctx = WriteContext(tenant_id, Source.ADMIN, actor, "token-rotate", now)
    events.record(session, ctx, "tenant", tenant_id, events.TOKEN_ROTATED)
    forget_on_commit(session, tenant_id)
    return _issue_token(session, tenant_id, now)


def _issue_token(session: Session, tenant_id: str, now: dt.datetime) -> IssuedToken:
    token = new_token()
    session.add(ScimToken(id=str(uuid.uuid4()), tenant_id=tenant_id, token_hash=hash_token(token),
                          hint=token[:9], created_at=now))
    return IssuedToken(tenant_id, token)


# Built once, on the tables: this runs on every write and every uncached read.
_TOKENS, _TENANTS = ScimToken.__table__, Tenant.__table__
_BY_DIGEST = (select(_TOKENS.c.token_hash, *_TENANTS.c)
              .join(_TENANTS, _TENANTS.c.id == _TOKENS.c.tenant_id)
              .where(_TOKENS.c.token_hash == bindparam("digest"), _TOKENS.c.revoked_at.is_(None)))


def authenticate(session: Session, token: str) -> Tenant | None:
    """Return the tenant a live SCIM token belongs to, or None.

    The tenant comes back as a detached snapshot (not tracked by the session): callers
    read its settings; changing a tenant goes through its own functions.
    """
    digest = hash_token(token)
    row = session.connection().execute(_BY_DIGEST, {"digest": digest}).first()
    if row is None or not hmac.compare_digest(row[0], digest):
        return None
    values = tuple(row[1:])
    known = _SNAPSHOTS.get(digest)
    if known is not None and known[0] == values:
        return known[1]  # the same row as last time: the same snapshot (no ORM object built)
    tenant = Tenant(**{column.key: values[index] for index, column in enumerate(_TENANTS.c)})
    if len(_SNAPSHOTS) >= _MAX_SNAPSHOTS:
        _SNAPSHOTS.clear()
    _SNAPSHOTS[digest] = (values, tenant)
    return tenant


# Token digest -> (the tenant's row as last read, its snapshot). Every write still reads
# the row (see `TokenCache`); only building a new Tenant object for an unchanged row is
# skipped, a few per cent of a SCIM write. Snapshots are read-only by contract, and
# shared between requests already by the read cache.
_SNAPSHOTS: dict[str, tuple[tuple[Any, ...], Tenant]] = {}
_MAX_SNAPSHOTS = 10_000


class TokenCache:
    """Token digest → tenant for a few seconds, so reads skip the token lookup.

    Only reads use it (see `ScimSettings.token_cache_seconds`): every write checks the
    database, so a revoked token or a paused tenant is seen at once where it matters.
    A rotation or a close committed in this process empties the tenant's entries at
    once (`forget_on_commit`): a leaked token stops reading here when it is rotated away;
    other processes of the instance trust it until their entry expires.
    Keyed by the digest, never the token; bounded, so a flood of wrong tokens (which are
    never cached) or of many tenants cannot grow it without limit.
    """

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[float, Tenant]] = {}
        self._lock = threading.Lock()
        _CACHES.add(self)

    def forget(self, tenant_id: str) -> None:
        """Drop the tenant's entries: its tokens are checked again on the next read."""
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if v[1].id != tenant_id}

    def authenticate(self, session: Callable[[], Session], token: str) -> Tenant | None:
        """`session` makes the session for a lookup, called only when the cache does not
        answer: a read served from the cache opens none (a GET by id then reads on a
        bare connection, with no session transaction to begin and roll back)."""
        if self.ttl <= 0:
            return authenticate(session(), token)
        digest = hash_token(token)
        now = self.clock()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        tenant = authenticate(session(), token)
        if tenant is not None:  # a detached snapshot, safe to share between requests
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                    if len(self._entries) >= self.max_entries:
                        self._entries.clear()
                self._entries[digest] = (now + self.ttl, tenant)
        return tenant

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# Every token cache of this process (one per app), for `forget_on_commit`.
_CACHES: weakref.WeakSet[TokenCache] = weakref.WeakSet()
_FORGET = "connector.tenants.forget"


def forget_on_commit(session: Session, tenant_id: str) -> None:
    """Once the session's transaction commits, drop the tenant from every token cache
    of this process (its tokens were rotated away, or it was closed)."""
    session.info.setdefault(_FORGET, set()).add(tenant_id)


@event.listens_for(Session, "after_commit")
def _forget_committed(session: Session) -> None:
    for tenant_id in session.info.pop(_FORGET, ()):
        for cache in list(_CACHES):
            cache.forget(tenant_id)


@event.listens_for(Session, "after_rollback")
def _keep_on_rollback(session: Session) -> None:
    session.info.pop(_FORGET, None)  # nothing changed: nothing to forget


def list_tenants(session: Session, limit: int | None = None) -> list[Tenant]:
    """Every tenant (or the first `limit`), oldest first."""
    return list(session.scalars(select(Tenant).order_by(Tenant.created_at, Tenant.id)
                                .limit(limit)))


def names_of(session: Session, tenant_ids: set[str]) -> dict[str, str]:
    """The names of these tenants (ids of tenants since purged are left out)."""
    if not tenant_ids:
        return {}
    return {row.id: row.name for row in session.execute(
        select(Tenant.id, Tenant.name).where(Tenant.id.in_(sorted(tenant_ids))))}


def tenant_called(session: Session, typed: str) -> Tenant:
    """The one tenant whose id is `typed`, or whose name is `typed` in any case and
    with or without accents; InvalidFields (field "tenant") in words otherwise."""
    by_id = session.get(Tenant, typed) if len(typed) <= 36 else None
    if by_id is not None:
        return by_id
    wanted = search_words.fold(typed)
    named = [row.id for row in session.execute(select(Tenant.id, Tenant.name))
             if folded_name(row.name) == wanted]
    if len(named) == 1:
        return session.get_one(Tenant, named[0])
    if not named:
        raise InvalidFields({"tenant": f"No tenant is called “{typed}”. Type its name as "
                                       "the Tenants page shows it, or its id."})
    raise InvalidFields({"tenant": f"{len(named)} tenants are called “{typed}”: type the id "
                                   "of the one you mean (search the Tenants page for the "
                                   "name; each tenant's address holds its id)."})


@functools.lru_cache(maxsize=100_000)
def folded_name(name: str) -> str:
    """A tenant's name as searches compare it (search_words.fold: case and accents);
    a pure function of the name, so remembered."""
    return search_words.fold(name)


def named_tenant(session: Session, tenant_id: str, *, lock: bool = False) -> Tenant:
    """The tenant a command line names by id (locked for a change when `lock`), or
    NotFound in words that say where the ids are: before any question about the tenant
    itself, whose answer for an unknown id (no registration, nothing listed) misleads."""
    tenant = session.get(Tenant, tenant_id, with_for_update=lock)
    if tenant is None:
        raise NotFound(f"No tenant with id {tenant_id}; `connector tenant list` shows them.")
    return tenant


def policy_of(tenant: Tenant) -> TenantPolicy:
    return TenantPolicy(tenant.status_source, tenant.scim_default_status,
                        tenant.provisioning_paused, bool(tenant.entra_sync))


def module_catalogue(session: Session, tenant_id: str) -> dict[str, str]:
    """Map each module's casefolded name to its catalogue spelling."""
    names = session.scalars(select(Module.name).where(Module.tenant_id == tenant_id))
    return {n.casefold(): n for n in names}


MODULE_NAME_LENGTH = 40
TENANT_NAME_LENGTH = 200


def check_module_name(name: str) -> str:
    """A module name as stored: plain text (no markup, no control characters), 1 to
    MODULE_NAME_LENGTH characters, surrounding spaces dropped; else a refusal for the
    form's `name` field saying what to change."""
    name = name.strip()
    if not name:
        raise InvalidFields({"name": "A module needs a name."})
    if len(name) > MODULE_NAME_LENGTH:
        raise InvalidFields({"name": f"A module name may have at most {MODULE_NAME_LENGTH} "
                                     f"characters; this one has {len(name)}."})
    if any(c in "<>" for c in name):
        raise InvalidFields({"name": "A module name is plain text: it may not contain < "
                                     "or >."})
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise InvalidFields({"name": "A module name may not contain control characters "
                                     "(line breaks, tabs, invisible formatting)."})
    return name


def check_tenant_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= TENANT_NAME_LENGTH or any(
            unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
        raise InvalidFields({"name": f"A tenant name needs 1 to {TENANT_NAME_LENGTH} "
                                     "characters, without line breaks or tabs."})
    return name


def add_module(session: Session, ctx: WriteContext, name: str) -> str:
    """Add a module (a legacy plan, a new product) to the tenant's catalogue."""
    name = check_module_name(name)
    existing = module_catalogue(session, ctx.tenant_id)
    if name.casefold() in existing:
        raise Conflict(f"Module {existing[name.casefold()]!r} is already in the catalogue.",
                       "name")
    session.add(Module(tenant_id=ctx.tenant_id, name=name, created_at=ctx.now))
    events.record(session, ctx, "tenant", ctx.tenant_id, events.MODULE_ADDED, None, name)
    return name


# -- renaming, closing, reopening and purging a tenant ---------------------------------------


def rename_tenant(session: Session, ctx: WriteContext, tenant: Tenant, name: str
                  ) -> tuple[str, str]:
    """Give the tenant a new name; returns (old, new). Closed months keep theirs."""
    name = check_tenant_name(name)
    old = tenant.name
    if name != old:
        tenant.name = name
        events.record(session, ctx, "tenant", tenant.id, events.TENANT_RENAMED, old, name)
    return old, name


def close_tenant(session: Session, ctx: WriteContext, tenant: Tenant) -> None:
    """Close the tenant: SCIM is refused, Entra sync stops, no month after this one
    closes; closed months and invoices stay readable until the tenant is purged."""
    if tenant.closed_at is not None:
        raise StateConflict(f"{tenant.name} is closed already (since "
                            f"{tenant.closed_at:%Y-%m-%d}).")
    tenant.closed_at = ctx.now
    events.record(session, ctx, "tenant", tenant.id, events.TENANT_CLOSED)
    forget_on_commit(session, tenant.id)


def reopen_tenant(session: Session, ctx: WriteContext, tenant: Tenant) -> None:
    """Open a closed tenant again (before it is purged): SCIM and Entra sync resume."""
    if tenant.closed_at is None:
        raise StateConflict(f"{tenant.name} is open: there is nothing to reopen.")
    tenant.closed_at = None
    events.record(session, ctx, "tenant", tenant.id, events.TENANT_REOPENED)


def purge_due(tenant: Tenant, retention_days: int) -> dt.datetime | None:
    """When a closed tenant is purged (None: it is open)."""
    if tenant.closed_at is None:
        return None
    return tenant.closed_at + dt.timedelta(days=max(0, retention_days))


# Kept when a tenant is purged: the partners' audit log says who did what, and when.
_KEPT_ON_PURGE = frozenset({"audit_log", "tenants"})


def purge_tenant(session: Session, tenant_id: str) -> None:
    """Delete everything of a tenant, children first, then the tenant itself: its users,
    groups, events, tokens, billing history, sync state and tenant admins. The audit
    log keeps its lines (they name the tenant's id)."""
    from connector.models import Base  # every table, packages' too

    tables = {t.name: t for t in Base.metadata.sorted_tables}
    for table in reversed(Base.metadata.sorted_tables):
        if table.name in _KEPT_ON_PURGE:
            continue
        if "tenant_id" in table.c:
            session.execute(table.delete().where(table.c.tenant_id == tenant_id))
            continue
        for fk in table.foreign_keys:  # rows that hang off a tenant's row (billing lines…)
            parent = tables[fk.column.table.name]
            if "tenant_id" in parent.c:
                session.execute(table.delete().where(fk.parent.in_(
                    select(fk.column).where(parent.c.tenant_id == tenant_id))))
    session.execute(delete(Tenant).where(Tenant.id == tenant_id))


def tenants_to_purge(session: Session, now: dt.datetime, retention_days: int) -> list[Tenant]:
    """Closed tenants whose retention period is over, oldest closed first."""
    cutoff = now - dt.timedelta(days=max(0, retention_days))
    return list(session.scalars(select(Tenant).where(
        Tenant.closed_at.is_not(None), Tenant.closed_at <= cutoff).order_by(Tenant.closed_at)))


# How a purge is audited: (session, tenant, now), in the purge's transaction. The
# operator's side (`connector.cli`) writes the line; this module writes no audit log.
PurgeAudit = Callable[[Session, Tenant, dt.datetime], None]


def purge_closed(maker: Callable[[], Session], now: dt.datetime, retention_days: int,
                 audit: PurgeAudit) -> list[tuple[str, str]]:
    """Purge every closed tenant whose retention period is over, one transaction each
    (with its audit line); returns their (id, name)."""
    with maker() as s:
        due = [(t.id, t.name) for t in tenants_to_purge(s, now, retention_days)]
    purged = []
    for tenant_id, name in due:
        with maker() as s:
            tenant = s.get(Tenant, tenant_id, with_for_update=True)
            if tenant is None or tenant.closed_at is None or tenant.closed_at > now - \
                    dt.timedelta(days=max(0, retention_days)):
                continue  # reopened or purged meanwhile
            audit(s, tenant, now)
            purge_tenant(s, tenant_id)
            s.commit()
        purged.append((tenant_id, name))
    return purged


def purge_job(maker: Callable[[], Session], retention_days: int, audit: PurgeAudit) -> None:
    """The scheduler's daily pass: never raises (the job must run again)."""
    try:
        for tenant_id, name in purge_closed(maker, clock.now(), retention_days, audit):
            log.info("purged closed tenant %s (%s)", name, tenant_id)
    except Exception:  # noqa: BLE001 - logged; the next pass tries again
        log.exception("purging closed tenants failed")


def add_purge_job(scheduler: Any, maker: Callable[[], Session], retention_days: int,
                  audit: PurgeAudit) -> None:
    """Purge due tenants once a day from this process's scheduler (`connector worker`)."""
    scheduler.add_job(purge_job, "interval", hours=24, args=(maker, retention_days, audit),
                      id="tenants:purge", max_instances=1, coalesce=True,
                      replace_existing=True,
                      next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60))
