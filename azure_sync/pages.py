"""The admin web UI's pages for Entra ID sync, under /admin/tenants/{id}/entra.

A blueprint nested in the web UI's (connector.web), as `azure_sync.views` is in the
admin API's: the pages share its sign-in gate, CSRF check, request transaction, flash
messages and error pages, and extend its layout. It adds an "Entra ID sync" tab to every
tenant, banners on every page of a tenant while a round awaits approval or the tenant is
in quarantine, and a card on the provisioning settings page.

Every action is the admin action the API calls too (`azure_sync.actions`: register,
remove, run now, approve, reject, preview, sync one user), with its one audit line.
Refusals of the rules are flash messages on the page the form is on; a failure of Entra
ID or Graph (`SyncError`) is a flash saying what to fix.
The client secret or certificate is write-only: no page ever contains it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, url_for
from flask import session as flask_session
from flask.blueprints import BlueprintSetupState
from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from azure_sync import actions, attribute_maps, clouds, decisions, lease, mapping, pending, staging
from azure_sync.errors import (
    GraphError,
    PermissionDenied,
    RetryBudgetExhausted,
    SyncError,
    TokenError,
    Unreachable,
)
from azure_sync.views import error_json, service
from connector import clock, db
from connector.browse import Page
from connector.errors import FieldChecks, InvalidSetting, NotFound, StateConflict
from connector.http import admin_call
from connector.models import (
    EntraRegistration,
    SyncRun,
    SyncStaged,
    SyncState,
    Tenant,
    User,
)
from connector.status import Source
from connector.text import digits
from connector.web.pages import (
    MAX_KEPT_CHARS,
    TenantTab,
    add_tenant_tab,
    come_back_to,
    done,
    fitted,
    keep,
    page_number,
    shortened,
    tenant_page,
    typed,
)

bp = Blueprint("entra", __name__, url_prefix="/tenants/<tenant_id>/entra",
               template_folder="templates")
RUNS_PER_PAGE = 50
RECENT_RUNS = 5
STAGED_SHOWN = 1000
KEPT_SHOWN = 50  # kept items listed on the status page (the API pages through all)

# A round's counts as the pages name them, in the order they are shown.
COUNT_LABELS = {
    "created": "Users created", "updated": "Users updated", "enabled": "Users enabled",
    "disabled": "Users disabled", "deleted": "Users deleted", "restored": "Users restored",
    "unchanged": "Unchanged", "skipped": "Skipped (no user name, or not a user)",
    "errors": "Not applied (refused item, see the log)",
    "failed": "Not applied yet (kept and retried: see “Kept for later”)",
    "kept": "Still kept for later at the round's end",
    "adopted": "Existing accounts taken over (matching attribute)",
    "retried_created": "Kept users created at the round's end",
    "retried_updated": "Kept users updated at the round's end",
    "retried_adopted": "Kept users matched to existing accounts at the round's end",
    # reapply.settle reports what the round's end applied under retried_….
    "retried_ring_renamed": "Users who swapped names, renamed together",
    "members_waiting": "Memberships waiting for a group not synced yet",
    "members_resolved": "Waiting memberships added",
    "memberships_read": "New users whose groups were read from Entra ID",
    "memberships_joined": "Memberships of those users added",
    "disable_staged": "Disables staged (checked against the threshold at the round's end)",
    "delete_staged": "Deletions staged (checked against the threshold at the round's end)",
    "sweep_staged": "Users no longer in Entra ID (a full round removes them)",
    "seen": "Users seen (full round)", "groups_created": "Groups created",
    "groups_deleted": "Groups deleted", "memberships": "Group membership changes",
    "members_unknown": "Members not synced (devices, contacts, users out of scope)",
    "out_of_scope": "Users out of scope (not synced)",
    "entered_scope": "Users who joined the scope groups (created or restored)",
    "left_scope_staged": "Users who left the scope groups (removals staged)",
    "scope_groups_missing": "Scope groups not found in Entra ID",
    "retries": "Requests tried again (Graph or the sign-in service throttling or failing "
               "for a moment)",
    "retry_wait_seconds": "Seconds waited for them (Retry-After, backoff)",
}
SHORT_LABELS = {"created": "created", "updated": "updated", "enabled": "enabled",
                "disabled": "disabled", "deleted": "deleted", "restored": "restored",
                "disable_staged": "disables staged", "delete_staged": "deletions staged",
                "sweep_staged": "to sweep", "errors": "not applied", "adopted": "adopted",
                "failed": "not applied yet", "kept": "kept for later"}
STATUS = {  # run status -> (words, badge class)
    "running": ("running", "inactive"), "succeeded": ("succeeded", "active"),
    "failed": ("failed", "deleted"), "awaiting_approval": ("awaiting approval", "paused"),
    "rejected": ("rejected", "inactive"),
    # Graph's resync started the round over in a new run: normal, not a failure.
    "replaced": ("replaced by a resync", "inactive"),
}
ACTIONS = {"disable": "Disable (disabled in Entra ID)",
           "soft_delete": "Delete (deleted in Entra ID, still restorable there)",
           "hard_delete": "Delete (deleted permanently in Entra ID)",
           "sweep": "Remove (no longer in Entra ID)",
           "out_of_scope": "Remove (out of the sync scope: domain or groups)"}
# (cloud, authority host, Graph base URL): the presets of azure_sync.clouds
CLOUDS = [(c.name, c.authority_hosts[0], c.graph_base_url) for c in clouds.CLOUDS.values()]


@bp.record_once
def _add_tab(state: BlueprintSetupState) -> None:
    add_tenant_tab(state.app, TenantTab("Entra ID sync", "web.entra.status", "web.entra.",
                                        banner=tenant_banners, settings=settings_card))


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {"summary": summary, "count_rows": count_rows, "run_status": STATUS,
            "actions": ACTIONS}


# -- reading the state --------------------------------------------------------------------


def session() -> Any:
    return db.get_session()


def latest_run(tenant_id: str) -> SyncRun | None:
    return session().scalar(select(SyncRun).where(SyncRun.tenant_id == tenant_id)
                            .order_by(SyncRun.id.desc()).limit(1))


def held_run(tenant_id: str) -> SyncRun | None:
    """The round awaiting approval, if any. It is always the tenant's latest round: no
    round starts while one is held (`rounds.run_round`), and previews and single-user
    syncs make none. So one read by the (tenant, id) index answers, on every page."""
    run = latest_run(tenant_id)
    return run if run is not None and run.status == "awaiting_approval" else None


def quarantined(state: SyncState | None) -> bool:
    """Quarantine as the scheduler applies it: daily runs until a round succeeds."""
    return bool(state and state.quarantined_until and state.quarantined_until > clock.now())


def staged_count(run_id: int) -> int:
    key = staging.round_key_of(session(), run_id)
    return session().scalar(select(func.count()).select_from(SyncStaged)
                            .where(SyncStaged.run_id == key)) or 0


def count_rows(counts: dict[str, int] | None) -> list[tuple[str, int]]:
    """(label, number) for each count a round has, known ones first in their order."""
    counts = counts or {}
    known = [(label, counts[k]) for k, label in COUNT_LABELS.items() if counts.get(k)]
    return known + [(k, v) for k, v in sorted(counts.items())
                    if k not in COUNT_LABELS and k != "full_round" and v]


def summary(counts: dict[str, int] | None) -> str:
    """A round's counts in a few words: "25 created, 4 disabled"."""
    parts = [f"{counts[k]:,} {label}" for k, label in SHORT_LABELS.items()
             if counts and counts.get(k)]
    return ", ".join(parts) or "no changes"


