"""The admin API for Entra ID sync, under /api/v1/tenants/{id}/entra.

A blueprint nested in the admin API's (connector.api), so it shares its sign-in, CSRF,
transaction and problem+json plumbing. The client secret or certificate is write-only:
no answer ever contains it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import func, select

from azure_sync import actions, attribute_maps, decisions, lease, mapping, pending, staging
from azure_sync.errors import SyncError, for_tenant_admin, split_detail
from azure_sync.service import SyncService
from connector import clock
from connector.admins import PARTNER
from connector.api.contract import request_body
from connector.browse import Page
from connector.db import make_sessionmaker
from connector.errors import NotFound
from connector.http import (
    Problem,
    admin_call,
    done,
    json_response,
    page_args,
    page_json,
    principal,
    session,
    tenant_for,
)
from connector.models import EntraRegistration, SyncRun, SyncState

bp = Blueprint("entra", __name__, url_prefix="/tenants/<tenant_id>/entra")


def init_app(app: Flask) -> None:
    """Called by the app factory; the service holds the process's msal apps."""
    engine = app.extensions["engine"]
    settings = app.config["SETTINGS"]
    service = SyncService(settings.azure_sync, make_sessionmaker(engine),
                          make_sessionmaker(engine, writes=True))
    # A web process runs no round itself unless it runs the schedulers (under gevent a
    # round would stall its requests): "Run now" goes to `connector worker`.
    service.rounds_in_worker = settings.server.schedulers != "web"
    app.extensions["sync_service"] = service


def service() -> SyncService:
    return current_app.extensions["sync_service"]


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
        "softDelete": reg.soft_delete, "matchingAttribute": reg.matching_attribute,
        "keptItems": pending.kept_count(session(), reg.tenant_id),
        "roundRunning": lease.is_held(state, clock.now()),
    }


def run_json(run: SyncRun) -> dict[str, Any]:
    return {"id": run.id, "kind": run.kind, "status": run.status, "trigger": run.trigger,
            "started": run.started_at.isoformat(),
            "finished": run.finished_at.isoformat() if run.finished_at else None,
            "pages": run.pages, "counts": run.counts, **error_json(run.error),
            "roundId": run.round_id}


def error_json(text: str | None) -> dict[str, str | None]:
    """A stored error as `error` (plain words) and `detail` (the raw cause, partner admins
    only: to a tenant admin, refused/reset/timed out would map the hosting network)."""
    plain, detail = split_detail(text)
    if principal().role != PARTNER:
        return {"error": for_tenant_admin(plain), "detail": None}
    return {"error": plain, "detail": detail}


def graph_problem(exc: SyncError) -> Problem:
    """The 502 of a preview or a one-user sync that Entra ID or Graph refused."""
    shown = error_json(exc.message)
    extra: dict[str, Any] = {"cause": shown["detail"]} if shown["detail"] else {}
    return Problem(502, "Entra ID Error", shown["error"] or exc.plain,
                   "graph-error", None, **extra)


