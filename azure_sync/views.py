"""The admin API for Entra ID sync, under /api/v1/tenants/{id}/entra.

A blueprint nested in the admin API's (connector.api), so it shares its sign-in, CSRF,
transaction and problem+json plumbing. The client secret or certificate is write-only:
no answer ever contains it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from sqlalchemy import func, select

from azure_sync import decisions, staging
from azure_sync.errors import SyncError
from azure_sync.service import SyncService, register, unregister
from connector import auth
from connector.api import Problem, expect, json_response, read_body
from connector.api.routes import done, now, page_args, page_json, principal, session, tenant_for
from connector.browse import Page
from connector.db import make_sessionmaker
from connector.errors import NotFound
from connector.events import WriteContext
from connector.models import EntraRegistration, SyncRun, SyncState
from connector.status import Source

bp = Blueprint("entra", __name__, url_prefix="/tenants/<tenant_id>/entra")


def init_app(app: Flask) -> None:
    """Called by the app factory; the service holds the process's msal apps."""
    engine = app.extensions["engine"]
    app.extensions["sync_service"] = SyncService(
        app.config["SETTINGS"].azure_sync, make_sessionmaker(engine),
        make_sessionmaker(engine, writes=True))


def service() -> SyncService:
    return current_app.extensions["sync_service"]  # type: ignore[no-any-return]


def _registration(tenant_id: str) -> EntraRegistration:
    registration = session().get(EntraRegistration, tenant_id)
    if registration is None:
        raise NotFound("This tenant has no Entra ID app registration (PUT …/entra sets one).")
    return registration


def registration_json(reg: EntraRegistration, state: SyncState | None) -> dict[str, Any]:
    held = staging.held_run_id(session(), reg.tenant_id)
    last = session().scalar(select(SyncRun).where(SyncRun.tenant_id == reg.tenant_id)
                            .order_by(SyncRun.id.desc()).limit(1))
    return {
        "directoryId": reg.directory_id, "clientId": reg.client_id,
        "credential": "secret" if reg.secret_encrypted else "certificate",
        "certificateThumbprint": reg.certificate_thumbprint,
        "authorityHost": reg.authority_host, "graphBaseUrl": reg.graph_base_url,
        "intervalMinutes": reg.interval_minutes, "scopeDomains": list(reg.scope_domains or []),
        "scopeGroups": list(reg.scope_groups or []), "scopeGroupMode": reg.scope_group_mode,
        "fullRoundDue": reg.full_round_due,
        "thresholdCount": reg.threshold_count,
        "thresholdPercent": reg.threshold_percent, "enabled": reg.enabled,
        "updated": reg.updated_at.isoformat(),
        "lastRun": run_json(last) if last else None,
        "awaitingApproval": held,
        "quarantinedUntil": state.quarantined_until.isoformat()
        if state and state.quarantined_until else None,
        "lastSuccess": state.last_success_at.isoformat()
        if state and state.last_success_at else None,
        "failures": state.failures if state else 0,
    }


def run_json(run: SyncRun) -> dict[str, Any]:
    return {"id": run.id, "kind": run.kind, "status": run.status, "trigger": run.trigger,
            "started": run.started_at.isoformat(),
            "finished": run.finished_at.isoformat() if run.finished_at else None,
            "pages": run.pages, "counts": run.counts, "error": run.error}