def _has_scim_users(tenant_id: str) -> bool:
    return session().scalar(select(User.id).where(
        User.tenant_id == tenant_id, User.removed_at.is_(None),
        User.origin == Source.SCIM).limit(1)) is not None


# -- on every tenant page ------------------------------------------------------------------


def tenant_banners(tenant: Tenant) -> Markup | None:
    """A round awaiting approval, or quarantine: said on every page of the tenant. Only a
    tenant fed by Entra sync pays the two reads by index."""
    if not tenant.entra_sync:
        return None
    try:
        held = held_run(tenant.id)
        state = session().get(SyncState, tenant.id)
    except SQLAlchemyError:  # the error page after a failed statement: no banner, no 2nd fault
        return None
    if held is None and not quarantined(state):
        return None
    last = latest_run(tenant.id) if held is None else held
    return Markup(render_template(  # noqa: S704 - a Jinja template, autoescaped
        "admin/entra/_banners.html", held=held, staged=staged_count(held.id) if held else 0,
        state=state if quarantined(state) else None, last=last, tenant=tenant))


def settings_card(tenant: Tenant) -> Markup:
    return Markup(render_template(  # noqa: S704 - a Jinja template, autoescaped
        "admin/entra/_settings_card.html", tenant=tenant,
        registration=session().get(EntraRegistration, tenant.id)))


