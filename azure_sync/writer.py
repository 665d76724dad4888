"""The sync as a writer of the directory: what its writes carry, and the line it logs.

Shared by the page applier and the staging of destructive changes, which both write
through the directory on a round's behalf, and by the round itself.
"""

from __future__ import annotations

import datetime as dt
import logging

from azure_sync import mapping
from connector import logs
from connector.events import WriteContext
from connector.models import User
from connector.status import Source

log = logging.getLogger("connector.sync")


def write_context(tenant_id: str, run_id: int, now: dt.datetime) -> WriteContext:
    """The context of a round's writes: its events say Entra sync, this round, and the
    instant the round's clock gave (so one page's events share one time)."""
    return WriteContext(tenant_id, Source.ENTRA_SYNC, "entra-sync", f"sync-run:{run_id}", now)


def stored_profile(user: User) -> mapping.StoredProfile:
    """The user as stored, as the mapping lays Graph's changes over it."""
    return mapping.StoredProfile(user.user_name, user.display_name, dict(user.data or {}),
                                 user.guest, user.admin, user.external_company_guest)


def log_event(tenant_id: str, run_id: int | None, what: str, detail: str) -> None:
    """Log one thing a round did (the run log rows say the rest)."""
    logs.log(log, logging.INFO, f"sync round {what}", tenant=tenant_id, run=run_id,
             detail=detail)
