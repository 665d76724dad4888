"""What an admin decides or asks of the sync, outside the scheduled rounds.

Whether a round asked for now would run; approving or rejecting a round held over the
deletion threshold, and what it staged; a preview of the next round; one user synced
at once. The admin API and the admin pages both call these.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from azure_sync import cursor, lease, mapping, staging
from azure_sync import scope as scoping
from azure_sync.applier import PageApplier, entered_counts, not_synced
from azure_sync.errors import UnsafeLink
from azure_sync.graph import GraphClient
from azure_sync.rounds import RoundResult, add_counts
from connector import notify
from connector.clock import now as wall_clock
from connector.errors import NotFound, StateConflict
from connector.models import EntraRegistration, SyncRun, SyncStaged, SyncState, Tenant, User

# -- starting a round -----------------------------------------------------------------------


@dataclass(frozen=True)
class StartRefusal:
    reason: str
    what_to_do: str


def start_refusal(s: Session, tenant_id: str, now: dt.datetime) -> StartRefusal | None:
    """Why a round asked for now would not run (None: it would). The round itself
    checks the same again under its lease; this is for answering the admin at once."""
    tenant = s.get(Tenant, tenant_id)
    if tenant is not None and tenant.closed_at is not None:
        return StartRefusal(f"{tenant.name} is closed, so Entra ID sync does not run.",
                            "Reopen the tenant (Tenants page) to sync it again.")
    if tenant is not None and tenant.provisioning_paused:
        return StartRefusal("Provisioning is paused, so Entra ID sync does not run.",
                            "Resume provisioning, then run a round.")
    held = staging.held_run_id(s, tenant_id)
    if held is not None:
        return StartRefusal(f"Round {held} awaits approval of its disables and deletions; "
                            "no new round runs until it is decided.",
                            "Approve or reject it, then run a round.")
    state = s.get(SyncState, tenant_id)
    if state is not None and lease.is_held(state, now):
        return StartRefusal(
            "A round of this tenant is running already (its process renews its lease "
            f"with every page; if that process stopped, the lease runs out at "
            f"{state.lease_until:%H:%M:%S} UTC and the next round resumes it).",
            "Follow it in the run log.")
    return None


# -- restart provisioning -------------------------------------------------------------------


def restart(s: Session, tenant_id: str, now: dt.datetime) -> None:
    """Entra's "Restart provisioning": forget the deltaLinks and any interrupted round,
    lift the quarantine, so the next round is a full one that reads every user and
    group again. Its sweep stays under the deletion threshold, and items kept from
    earlier rounds are retried in it. Refused while a round runs or awaits approval."""
    held = staging.held_run_id(s, tenant_id)
    if held is not None:
        raise StateConflict(f"Round {held} awaits approval of its disables and deletions: "
                            "approve or reject it first, then restart.")
    state = s.get(SyncState, tenant_id, with_for_update=True)
    if state is None:
        return  # never ran: the first round is a full one anyway
    if lease.is_held(state, now):
        raise StateConflict("A round of this tenant is running; restart when it has "
                            "finished (the run log shows it).")
    if state.run_id is not None:  # an interrupted round: ended here, its staging dropped
        run = s.get(SyncRun, state.run_id)
        if run is not None:
            if run.status == "running":
                run.status, run.finished_at = "failed", now
            run.error = f"{run.error or 'Interrupted.'} Ended by a restart of provisioning."
            staging.drop_staged(s, run.round_key)
    state.run_id = state.phase = state.next_link = None
    state.users_delta_link = state.groups_delta_link = None
    state.pending_users_delta_link = None
    state.failures = 0
    state.quarantined_until = None


# -- a held round ---------------------------------------------------------------------------


def approve_held(s: Session, tenant: Tenant, run_id: int, now: dt.datetime) -> dict[str, int]:
    """Apply the disables/deletions a round held over the threshold (an admin approved)."""
    run = _held_run(s, tenant.id, run_id)
    applied = staging.apply_staged(s, tenant, run.round_key, now, by_run=run_id)
    run.counts = add_counts(run.counts, applied)
    run.status = "succeeded"
    run.error = f"approved at {now:%Y-%m-%d %H:%M} UTC: {run.error}"
    notify.clear_condition(s, tenant.id, "round_held", now, key=str(run_id))
    return applied


def reject_held(s: Session, tenant_id: str, run_id: int, now: dt.datetime) -> int:
    """Drop a held round's disables/deletions (an admin rejected them). The identity
    provider's word stays recorded nowhere else: a later change, or a full round, brings
    them up again."""
    run = _held_run(s, tenant_id, run_id)
    dropped = staging.drop_staged(s, run.round_key)
    run.status = "rejected"
    run.error = f"rejected at {now:%Y-%m-%d %H:%M} UTC: {run.error}"
    notify.clear_condition(s, tenant_id, "round_held", now, key=str(run_id))
    return dropped


def _held_run(s: Session, tenant_id: str, run_id: int) -> SyncRun:
    run = s.get(SyncRun, run_id, with_for_update=True)
    if run is None or run.tenant_id != tenant_id:
        raise NotFound(f"Sync round {run_id} not found for this tenant.")
    if run.status != "awaiting_approval":
        raise StateConflict(f"Sync round {run_id} is {run.status}, not awaiting approval.")
    return run


def staged_changes(s: Session, run_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    """The round's staged changes in order, with the user names, as the admin sees them."""
    run_id = staging.round_key_of(s, run_id)
    rows = s.execute(select(SyncStaged.seq, SyncStaged.object_id, SyncStaged.action,
                            SyncStaged.user_id, User.user_name)
                     .outerjoin(User, (User.tenant_id == SyncStaged.tenant_id)
                                & (User.id == SyncStaged.user_id))
                     .where(SyncStaged.run_id == run_id).order_by(SyncStaged.seq)
                     .limit(limit)).all()
    return [{"objectId": r.object_id, "action": r.action, "userId": r.user_id,
             "userName": r.user_name} for r in rows]