# -- errors ---------------------------------------------------------------------------------


def problem(title: str, text: str, hint: str | None = None) -> Response:
    """Nothing was done: say why on the page the form is on."""
    session().rollback()
    keep(g.get("back") or url_for("web.index"))  # the form comes back as typed
    # flash keeps any value the session cookie can serialise, though Flask types it as text
    flash({"title": title, "text": text, "hint": hint}, "problem")  # type: ignore[arg-type]
    return redirect(g.get("back") or url_for("web.index"), 303)


HINTS: list[tuple[type[SyncError], str, str]] = [
    (Unreachable, "Entra ID could not be reached.",
     "Check the authority host and Graph base URL on the registration page; behind an "
     "outbound proxy, the connector's proxy setting (see Reach and trust in the docs)."),
    (TokenError, "Entra ID did not sign the app in.",
     "Check the directory (tenant) id, the client id and the client secret or certificate "
     "on the registration page, and that the authority host is your cloud's."),
    (PermissionDenied, "Microsoft Graph refused access.",
     "In Entra ID, grant the app the application permissions User.Read.All and "
     "GroupMember.Read.All, with admin consent."),
    (RetryBudgetExhausted, "Microsoft Graph is busy.",
     "Graph is throttling or failing for now: try again in a few minutes."),
    (GraphError, "Microsoft Graph refused the request.",
     "Check the Graph base URL on the registration page (it must match your cloud)."),
    (SyncError, "Entra ID sync stopped.", ""),
]


@bp.errorhandler(SyncError)
def _sync_error(exc: SyncError) -> Response:
    title, hint = next((t, h) for kind, t, h in HINTS if isinstance(exc, kind))
    shown = error_json(exc.message)
    text = shown["error"] or exc.plain
    return problem(title, text + (f" ({shown['detail']})" if shown["detail"] else ""),
                   hint or None)


@bp.app_template_filter("run_error")
def run_error(text: str | None) -> str:
    """A run's error in plain words, as the signed-in admin may see it."""
    return error_json(text)["error"] or ""


@bp.app_template_filter("run_error_detail")
def run_error_detail(text: str | None) -> str:
    """The raw cause behind a run's error (partner admins), else empty."""
    return error_json(text)["detail"] or ""


# -- status ---------------------------------------------------------------------------------


def _status_url(tenant_id: str) -> str:
    return url_for("web.entra.status", tenant_id=tenant_id)


def _run_url(tenant_id: str, run_id: int) -> str:
    return url_for("web.entra.run", tenant_id=tenant_id, run_id=run_id)


