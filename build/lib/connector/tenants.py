"""Tenants and their SCIM bearer tokens.

A token is 256 random bits, shown once, stored as its SHA-256 digest. A digest of a
high-entropy secret needs no slow KDF: nobody can guess their way to a pre-image, and
the lookup stays one indexed query. The digest found is still compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from connector import events
from connector.errors import Conflict, InvalidSetting, NotFound
from connector.events import WriteContext
from connector.models import Module, ScimToken, Tenant, TenantCounter
from connector.status import Source, TenantPolicy

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


def create_tenant(session: Session, name: str, now: dt.datetime, actor: str = "cli"
                  ) -> tuple[Tenant, IssuedToken]:
    """Create a tenant with the default module catalogue and a first SCIM token."""
    tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=now,
                    status_source="identity_provider", scim_default_status="active",
                    provisioning_paused=False, time_zone="UTC")
    session.add(tenant)
    session.flush()
    session.add(TenantCounter(tenant_id=tenant.id, live_users=0, generation=0))
    session.add_all(Module(tenant_id=tenant.id, name=m, created_at=now) for m in DEFAULT_MODULES)
    ctx = WriteContext(tenant.id, Source.SYSTEM, actor, "tenant-create", now)
    events.record(session, ctx, "tenant", tenant.id, events.TENANT_CREATED, None, {"name": name})
    return tenant, _issue_token(session, tenant.id, now)


def rotate_token(session: Session, tenant_id: str, now: dt.datetime, actor: str = "cli"
                 ) -> IssuedToken:
    """Revoke every live token of the tenant and issue a new one."""
    if session.get(Tenant, tenant_id) is None:
        raise NotFound(f"No tenant with id {tenant_id}; `connector tenant list` shows them.")
    session.execute(
        update(ScimToken)
        .where(ScimToken.tenant_id == tenant_id, ScimToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    ctx = WriteContext(tenant_id, Source.SYSTEM, actor, "token-rotate", now)
    events.record(session, ctx, "tenant", tenant_id, events.TOKEN_ROTATED)
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
    row = session.execute(_BY_DIGEST, {"digest": digest}).first()
    if row is None or not hmac.compare_digest(row[0], digest):
        return None
    return Tenant(**{column.key: row[index + 1] for index, column in enumerate(_TENANTS.c)})


class TokenCache:
    """Token digest → tenant for a few seconds, so reads skip the token lookup.

    Only reads use it (see `ScimSettings.token_cache_seconds`): every write checks the
    database, so a revoked token or a paused tenant is seen at once where it matters.
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

    def authenticate(self, session: Session, token: str) -> Tenant | None:
        if self.ttl <= 0:
            return authenticate(session, token)
        digest = hash_token(token)
        now = self.clock()
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        tenant = authenticate(session, token)
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


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.created_at, Tenant.id)))


def policy_of(tenant: Tenant) -> TenantPolicy:
    return TenantPolicy(tenant.status_source, tenant.scim_default_status,
                        tenant.provisioning_paused, bool(tenant.entra_sync))


def module_catalogue(session: Session, tenant_id: str) -> dict[str, str]:
    """Map each module's casefolded name to its catalogue spelling."""
    names = session.scalars(select(Module.name).where(Module.tenant_id == tenant_id))
    return {n.casefold(): n for n in names}


def add_module(session: Session, ctx: WriteContext, name: str) -> str:
    """Add a module (a legacy plan, a new product) to the tenant's catalogue."""
    name = name.strip()
    if not 1 <= len(name) <= 64 or any(ord(c) < 32 for c in name):
        raise InvalidSetting("A module name needs 1 to 64 printable characters.")
    existing = module_catalogue(session, ctx.tenant_id)
    if name.casefold() in existing:
        raise Conflict(f"Module {existing[name.casefold()]!r} is already in the catalogue.",
                       "name")
    session.add(Module(tenant_id=ctx.tenant_id, name=name, created_at=ctx.now))
    events.record(session, ctx, "tenant", ctx.tenant_id, events.MODULE_ADDED, None, name)
    return name
