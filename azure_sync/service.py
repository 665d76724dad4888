"""Wiring: app registrations in the database → a Graph client → a round.

Holds what lives as long as the process (the token provider, whose msal apps keep
their token caches) and builds, per round, a client with a fresh retry budget and the
database-backed throttle gate shared by every tenant of the same app registration.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from azure_sync import clouds, rounds, scope, secrets, staging
from azure_sync.graph import AppIdentity, GraphClient
from azure_sync.retry import RetryBudget
from azure_sync.tokens import Credential, TokenProvider
from azure_sync.transport import ReachSession
from connector import events, notify, tenant_settings
from connector.config import AzureSyncSettings
from connector.errors import (
    FieldChecks,
    InvalidFields,
    InvalidSetting,
    NotFound,
    StateConflict,
)
from connector.events import WriteContext
from connector.models import AppThrottle, EntraRegistration, Tenant, User
from connector.status import Source

log = logging.getLogger("connector.sync")


class DatabaseGate:
    """The "paused until" of an app registration, shared through the database by every
    process and tenant using it."""

    def __init__(self, maker: sessionmaker[Session]) -> None:
        self.maker = maker

    def paused_until(self, client_id: str) -> dt.datetime | None:
        with self.maker() as s:
            return s.scalar(select(AppThrottle.paused_until)
                            .where(AppThrottle.client_id == client_id))

    def pause(self, client_id: str, until: dt.datetime) -> None:
        with self.maker() as s:
            row = s.get(AppThrottle, client_id, with_for_update=True)
            if row is None:
                s.add(AppThrottle(client_id=client_id, paused_until=until))
            elif until > row.paused_until:
                row.paused_until = until
            s.commit()


# A call an admin waits on retries at most this often, waiting at most this long each
# time: about 15 s in all at worst, besides the requests' own timeouts.
INTERACTIVE_RETRIES = 3
INTERACTIVE_MAX_WAIT = 5.0


class SyncService:
    def __init__(self, settings: AzureSyncSettings, maker: sessionmaker[Session],
                 write_maker: sessionmaker[Session] | None = None,
                 verify: str | None = None) -> None:
        """verify: a CA bundle trusted besides the OS store, in place of
        settings.ca_bundle (the tests' CA)."""
        self.settings = settings
        self.maker = maker
        self.write_maker = write_maker or maker
        self.ca_bundle = verify if verify is not None else settings.ca_bundle
        self.http = ReachSession(settings.request_timeout_seconds, self.ca_bundle,
                                 settings.proxy, settings.no_proxy,
                                 settings.allow_private_hosts)
        self.tokens = TokenProvider(self.http)
        self.gate = DatabaseGate(self.write_maker)
        # Where an admin's "Run now" runs: handed to `connector worker` (True, with
        # server.schedulers "worker" or "external"), or on a thread of this process.
        self.rounds_in_worker = False

    def client_for(self, registration: EntraRegistration, **overrides: Any) -> GraphClient:
        credential = credential_of(self.settings, registration)
        app = AppIdentity(registration.authority_host, registration.directory_id,
                          registration.client_id, credential, registration.graph_base_url,
                          self.settings.graph_scope)
        kwargs: dict[str, Any] = {"backoff_cap": float(self.settings.backoff_cap_seconds),
                                  **overrides}
        return GraphClient(self.http, self.tokens, app,
                           RetryBudget(self.settings.retry_budget), self.gate, **kwargs)

    def interactive_client(self, registration: EntraRegistration) -> GraphClient:
        """A client for a call an admin waits on (a preview, "sync this user now"): a
        failing or throttling Graph answers within seconds, in words, instead of holding
        the page for a round's whole retry budget (or a Retry-After of minutes)."""
        client = self.client_for(registration, max_wait=INTERACTIVE_MAX_WAIT,
                                 backoff_cap=INTERACTIVE_MAX_WAIT,
                                 then="try again in a few minutes")
        client.budget = RetryBudget(min(INTERACTIVE_RETRIES, self.settings.retry_budget))
        return client

    def run_in_background(self, tenant_id: str, trigger: str = "manual") -> None:
        """Start a manual round on a thread of this process (it may take minutes; the
        run log shows it). Never raises into the thread: a crash is logged."""
        def run() -> None:
            try:
                self.run(tenant_id, trigger)
            except Exception:  # noqa: BLE001 - logged; the run log shows the failure
                log.exception("manual sync round crashed for %s", tenant_id)

        threading.Thread(target=run, daemon=True, name=f"sync-{tenant_id[:8]}").start()

    def run(self, tenant_id: str, trigger: str = "schedule",
            options: rounds.RoundOptions | None = None, *,
            started_before: dt.datetime | None = None, due_at: dt.datetime | None = None,
            **client_overrides: Any) -> rounds.RoundResult:
        """Run (or resume) the tenant's round. started_before: start a new round only if
        the last one started before then (checked under the lease: the scheduler's
        once-per-interval rule, see azure_sync.scheduler); due_at: when the scheduler's
        job was due (a new round counts as started then)."""
        with self.maker() as s:
            registration = s.get(EntraRegistration, tenant_id)
            if registration is None:
                raise NotFound(f"Tenant {tenant_id} has no Entra app registration; "
                               "register one first (connector sync register).")
            s.expunge(registration)
        client = self.client_for(registration, **client_overrides)
        options = options or rounds.RoundOptions(
            lease_seconds=self.settings.lease_seconds,
            max_pages=self.settings.max_pages_per_round,
            quarantine_after=self.settings.quarantine_after_failures,
            read_ahead=self.settings.read_ahead,
            pipeline=self.settings.pipeline)
        if started_before is not None:
            options = dataclasses.replace(options, started_before=started_before)
        if due_at is not None:
            options = dataclasses.replace(options, due_at=due_at)
        result = rounds.run_round(self.write_maker, tenant_id, client, options, trigger)
        notify.sync_round_ended(self.write_maker, tenant_id, self.settings.notify_after_failures)
        return result


def credential_of(settings: AzureSyncSettings, registration: EntraRegistration) -> Credential:
    if registration.secret_encrypted:
        return Credential(secret=secrets.decrypt(settings, registration.secret_encrypted))
    if registration.certificate_encrypted:
        return Credential(private_key_pem=secrets.decrypt(
            settings, registration.certificate_encrypted),
            thumbprint=registration.certificate_thumbprint)
    raise InvalidSetting("The app registration has neither a client secret nor a "
                         "certificate; set one.")


def certificate_thumbprint(pem: str) -> str:
    """The SHA-1 thumbprint Entra shows for a certificate (msal sends it as x5t)."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise InvalidSetting("The certificate is not a PEM X.509 certificate (give the "
                             "private key and the certificate in one PEM).") from None
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Entra's x5t


# How a new Entra object finds the existing connector account it is (Entra's "matching
# attribute"; userPrincipalName is Entra's default for SCIM apps).
MATCHING_ATTRIBUTES = ("userPrincipalName", "mail", "employeeId")
ID_LABELS = {"directory_id": "Directory (tenant) ID", "client_id": "Application (client) ID"}


def register(s: Session, settings: AzureSyncSettings, ctx: WriteContext, *,
             directory_id: str, client_id: str, secret: str | None = None,
             certificate_pem: str | None = None, authority_host: str | None = None,
             graph_base_url: str | None = None, interval_minutes: int | None = None,
             threshold_count: int | None = None, threshold_percent: int | None = None,
             scope_domains: list[str] | None = None, scope_groups: list[str] | None = None,
             scope_group_mode: str | None = None, soft_delete: str | None = None,
             matching_attribute: str | None = None) -> EntraRegistration:
    """Create or change a tenant's app registration; a given credential replaces the
    stored one (encrypted), and is never readable again. None leaves a setting as it is.

    A change of the scope takes effect at the next round. Groups and their mode need
    nothing more (every round reads the chosen groups' members); a change of the
    domains, or dropping the group scope, widens it to users no round has read lately,
    so the next round is then a full round."""
    if s.get(Tenant, ctx.tenant_id) is None:
        raise NotFound(f"Tenant {ctx.tenant_id} not found.")
    fields = FieldChecks()  # every wrong field said at once, in the form's words
    for name, value in (("directory_id", directory_id), ("client_id", client_id)):
        if not value or len(value) > 64 or any(c.isspace() for c in value):
            fields.add(name, f"The {ID_LABELS[name]} must be the value Entra shows (no "
                             "spaces, at most 64 characters).")
    if secret is not None and certificate_pem is not None:
        fields.add("client_secret", "Give a client secret or a certificate, not both.")
    registration = s.get(EntraRegistration, ctx.tenant_id)
    new = registration is None
    if registration is None:
        if secret is None and certificate_pem is None:
            fields.add("client_secret",
                       "A new registration needs a client secret or a certificate.")
        scim_users = s.scalar(select(func.count()).select_from(User).where(
            User.tenant_id == ctx.tenant_id, User.removed_at.is_(None),
            User.origin == Source.SCIM)) or 0
        if scim_users:
            raise StateConflict(
                f"This tenant has {scim_users} users provisioned over SCIM; a tenant is fed "
                "by SCIM or by Entra ID sync, not both. Stop the SCIM provisioning and remove "
                "those users first, or sync Entra ID into a new tenant.")
        tenant = s.get(Tenant, ctx.tenant_id)
        assert tenant is not None
        tenant_settings.set_entra_sync(s, tenant, ctx, True)
        registration = EntraRegistration(
            tenant_id=ctx.tenant_id, authority_host=settings.authority_host,
            graph_base_url=settings.graph_base_url, interval_minutes=settings.interval_minutes,
            scope_groups=[], scope_domains=[], threshold_count=staging.THRESHOLD_COUNT,
            threshold_percent=staging.THRESHOLD_PERCENT,
            enabled=True, created_at=ctx.now, directory_id=directory_id, client_id=client_id)
        s.add(registration)
    registration.directory_id, registration.client_id = directory_id, client_id
    for name, url in (("authority_host", authority_host), ("graph_base_url", graph_base_url)):
        if url is not None:
            with fields.field(name):
                setattr(registration, name,
                        clouds.check_url(name, url, settings.allow_private_hosts))
    if interval_minutes is not None:
        if not 1 <= interval_minutes <= 1440:
            fields.add("interval_minutes",
                       "Minutes between rounds must be between 1 and 1440.")
        else:
            registration.interval_minutes = interval_minutes
    with fields.field("scope_domains"):
        _set_scope(registration, scope_domains, scope_groups, scope_group_mode)
    if registration.full_round_due and new:
        registration.full_round_due = False  # the first round is a full one anyway
    if soft_delete is not None:
        if soft_delete not in staging.SOFT_DELETE:
            fields.add("soft_delete", "A user deleted in Entra ID must be either turned "
                       "inactive (disable) or removed at once (remove).")
        else:
            registration.soft_delete = soft_delete
    if matching_attribute is not None:
        if matching_attribute not in MATCHING_ATTRIBUTES:
            fields.add("matching_attribute", "“Match existing accounts by” must be one of "
                       f"{', '.join(MATCHING_ATTRIBUTES)}.")
        else:
            registration.matching_attribute = matching_attribute
    fields.raise_any()
    if threshold_count is not None:
        registration.threshold_count = max(0, threshold_count)
    if threshold_percent is not None:
        registration.threshold_percent = min(max(0, threshold_percent), 100)
    if secret is not None:
        registration.secret_encrypted = secrets.encrypt(settings, secret)
        registration.certificate_encrypted = registration.certificate_thumbprint = None
    if certificate_pem is not None:
        registration.certificate_thumbprint = certificate_thumbprint(certificate_pem)
        registration.certificate_encrypted = secrets.encrypt(settings, certificate_pem)
        registration.secret_encrypted = None
    registration.updated_at = ctx.now
    events.record(s, ctx, "tenant", ctx.tenant_id, events.ENTRA_REGISTRATION, None,
                  {"directory_id": directory_id, "client_id": client_id,
                   "credential": "secret" if secret else "certificate" if certificate_pem
                   else "unchanged"})
    s.flush()
    return registration


def _set_scope(registration: EntraRegistration, domains: list[str] | None,
               groups: list[str] | None, mode: str | None) -> None:
    old_domains = list(registration.scope_domains or [])
    old_groups = list(registration.scope_groups or [])
    if domains is not None:
        cleaned = sorted({d.strip().lstrip("@").casefold() for d in domains if d.strip()})
        if any(" " in d or "." not in d or len(d) > 255 for d in cleaned):
            raise InvalidFields({"scope_domains": "“Only users of these domains” takes "
                                 "domain names such as contoso.com."})
        registration.scope_domains = cleaned
    if groups is not None:
        try:
            registration.scope_groups = _group_ids(groups)
        except InvalidSetting as exc:
            raise InvalidFields({"scope_groups": exc.message}) from None
    if mode is not None:
        if mode not in scope.MODES:
            raise InvalidFields({"scope_group_mode": "The group scope's mode must be direct "
                                 "(members of the chosen groups) or transitive (also "
                                 "members of nested groups)."})
        registration.scope_group_mode = mode
    widened = (registration.scope_domains != old_domains
               or (old_groups and not registration.scope_groups))
    if widened:
        registration.full_round_due = True


def _group_ids(groups: list[str]) -> list[str]:
    """Group object ids as Entra shows them (GUIDs), lower-cased, each once, in order."""
    cleaned: list[str] = []
    for raw in groups:
        text = raw.strip()
        if not text:
            continue
        try:
            group_id = str(uuid.UUID(text))
        except ValueError:
            raise InvalidSetting(f"Scope groups are group object ids as Entra ID shows them "
                                 f"(00000000-0000-…); {text[:60]!r} is not one.") from None
        if group_id not in cleaned:
            cleaned.append(group_id)
    if len(cleaned) > scope.MAX_GROUPS:
        raise InvalidSetting(f"At most {scope.MAX_GROUPS} scope groups (every round reads "
                             "their members); nest them in one group and use transitive.")
    return cleaned


def unregister(s: Session, ctx: WriteContext) -> EntraRegistration:
    """Remove a tenant's app registration: sync stops, the users stay, and the tenant
    may be fed over SCIM again. Refused while a round awaits approval (its staged
    changes could no longer be seen or decided)."""
    from connector.models import SyncState

    tenant_id = ctx.tenant_id
    registration = s.get(EntraRegistration, tenant_id)
    if registration is None:
        raise NotFound("This tenant has no Entra ID app registration.")
    held = staging.held_run_id(s, tenant_id)
    if held is not None:
        raise StateConflict(f"Round {held} awaits approval; approve or reject it before "
                            "removing the registration.")
    s.delete(registration)
    state = s.get(SyncState, tenant_id)
    if state is not None:
        s.delete(state)
    events.record(s, ctx, "tenant", tenant_id, events.ENTRA_REGISTRATION_REMOVED,
                  {"directory_id": registration.directory_id,
                   "client_id": registration.client_id}, None)
    tenant = s.get(Tenant, tenant_id, with_for_update=True)
    if tenant is not None:
        tenant_settings.set_entra_sync(s, tenant, ctx, False)
    return registration
