"""Admin actions on a tenant's Entra ID sync, shared by the admin API (`views`) and the
web UI (`pages`): register or remove the app, start a round, approve or reject a held
one, preview, sync one user. Each checks, acts and writes its audit line once
(`connector.actions`); the surfaces only parse their input and render the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from azure_sync import clouds, decisions, on_demand, rounds
from azure_sync.rounds import RoundResult
from azure_sync.service import SyncService, register, unregister
from connector import events, heartbeat
from connector.actions import AdminCall
from connector.admins import PARTNER
from connector.config import AzureSyncSettings
from connector.errors import InvalidSetting, NotFound, StateConflict
from connector.models import EntraRegistration, SyncRun


@dataclass(frozen=True)
class Registration:
    """A registration as an admin gives it; None leaves a setting as it is, and an empty
    credential keeps the stored one (credentials are write-only)."""

    directory_id: str
    client_id: str
    secret: str | None = None
    certificate_pem: str | None = None
    authority_host: str | None = None
    graph_base_url: str | None = None
    interval_minutes: int | None = None
    threshold_count: int | None = None
    threshold_percent: int | None = None
    scope_domains: list[str] | None = None
    scope_groups: list[str] | None = None
    scope_group_mode: str | None = None
    soft_delete: str | None = None
    matching_attribute: str | None = None


def registration_of(call: AdminCall, tenant_id: str) -> EntraRegistration:
    """The tenant's app registration, or NotFound saying how to make one."""
    registration = call.session.get(EntraRegistration, tenant_id)
    if registration is None:
        raise NotFound("This tenant has no Entra ID app registration: set it up first "
                       "(Entra ID sync → Set up, or PUT …/entra).")
    return registration


def save_registration(call: AdminCall, settings: AzureSyncSettings, tenant_id: str,
                      given: Registration) -> tuple[EntraRegistration, bool]:
    """Register the tenant's Entra app, or change its registration. Returns it and
    whether it is new."""
    call.tenant(tenant_id)
    current = call.session.get(EntraRegistration, tenant_id)
    new = current is None
    _check_hosts(call, current, given)
    registration = register(
        call.session, settings, call.context(tenant_id), directory_id=given.directory_id,
        client_id=given.client_id, secret=given.secret, certificate_pem=given.certificate_pem,
        authority_host=given.authority_host, graph_base_url=given.graph_base_url,
        interval_minutes=given.interval_minutes, threshold_count=given.threshold_count,
        threshold_percent=given.threshold_percent, scope_domains=given.scope_domains,
        scope_groups=given.scope_groups, scope_group_mode=given.scope_group_mode,
        soft_delete=given.soft_delete, matching_attribute=given.matching_attribute)
    call.audit("entra.registration", tenant_id, registration.client_id,
               {"directory_id": registration.directory_id,
                "credential_changed": bool(given.secret or given.certificate_pem)})
    call.session.flush()
    return registration, new


def _check_hosts(call: AdminCall, current: EntraRegistration | None,
                 given: Registration) -> None:
    """A host other than a Microsoft cloud's is a partner admin's choice (a tenant admin
    could otherwise point the connector into the hosting network); keeping the stored
    one is always fine."""
    partner = call.principal.role == PARTNER
    for name in ("authority_host", "graph_base_url"):
        url = getattr(given, name)
        stored = getattr(current, name, None) if current is not None else None
        if url is not None and (stored is None
                                or clouds.normalized(url) != clouds.normalized(stored)):
            clouds.check_choice(name, url, partner)


def remove_registration(call: AdminCall, tenant_id: str) -> EntraRegistration:
    """Stop syncing the tenant from Entra ID (its users stay as they are)."""
    call.tenant(tenant_id, lock=True)
    registration = unregister(call.session, call.context(tenant_id))
    call.audit("entra.registration_removed", tenant_id, registration.client_id)
    return registration


def start_round(call: AdminCall, service: SyncService, tenant_id: str
                ) -> decisions.StartRefusal | None:
    """Start a round now (it may take minutes; the run log shows it), unless the rules
    refuse, whose reason is returned. Where the schedulers run in `connector worker`
    (`service.rounds_in_worker`), the round is a request a worker takes within a few
    seconds, refused when no worker is alive; otherwise it runs on a thread of this
    process. Commits the request's transaction first: on SQLite, the round's writes
    wait for it to end."""
    call.tenant(tenant_id)
    registration_of(call, tenant_id)
    refused = decisions.start_refusal(call.session, tenant_id, call.now)
    if refused is None and service.rounds_in_worker:
        refused = _no_worker(call)
    if refused is not None:
        return refused
    call.audit("entra.run_requested", tenant_id)
    _hand_over(call, service, tenant_id, "manual")
    return None