@bp.get("", endpoint="status")
def status(tenant_id: str) -> str:
    tenant = tenant_page(tenant_id)
    s = session()
    registration = s.get(EntraRegistration, tenant_id)
    state = s.get(SyncState, tenant_id)
    recent = list(s.scalars(select(SyncRun).where(SyncRun.tenant_id == tenant_id)
                            .order_by(SyncRun.id.desc()).limit(RECENT_RUNS)))
    scim_users = registration is None and _has_scim_users(tenant_id)
    kept_rows = pending.kept(s, tenant_id, limit=KEPT_SHOWN)
    return render_template(
        "admin/entra/status.html", registration=registration, state=state, recent=recent,
        last=recent[0] if recent else None, quarantine=quarantined(state),
        running=_running(state), scim_users=scim_users, tenant=tenant,
        progress=progress(tenant_id),
        kept=kept_rows, kept_total=pending.kept_count(s, tenant_id) if kept_rows else 0,
        mappings=attribute_maps.view(s, tenant_id))


def _running(state: SyncState | None) -> bool:
    return lease.is_held(state, clock.now())


def progress(tenant_id: str) -> dict[str, Any]:
    """Whether a round runs now, and a key that changes whenever the run log would show
    something new (a round started, read a page, changed status): what the pages poll to
    refresh themselves while a round runs."""
    s = session()
    state = s.get(SyncState, tenant_id)
    last = latest_run(tenant_id)
    running = _running(state) or bool(last and last.status == "running")
    key = f"{running}:{last.id}:{last.status}:{last.pages}" if last else f"{running}:none"
    return {"running": running, "key": key,
            "latestRun": {"id": last.id, "status": last.status} if last else None}


@bp.get("/progress")
def progress_json(tenant_id: str) -> Response:
    """The run log's progress as JSON (for admin.js; the web session's cookie signs in)."""
    tenant_page(tenant_id)
    response = jsonify(progress(tenant_id))
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the registration ------------------------------------------------------------------------


def _registration_url(tenant_id: str) -> str:
    return url_for("web.entra.registration", tenant_id=tenant_id)


@bp.get("/registration")
def registration(tenant_id: str) -> str:
    tenant_page(tenant_id)
    found = session().get(EntraRegistration, tenant_id)
    defaults = _settings()
    return render_template(
        "admin/entra/registration.html", registration=found, clouds=CLOUDS,
        percent_from=staging.PERCENT_RULE_FROM,
        scim_users=found is None and _has_scim_users(tenant_id),
        # As saved, or as typed when the form was refused (every error next to its field).
        values={name: typed(name, saved) for name, saved in {
                "directory_id": found.directory_id if found else "",
                "client_id": found.client_id if found else "",
                "authority_host": found.authority_host if found else defaults.authority_host,
                "graph_base_url": found.graph_base_url if found else defaults.graph_base_url,
                "interval_minutes": found.interval_minutes if found
                else defaults.interval_minutes,
                "threshold_count": found.threshold_count if found else staging.THRESHOLD_COUNT,
                "threshold_percent": found.threshold_percent if found
                else staging.THRESHOLD_PERCENT,
                "scope_domains": "\n".join(found.scope_domains or []) if found else "",
                "scope_groups": "\n".join(found.scope_groups or []) if found else "",
                "scope_group_mode": found.scope_group_mode if found else "direct",
                "soft_delete": found.soft_delete if found else "disable",
                "matching_attribute": found.matching_attribute if found
                else "userPrincipalName"}.items()})


def _settings() -> Any:
    from flask import current_app

    return current_app.config["SETTINGS"].azure_sync


def _text(name: str) -> str | None:
    value = request.form.get(name, "").strip()
    return value or None


def _list(name: str) -> list[str] | None:
    """A textarea of values, one per line (commas and spaces separate them too); None
    when the form has no such field (the setting stays as it is)."""
    if name not in request.form:
        return None
    return request.form[name].replace(",", " ").split()


def _number(name: str, what: str) -> int | None:
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    if not digits(raw) or len(raw) > 9:
        raise InvalidSetting(f"{what} must be a whole number; got {raw!r}.")
    return int(raw)


