"""What a tenant's directory sync has done, for the packages that must wait on it.

The sync (azure_sync) writes `sync_runs` and `sync_state`; billing only needs to know
whether a round has read the directory since an instant, and whether the sync is
quarantined. These functions are that seam: nothing outside azure_sync reads the sync
tables for billing, so their shape may change behind these answers.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.models import SyncRun, SyncState

# Rounds that read the whole directory's changes (preview and single-user rounds don't).
_READING_ROUNDS = ("incremental", "full")


def first_round_completed_since(session: Session, tenant_id: str, boundary: dt.datetime
                                ) -> dt.datetime | None:
    """Return when the first incremental or full round that started at or after
    `boundary` finished successfully, or None if none has yet.

    Graph delta pages carry no timestamps: a change is dated when a round sees it, so
    every change made before `boundary` is recorded once such a round has completed."""
    return session.scalar(
        select(SyncRun.finished_at).where(
            SyncRun.tenant_id == tenant_id, SyncRun.started_at >= boundary,
            SyncRun.status == "succeeded", SyncRun.kind.in_(_READING_ROUNDS))
        .order_by(SyncRun.started_at).limit(1))


def quarantined_until(session: Session, tenant_id: str) -> dt.datetime | None:
    """Return until when the tenant's sync is quarantined, or None if it is not.

    After repeated failed rounds a tenant's sync runs once a day until a round succeeds,
    which clears this; the instant may already be past (the next try is due)."""
    return session.scalar(select(SyncState.quarantined_until).where(
        SyncState.tenant_id == tenant_id))


# A round's stored error (sync_runs.error): the plain words for every admin, then this
# mark and the raw technical detail, which only partner admins are shown (azure_sync.errors).
DETAIL_MARK = "\n\nDetail: "
UNREACHABLE = "Entra ID could not be reached"

# What gives away a Python exception's text stored raw (rounds before the plain words:
# `HTTPSConnectionPool(host=…): Max retries exceeded … NewConnectionError(…)`).
_RAW = re.compile(r"ConnectionPool\(|NewConnectionError|MaxRetryError|Traceback \(most recent"
                  r"|object at 0x[0-9a-f]+|\b[A-Z]\w*(?:Error|Exception)\(|\[Errno -?\d+\]")
_HOST = re.compile(r"host='([^']+)'|https?://([^/:'\s]+)")
# The cause in plain words, first match wins (as azure_sync.transport.describe_failure).
_CAUSES = (
    (r"CERTIFICATE_VERIFY_FAILED|SSLCertVerificationError",
     "the TLS certificate of {host} is not trusted (add its CA to the system's trust store "
     "or azure_sync.ca_bundle)"),
    (r"SSLError|SSL:", "the TLS handshake with {host} failed"),
    (r"ProxyError|Unable to connect to proxy", "the outbound proxy did not connect to {host}"),
    (r"NameResolutionError|Name or service not known|nodename nor servname|getaddrinfo failed"
     r"|Temporary failure in name resolution|No address associated",
     "the name {host} does not resolve"),
    (r"Connection refused|Errno 111\]|ConnectionRefusedError", "connection refused by {host}"),
    (r"Connection reset|ConnectionResetError|Errno 104\]", "connection reset by {host}"),
    (r"timed out|Timeout", "{host} did not answer in time"),
    (r"RemoteDisconnected|Connection aborted",
     "{host} closed the connection without answering"),
    (r"ConnectionPool\(|NewConnectionError|MaxRetryError|ConnectionError",
     "a network error talking to {host}"),
)


def plain_error(text: str | None) -> tuple[str | None, str | None]:
    """Split a round's stored error into its plain words and its raw detail.

    Errors stored since the plain words carry DETAIL_MARK. An older one may be a Python
    exception's text as it was: it is put in plain words here (what could not be reached
    and why, or that the round failed unexpectedly) and its text becomes the detail, so
    no admin reads `HTTPSConnectionPool(host=…)` in a run log or a notification."""
    if text is None:
        return None, None
    plain, mark, detail = text.partition(DETAIL_MARK)
    if mark:
        return plain, detail
    if not _RAW.search(text):
        return text, None
    found = _HOST.search(text)
    host = (found.group(1) or found.group(2)) if found else None
    for pattern, cause in _CAUSES:
        if re.search(pattern, text):
            return f"{UNREACHABLE}: {cause.format(host=host or 'Entra ID')}.", text
    return ("The round stopped on an unexpected error. Run it again; if it fails again, "
            "ask your partner admin to look at the detail on the round's page."), text


@dataclass(frozen=True)
class SyncHealth:
    """What the notifications need to know of a tenant's sync (connector/notify.py)."""

    held_run_id: int | None  # a round awaiting an admin's approval
    failures: int  # rounds failed in a row
    quarantined_until: dt.datetime | None
    last_error: str | None  # the newest failed round's error in plain words, if any


def health(session: Session, tenant_id: str) -> SyncHealth:
    """Read the tenant's sync health: three reads by index."""
    held = session.scalar(select(SyncRun.id).where(
        SyncRun.tenant_id == tenant_id, SyncRun.status == "awaiting_approval")
        .order_by(SyncRun.id.desc()).limit(1))
    state = session.execute(select(SyncState.failures, SyncState.quarantined_until).where(
        SyncState.tenant_id == tenant_id)).first()
    error = session.scalar(select(SyncRun.error).where(
        SyncRun.tenant_id == tenant_id, SyncRun.status == "failed")
        .order_by(SyncRun.id.desc()).limit(1))
    plain = plain_error(error)[0]
    return SyncHealth(held, state[0] if state else 0, state[1] if state else None, plain)


def tenants_with_sync(session: Session) -> list[str]:
    """The tenants that have sync state (have run a round at least once)."""
    return list(session.scalars(select(SyncState.tenant_id)))