def restart_provisioning(call: AdminCall, service: SyncService, tenant_id: str) -> None:
    """Restart provisioning (as Entra's button): drop the cursors and start a full round
    now, as `start_round` does."""
    call.tenant(tenant_id, lock=True)
    registration_of(call, tenant_id)
    tenant = call.tenant(tenant_id)
    if tenant.provisioning_paused:
        raise StateConflict("Provisioning is paused, so Entra ID sync does not run: resume "
                            "provisioning, then restart.")
    if service.rounds_in_worker:
        nobody = _no_worker(call)
        if nobody is not None:  # before the cursors go: nothing would read them again
            raise StateConflict(f"{nobody.reason} {nobody.what_to_do}")
    decisions.restart(call.session, tenant_id, call.now)
    call.audit("entra.restarted", tenant_id)
    _hand_over(call, service, tenant_id, "restart")


def _no_worker(call: AdminCall) -> decisions.StartRefusal | None:
    if heartbeat.alive(call.session, call.now):
        return None
    return decisions.StartRefusal(heartbeat.NO_WORKER, heartbeat.START_ONE)


def _hand_over(call: AdminCall, service: SyncService, tenant_id: str, trigger: str) -> None:
    """Commit the admin's request, with the round request for a worker, or start the
    round on a thread of this process."""
    if service.rounds_in_worker:
        on_demand.ask(call.session, tenant_id, trigger, call.now)
        call.session.commit()
    else:
        call.session.commit()
        service.run_in_background(tenant_id, trigger)


def approve_round(call: AdminCall, tenant_id: str, run_id: int) -> dict[str, int]:
    """Apply a round held over the deletion threshold; returns what it applied."""
    tenant = call.tenant(tenant_id, lock=True)
    applied = decisions.approve_held(call.session, tenant, run_id, call.now)
    _round_decided(call, tenant_id, run_id, "approved")
    call.audit("entra.round_approved", tenant_id, str(run_id), applied)
    call.session.flush()
    return applied


def reject_round(call: AdminCall, tenant_id: str, run_id: int) -> int:
    """Drop a held round's staged disables and deletions; returns how many."""
    call.tenant(tenant_id, lock=True)
    dropped = decisions.reject_held(call.session, tenant_id, run_id, call.now)
    _round_decided(call, tenant_id, run_id, "rejected")
    call.audit("entra.round_rejected", tenant_id, str(run_id), {"dropped": dropped})
    call.session.flush()
    return dropped


def _round_decided(call: AdminCall, tenant_id: str, run_id: int, outcome: str) -> None:
    """A held round ends with the admin's decision: sync.round_completed in the feed."""
    run = call.session.get(SyncRun, run_id)
    assert run is not None  # the decision just read it
    rounds.record_round_end(call.session, call.context(tenant_id), run,
                            events.SYNC_ROUND_COMPLETED, outcome)


def preview(call: AdminCall, service: SyncService, tenant_id: str
            ) -> tuple[EntraRegistration, RoundResult]:
    """A dry run: what the next round would change, nothing applied. Commits the
    request's transaction first (on SQLite a process holds one write transaction at a
    time, and the preview uses transactions of its own)."""
    call.tenant(tenant_id)
    registration = registration_of(call, tenant_id)
    call.session.expunge(registration)
    call.audit("entra.preview", tenant_id)
    call.session.commit()
    return registration, decisions.preview_round(service.write_maker, tenant_id,
                                              service.interactive_client(registration))


USER_KEY_LENGTH = 256


def sync_user(call: AdminCall, service: SyncService, tenant_id: str, key: str
              ) -> dict[str, int]:
    """Fetch one user from Graph by userPrincipalName or object id and apply it now, in
    a transaction of its own; returns the counts. The audit line is in the request's
    transaction, which the caller commits."""
    call.tenant(tenant_id)
    key = key.strip()
    if not 1 <= len(key) <= USER_KEY_LENGTH:
        raise InvalidSetting("Give the user's userPrincipalName (ann@contoso.com) or its "
                             "object id, as Entra ID shows them.")
    registration = registration_of(call, tenant_id)
    call.session.expunge(registration)
    call.session.rollback()  # the write below has its own transaction (see preview)
    counts = decisions.sync_one_user(service.write_maker, tenant_id,
                                  service.interactive_client(registration), key)
    call.audit("entra.user_synced", tenant_id, key, counts)
    return counts