@bp.get("")
def get_registration(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(registration_json(_registration(tenant_id),
                                           session().get(SyncState, tenant_id)))


SETTABLE = {"directoryId", "clientId", "clientSecret", "certificatePem", "authorityHost",
            "graphBaseUrl", "intervalMinutes", "thresholdCount", "thresholdPercent",
            "scopeDomains", "scopeGroups", "scopeGroupMode"}


@bp.put("")
def put_registration(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    body = read_body(SETTABLE, {"directoryId", "clientId"})
    text = {k: expect(body, k, (str, type(None)), "a string") for k in
            ("directoryId", "clientId", "clientSecret", "certificatePem", "authorityHost",
             "graphBaseUrl")}
    numbers = {k: expect(body, k, int, "a whole number") for k in
               ("intervalMinutes", "thresholdCount", "thresholdPercent")}
    domains = expect(body, "scopeDomains", list, "a list of domain names")
    if domains is not None and not all(isinstance(d, str) for d in domains):
        raise Problem(400, "Invalid request", "scopeDomains must be a list of domain names.",
                      "invalid-request")
    groups = expect(body, "scopeGroups", list, "a list of group object ids")
    if groups is not None and not all(isinstance(g, str) for g in groups):
        raise Problem(400, "Invalid request", "scopeGroups must be a list of group object "
                      "ids.", "invalid-request")
    mode = expect(body, "scopeGroupMode", str, "direct or transitive")
    ctx = WriteContext(tenant_id, Source.ADMIN, principal().actor, request_id(), now())
    registration = register(
        session(), current_app.config["SETTINGS"].azure_sync, ctx,
        directory_id=text["directoryId"] or "", client_id=text["clientId"] or "",
        secret=text["clientSecret"], certificate_pem=text["certificatePem"],
        authority_host=text["authorityHost"], graph_base_url=text["graphBaseUrl"],
        interval_minutes=numbers["intervalMinutes"], threshold_count=numbers["thresholdCount"],
        threshold_percent=numbers["thresholdPercent"], scope_domains=domains,
        scope_groups=groups, scope_group_mode=mode)
    auth.audit(principal(), "entra.registration", tenant_id, registration.client_id,
               {"directory_id": registration.directory_id,
                "credential_changed": bool(text["clientSecret"] or text["certificatePem"])})
    session().flush()
    return done(200, registration_json(registration, session().get(SyncState, tenant_id)))


@bp.delete("")
def delete_registration(tenant_id: str) -> Response:
    tenant_for(tenant_id, lock=True)
    registration = unregister(session(), tenant_id)
    auth.audit(principal(), "entra.registration_removed", tenant_id, registration.client_id)
    return done()


@bp.get("/runs")
def list_runs(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    page, per_page = page_args()
    where = [SyncRun.tenant_id == tenant_id]
    total = session().scalar(select(func.count()).select_from(SyncRun).where(*where)) or 0
    runs = session().scalars(select(SyncRun).where(*where).order_by(SyncRun.id.desc())
                             .offset((page - 1) * per_page).limit(per_page))
    return json_response(page_json(Page([run_json(r) for r in runs], total, page, per_page)))


@bp.get("/runs/<int:run_id>")
def get_run(tenant_id: str, run_id: int) -> Response:
    tenant_for(tenant_id)
    run = session().get(SyncRun, run_id)
    if run is None or run.tenant_id != tenant_id:
        raise NotFound(f"Sync round {run_id} not found for this tenant.")
    return json_response({**run_json(run), "staged": decisions.staged_changes(session(), run_id)})


@bp.post("/runs")
def run_now(tenant_id: str) -> Response:
    """Start a round in the background (it may take minutes); the run log shows it."""
    tenant_for(tenant_id)
    _registration(tenant_id)
    refused = decisions.start_refusal(session(), tenant_id, now())
    if refused is not None:
        raise Problem(409, "No round started", f"{refused.reason} {refused.what_to_do}",
                      "state-conflict")
    auth.audit(principal(), "entra.run_requested", tenant_id)
    session().commit()  # on SQLite, the round's writes wait for this transaction's end
    service().run_in_background(tenant_id)
    return json_response({"status": "started", "runs": f"{request.path}"}, 202)


@bp.post("/runs/<int:run_id>/approve")
def approve(tenant_id: str, run_id: int) -> Response:
    tenant = tenant_for(tenant_id, lock=True)
    applied = decisions.approve_held(session(), tenant, run_id, now())
    auth.audit(principal(), "entra.round_approved", tenant_id, str(run_id), applied)
    session().flush()
    return done(200, {**run_json(session().get(SyncRun, run_id)), "applied": applied})


@bp.post("/runs/<int:run_id>/reject")
def reject(tenant_id: str, run_id: int) -> Response:
    tenant_for(tenant_id, lock=True)
    dropped = decisions.reject_held(session(), tenant_id, run_id, now())
    auth.audit(principal(), "entra.round_rejected", tenant_id, str(run_id),
               {"dropped": dropped})
    session().flush()
    return done(200, {**run_json(session().get(SyncRun, run_id)), "dropped": dropped})


@bp.post("/preview")
def preview(tenant_id: str) -> Response:
    """A dry run: what the next round would change, nothing applied."""
    tenant_for(tenant_id)
    registration = _registration(tenant_id)
    session().expunge(registration)
    auth.audit(principal(), "entra.preview", tenant_id)
    # The request's transaction ends before the preview's own ones begin (on SQLite a
    # process holds one write transaction at a time).
    session().commit()
    client = service().client_for(registration)
    try:
        result = decisions.preview_round(service().write_maker, tenant_id, client)
    except SyncError as exc:
        raise Problem(502, "Graph refused", exc.message, "graph-error") from exc
    return json_response({"pages": result.pages, "counts": result.counts})


@bp.post("/sync-user")
def sync_user(tenant_id: str) -> Response:
    """Fetch one user from Graph by object id or userPrincipalName and apply it now."""
    tenant_for(tenant_id)
    body = read_body({"user"}, {"user"})
    key = (expect(body, "user", str, "an object id or userPrincipalName") or "").strip()
    if not 1 <= len(key) <= 256:
        raise Problem(400, "Invalid request", "user must be an object id or a "
                      "userPrincipalName.", "invalid-request")
    registration = _registration(tenant_id)
    session().expunge(registration)
    session().rollback()  # the write below has its own transaction (see preview)
    client = service().client_for(registration)
    try:
        counts = decisions.sync_one_user(service().write_maker, tenant_id, client, key)
    except SyncError as exc:
        status = getattr(exc, "status", None)
        if status == 404:
            raise NotFound(f"Entra ID has no user {key!r}.") from exc
        raise Problem(502, "Graph refused", exc.message, "graph-error") from exc
    auth.audit(principal(), "entra.user_synced", tenant_id, key, counts)
    session().commit()
    return json_response({"counts": counts})


def request_id() -> str:
    return str(g.get("request_id", ""))