# -- a preview of the next round ------------------------------------------------------------


def preview_round(maker: sessionmaker[Session], tenant_id: str, client: GraphClient,
                  max_pages: int = 100_000, clock: Callable[[], dt.datetime] = wall_clock
                  ) -> RoundResult:
    """What the next round would change, without changing anything: the pages from the
    stored deltaLinks are applied in transactions that are rolled back."""
    with maker() as s:
        state = s.get(SyncState, tenant_id)
        registration = s.get(EntraRegistration, tenant_id)
        settings = scoping.settings_of(registration)
        due = registration is not None and registration.full_round_due  # see rounds._start
        users_link = state.users_delta_link if state and not due else None
        groups_link = state.groups_delta_link if state and not due else None
    full = users_link is None
    now = clock()
    counts: Counter[str] = Counter()

    def entering(users: list[dict[str, Any]]) -> None:
        with maker() as s:
            joined = [] if full else not_synced(s, tenant_id, users)
            if joined:
                applier = _preview_applier(s, tenant_id, False, now,
                                           scoping.Scope(settings.domains))
                applier.apply("users", joined, careful=True)
                counts.update(entered_counts(applier.counts))
            s.rollback()

    scope = scoping.read_scope(client, settings, entering)
    pages = 0
    users_start = cursor.users_delta_url(client, mapping.FULL_SELECT)
    for phase, link in (("users", users_link or users_start),
                        ("groups", groups_link or cursor.groups_delta_url(client))):
        pages = _preview_phase(maker, tenant_id, client, phase, link, full, scope, now,
                               counts, pages, max_pages)
    with maker() as s:
        counts["left_scope_staged"] += len(staging.leavers(s, tenant_id, 0, scope))
    counts["full_round"] = int(full)
    return RoundResult(None, "preview", dict(counts), pages)


def _preview_phase(maker: sessionmaker[Session], tenant_id: str, client: GraphClient,
                   phase: str, link: str, full: bool, scope: scoping.Scope,
                   now: dt.datetime, counts: Counter[str], pages: int, max_pages: int
                   ) -> int:
    """Apply one phase's pages, each rolled back, into `counts`; return the pages read
    so far."""
    next_link: str | None = link
    seen: set[str] = set()
    while next_link is not None:
        if next_link in seen or pages >= max_pages:
            raise UnsafeLink("The preview met a nextLink loop or too many pages.")
        seen.add(next_link)
        page = client.get(next_link)
        with maker() as s:
            applier = _preview_applier(s, tenant_id, full, now, scope)
            applier.apply(phase, list(page.get("value") or []), careful=True)
            counts.update(applier.counts)
            s.rollback()
        pages += 1
        link_value = page.get("@odata.nextLink")
        next_link = client.check_link(link_value) if isinstance(link_value, str) else None
    return pages


def _preview_applier(s: Session, tenant_id: str, full: bool, now: dt.datetime,
                     scope: scoping.Scope) -> PageApplier:
    tenant = s.get(Tenant, tenant_id)
    assert tenant is not None
    return PageApplier(s, tenant, 0, full, now, mode="preview", scope=scope)


# -- one user, now --------------------------------------------------------------------------


def sync_one_user(maker: sessionmaker[Session], tenant_id: str, client: GraphClient,
                  key: str, clock: Callable[[], dt.datetime] = wall_clock) -> dict[str, int]:
    """Fetch one user from Graph (object id or userPrincipalName) and apply it now,
    disable included: an admin asked for exactly this user."""
    with maker() as s:
        settings = scoping.settings_of(s.get(EntraRegistration, tenant_id))
    scope = scoping.read_scope(client, settings)  # is the user in a chosen group?
    quoted = urllib.parse.quote(key, safe="@")
    item = client.get(client.url(f"users/{quoted}",
                                 {"$select": ",".join(("id", *mapping.FULL_SELECT))}))
    with maker() as s:
        tenant = s.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"Tenant {tenant_id} not found.")
        applier = PageApplier(s, tenant, 0, False, clock(), mode="immediate", scope=scope)
        applier.apply("users", [item], careful=True)
        s.commit()
    return dict(applier.counts)