@bp.get("")
def get_registration(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(registration_json(actions.registration_of(admin_call(), tenant_id),
                                           session().get(SyncState, tenant_id)))


@bp.put("")
def put_registration(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    body = request_body()
    given = actions.Registration(
        directory_id=body["directoryId"], client_id=body["clientId"],
        secret=body.get("clientSecret"), certificate_pem=body.get("certificatePem"),
        authority_host=body.get("authorityHost"), graph_base_url=body.get("graphBaseUrl"),
        interval_minutes=body.get("intervalMinutes"),
        threshold_count=body.get("thresholdCount"),
        threshold_percent=body.get("thresholdPercent"), scope_domains=body.get("scopeDomains"),
        scope_groups=body.get("scopeGroups"), scope_group_mode=body.get("scopeGroupMode"),
        soft_delete=body.get("softDelete"), matching_attribute=body.get("matchingAttribute"))
    registration, _new = actions.save_registration(
        admin_call(), current_app.config["SETTINGS"].azure_sync, tenant_id, given)
    return done(200, registration_json(registration, session().get(SyncState, tenant_id)))


@bp.delete("")
def delete_registration(tenant_id: str) -> Response:
    actions.remove_registration(admin_call(), tenant_id)
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
    run = _run_of(tenant_id, run_id)
    return json_response({**run_json(run), "staged": decisions.staged_changes(session(), run_id)})


def _run_of(tenant_id: str, run_id: int) -> SyncRun:
    run = session().get(SyncRun, run_id)
    if run is None or run.tenant_id != tenant_id:
        raise NotFound(f"Sync round {run_id} not found for this tenant.")
    return run


@bp.post("/runs")
def run_now(tenant_id: str) -> Response:
    """Start a round in the background (it may take minutes; `connector worker` starts
    it within a few seconds when the schedulers run there); the run log shows it."""
    refused = actions.start_round(admin_call(), service(), tenant_id)
    if refused is not None:
        raise Problem(409, "Not Possible Now", f"{refused.reason} {refused.what_to_do}",
                      "state-conflict")
    return json_response({"status": _started(), "runs": f"{request.path}"}, 202)


def _started() -> str:
    """"requested": a worker starts the round within a few seconds; "started": this
    process did (server.schedulers = "web")."""
    return "requested" if service().rounds_in_worker else "started"


@bp.post("/restart")
def restart(tenant_id: str) -> Response:
    """Restart provisioning: drop the cursors and start a full round in the background."""
    actions.restart_provisioning(admin_call(), service(), tenant_id)
    return json_response({"status": _started(),
                          "runs": request.path.rsplit("/", 1)[0] + "/runs"}, 202)


@bp.get("/kept")
def list_kept(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    page, per_page = page_args()
    total = pending.kept_count(session(), tenant_id)
    rows = pending.kept(session(), tenant_id, (page - 1) * per_page, per_page)
    return json_response(page_json(Page([pending.kept_json(r) for r in rows], total, page,
                                        per_page)))


@bp.post("/runs/<int:run_id>/approve")
def approve(tenant_id: str, run_id: int) -> Response:
    applied = actions.approve_round(admin_call(), tenant_id, run_id)
    return done(200, {**run_json(_run_of(tenant_id, run_id)), "applied": applied})


@bp.post("/runs/<int:run_id>/reject")
def reject(tenant_id: str, run_id: int) -> Response:
    dropped = actions.reject_round(admin_call(), tenant_id, run_id)
    return done(200, {**run_json(_run_of(tenant_id, run_id)), "dropped": dropped})


@bp.post("/preview")
def preview(tenant_id: str) -> Response:
    """A dry run: what the next round would change, nothing applied."""
    try:
        _registration, result = actions.preview(admin_call(), service(), tenant_id)
    except SyncError as exc:
        raise graph_problem(exc) from exc
    return json_response({"pages": result.pages, "counts": result.counts})


@bp.post("/sync-user")
def sync_user(tenant_id: str) -> Response:
    """Fetch one user from Graph by object id or userPrincipalName and apply it now."""
    tenant_for(tenant_id)
    key = request_body()["user"]
    try:
        counts = actions.sync_user(admin_call(), service(), tenant_id, key)
    except SyncError as exc:
        if getattr(exc, "status", None) == 404:
            raise NotFound(f"Entra ID has no user {key.strip()!r}.") from exc
        raise graph_problem(exc) from exc
    return done(200, {"counts": counts})


# -- attribute mappings ------------------------------------------------------------------


def mappings_json(table: attribute_maps.TableView) -> dict[str, Any]:
    return {"mappings": table.mappings, "isDefault": table.is_default,
            "select": list(table.select), "default": dict(mapping.DEFAULT_TABLE),
            "suggested": dict(mapping.SUGGESTED), "sources": list(mapping.SOURCES),
            "targets": list(mapping.TARGETS)}


@bp.get("/mappings")
def get_mappings(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(mappings_json(attribute_maps.view(session(), tenant_id)))


@bp.put("/mappings")
def put_mappings(tenant_id: str) -> Response:
    """Replace the tenant's table (Graph property → connector attribute)."""
    tenant_for(tenant_id)
    body = request_body()
    try:
        table = attribute_maps.save_table(admin_call(), tenant_id, body["mappings"])
    except attribute_maps.InvalidTable as exc:
        errors = [{"member": f"mappings.{field}", "detail": message}
                  for field, message in exc.errors.items()] or [
            {"member": "mappings", "detail": exc.message}]
        raise Problem(400, "Invalid Request", exc.message, "invalid-request",
                      errors=errors) from None
    return done(200, mappings_json(table))