@bp.post("/registration")
def save_registration(tenant_id: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(_registration_url(tenant_id))
    # Write-only credentials: an empty field keeps the stored one.
    typed = request.form.get("client_secret", "")
    secret = typed if typed.strip() else None
    pem = request.form.get("certificate_pem", "").replace("\r\n", "\n").strip() or None
    fields = FieldChecks()  # every wrong field said at once, next to it
    numbers: dict[str, int | None] = {}
    for name, label in (("interval_minutes", "Minutes between rounds"),
                        ("threshold_count", "The deletion threshold in users"),
                        ("threshold_percent", "The deletion threshold in percent")):
        numbers[name] = None
        with fields.field(name):
            numbers[name] = _number(name, label)
    given = actions.Registration(
        directory_id=_text("directory_id") or "", client_id=_text("client_id") or "",
        secret=secret, certificate_pem=pem, authority_host=_text("authority_host"),
        graph_base_url=_text("graph_base_url"), interval_minutes=numbers["interval_minutes"],
        threshold_count=numbers["threshold_count"],
        threshold_percent=numbers["threshold_percent"],
        scope_domains=_list("scope_domains"), scope_groups=_list("scope_groups"),
        scope_group_mode=_text("scope_group_mode"), soft_delete=_text("soft_delete"),
        matching_attribute=_text("matching_attribute"))
    with fields.field("form"):
        found, new = actions.save_registration(admin_call(), _settings(), tenant_id, given)
    fields.raise_any()
    if new:
        said = (f"Entra ID sync is set up: a round runs every {found.interval_minutes} "
                "minutes. Start the first one now with “Run now”, or see what it would do "
                "with “Preview”.")
    else:
        credential = (" The client secret was replaced." if secret else
                      " The certificate was replaced." if pem else "")
        said = "The app registration is saved." + credential
        if found.full_round_due:
            said += (" The scope changed: the next round is a full round, which reads every "
                     "user again.")
    return done(said, _status_url(tenant_id))


@bp.get("/remove")
def confirm_remove(tenant_id: str) -> str:
    tenant_page(tenant_id)
    found = session().get(EntraRegistration, tenant_id)
    if found is None:
        raise NotFound("This tenant has no Entra ID app registration.")
    return render_template("admin/entra/confirm_remove.html", registration=found,
                           held=held_run(tenant_id))


@bp.post("/remove")
def remove(tenant_id: str) -> Response:
    tenant_page(tenant_id, lock=True)
    come_back_to(_status_url(tenant_id))
    actions.remove_registration(admin_call(), tenant_id)
    return done("The app registration is removed: Entra ID sync stopped for this tenant. "
                "The users it synced stay as they are.", _status_url(tenant_id))


# -- the run log ---------------------------------------------------------------------------


@bp.get("/runs")
def runs(tenant_id: str) -> str:
    tenant_page(tenant_id)
    s = session()
    page = page_number()
    where = [SyncRun.tenant_id == tenant_id]
    total = s.scalar(select(func.count()).select_from(SyncRun).where(*where)) or 0
    items = list(s.scalars(select(SyncRun).where(*where).order_by(SyncRun.id.desc())
                           .offset((page - 1) * RUNS_PER_PAGE).limit(RUNS_PER_PAGE)))
    return render_template("admin/entra/runs.html",
                           page=Page(items, total, page, RUNS_PER_PAGE),
                           progress=progress(tenant_id))


def _run_of(tenant_id: str, run_id: int) -> SyncRun:
    run = session().get(SyncRun, run_id)
    if run is None or run.tenant_id != tenant_id:
        raise NotFound(f"Sync round {run_id} not found for this tenant.")
    return run


@bp.get("/runs/<int:run_id>")
def run(tenant_id: str, run_id: int) -> str:
    tenant_page(tenant_id)
    found = _run_of(tenant_id, run_id)
    staged = decisions.staged_changes(session(), run_id, limit=STAGED_SHOWN)
    total = staged_count(run_id) if len(staged) == STAGED_SHOWN else len(staged)
    return render_template("admin/entra/run.html", run=found, staged=staged,
                           staged_total=total,
                           registration=session().get(EntraRegistration, tenant_id))


@bp.get("/runs/<int:run_id>/<any(approve, reject):decision>")
def confirm_decision(tenant_id: str, run_id: int, decision: str) -> str:
    tenant_page(tenant_id)
    found = _run_of(tenant_id, run_id)
    if found.status != "awaiting_approval":
        words = STATUS.get(found.status, (found.status, ""))[0]
        raise StateConflict(f"Sync round {run_id} is {words}, not awaiting approval.")
    return render_template("admin/entra/confirm_decision.html", run=found,
                           decision=decision, staged=staged_count(run_id))


@bp.post("/runs/<int:run_id>/approve")
def approve(tenant_id: str, run_id: int) -> Response:
    tenant_page(tenant_id, lock=True)
    come_back_to(_run_url(tenant_id, run_id))
    applied = actions.approve_round(admin_call(), tenant_id, run_id)
    return done(f"Round {run_id} approved and applied: {summary(applied)}. Rounds run "
                "again on schedule.", _run_url(tenant_id, run_id))


@bp.post("/runs/<int:run_id>/reject")
def reject(tenant_id: str, run_id: int) -> Response:
    tenant_page(tenant_id, lock=True)
    come_back_to(_run_url(tenant_id, run_id))
    dropped = actions.reject_round(admin_call(), tenant_id, run_id)
    return done(f"Round {run_id} rejected: its {dropped:,} disables and deletions were "
                "dropped and those users stay as they are. Rounds run again on schedule.",
                _run_url(tenant_id, run_id))


# -- actions ------------------------------------------------------------------------------------


@bp.post("/run")
def run_now(tenant_id: str) -> Response:
    """Start a round in the background (it may take minutes); the run log shows it."""
    tenant_page(tenant_id)
    come_back_to(_status_url(tenant_id))
    refused = actions.start_round(admin_call(), service(), tenant_id)
    if refused is not None:
        return problem("No round started.", refused.reason, refused.what_to_do)
    if service().rounds_in_worker:
        flash("A round was requested: the worker starts it in the background within a few "
              "seconds. The run log below updates by itself until it ends.", "success")
    else:
        flash("A round started in the background. The run log below updates by itself "
              "until it ends.", "success")
    return redirect(url_for("web.entra.runs", tenant_id=tenant_id, started=1), 303)


@bp.get("/restart")
def confirm_restart(tenant_id: str) -> str:
    tenant_page(tenant_id)
    found = session().get(EntraRegistration, tenant_id)
    if found is None:
        raise NotFound("This tenant has no Entra ID app registration.")
    return render_template("admin/entra/confirm_restart.html", registration=found,
                           held=held_run(tenant_id))


@bp.post("/restart")
def restart(tenant_id: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(_status_url(tenant_id))
    actions.restart_provisioning(admin_call(), service(), tenant_id)
    started = ("the worker starts a full round in the background within a few seconds"
               if service().rounds_in_worker else "a full round started in the background")
    flash(f"Provisioning restarted: {started}. It reads every user and group again. The "
          "run log below updates by itself until it ends.", "success")
    return redirect(url_for("web.entra.runs", tenant_id=tenant_id, started=1), 303)


_PREVIEW = "entra_preview"  # a dry run's result, for the one GET that shows it


@bp.post("/preview")
def preview(tenant_id: str) -> Response:
    """A dry run: what the next round would change, nothing applied. Its result is kept
    in the session for the page that shows it, so a reload neither runs (and audits) it
    again nor shows a result that has gone stale."""
    tenant_page(tenant_id)
    come_back_to(_status_url(tenant_id))
    _found, result = actions.preview(admin_call(), service(), tenant_id)
    counts = dict(result.counts)
    full = bool(counts.pop("full_round", 0))
    flask_session[_PREVIEW] = {"tenant": tenant_id, "counts": counts, "full": full,
                               "pages": result.pages}
    return redirect(url_for("web.entra.preview_result", tenant_id=tenant_id), 303)


@bp.get("/preview")
def preview_result(tenant_id: str) -> Response | str:
    tenant_page(tenant_id)
    shown = flask_session.pop(_PREVIEW, None)
    found = session().get(EntraRegistration, tenant_id)
    if not isinstance(shown, dict) or shown.get("tenant") != tenant_id or found is None:
        flash("A preview is shown once, when it is made: it would be out of date by now. "
              "Use “Preview” again to see what the next round would change.", "error")
        return redirect(_status_url(tenant_id), 303)
    return render_template("admin/entra/preview.html", counts=shown["counts"],
                           full=shown["full"], pages=shown["pages"], registration=found)


@bp.post("/sync-user")
def sync_user(tenant_id: str) -> Response:
    """Fetch one user from Graph by userPrincipalName or object id and apply it now."""
    tenant_page(tenant_id)
    come_back_to(_status_url(tenant_id))
    key = request.form.get("user", "")
    try:
        counts = actions.sync_user(admin_call(), service(), tenant_id, key)
    except GraphError as exc:
        if exc.status == 404:
            return problem("Not synced.", f"Entra ID has no user {key.strip()!r}.",
                           "Give the userPrincipalName or the object id as Entra ID shows "
                           "them.")
        raise
    return done(f"{key.strip()} synced from Entra ID: {summary(counts)}.",
                _status_url(tenant_id))


# -- attribute mappings ----------------------------------------------------------------------

_MAPPING_FORM = "entra_mapping_form"  # a refused form's values and error, for the next GET


def _mappings_url(tenant_id: str) -> str:
    return url_for("web.entra.mappings", tenant_id=tenant_id)


@bp.get("/mappings")
def mappings(tenant_id: str) -> str:
    tenant = tenant_page(tenant_id)
    table = attribute_maps.view(session(), tenant_id)
    refused = flask_session.pop(_MAPPING_FORM, None)
    if not isinstance(refused, dict) or refused.get("tenant") != tenant_id:
        refused = None
    values = refused["values"] if refused else table.mappings
    rows = [{"source": source, "target": values.get(source, ""),
             "default": mapping.DEFAULT_TABLE.get(source),
             "suggested": mapping.SUGGESTED.get(source),
             "error": (refused.get("errors") or {}).get(source) if refused else None}
            for source in mapping.SOURCES]
    return render_template("admin/entra/mappings.html", tenant=tenant, table=table,
                           rows=rows, targets=mapping.TARGETS,
                           form_error=refused["text"] if refused and not refused.get("field")
                           else None)


@bp.post("/mappings")
def save_mappings(tenant_id: str) -> Response:
    tenant_page(tenant_id)
    url = _mappings_url(tenant_id)
    come_back_to(url)
    if request.form.get("reset"):
        table: dict[str, str] = dict(mapping.DEFAULT_TABLE)
    else:
        table = {source: request.form[f"map-{source}"] for source in mapping.SOURCES
                 if request.form.get(f"map-{source}")}
        unknown = [k[4:] for k in request.form if k.startswith("map-")
                   and k[4:] not in mapping.SOURCES and request.form[k]]
        table.update({k: request.form[f"map-{k}"] for k in unknown})  # refused, named
    before = attribute_maps.users_select(session(), tenant_id)
    try:
        saved = attribute_maps.save_table(admin_call(), tenant_id, table)
    except attribute_maps.InvalidTable as exc:
        session().rollback()
        # What was typed may be huge: the session cookie keeps what fits.
        flask_session[_MAPPING_FORM] = {
            "tenant": tenant_id, "field": exc.field,
            "errors": fitted({k: shortened(v) for k, v in exc.errors.items()},
                             MAX_KEPT_CHARS // 2),
            "text": shortened(exc.message),
            "values": fitted(table, MAX_KEPT_CHARS // 2)}
        flash(shortened(exc.message), "error")
        return redirect(url, 303)
    said = ("Attribute mappings reset to Entra’s default." if request.form.get("reset")
            else "Attribute mappings saved.")
    if set(saved.select) != set(before):
        said += (" Graph is now asked for other properties: the next round is a full round, "
                 "which reads every user again.")
    return done(said, url)
