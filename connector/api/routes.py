"""The admin API's endpoints: everything the web UI does, for scripts.

Each endpoint parses its JSON, calls one admin action (`connector.actions`) and renders
what it returns. Each write is one transaction: the change, its directory events and one
audit line commit together or not at all. A tenant admin's requests for another tenant
answer 404, exactly as for a tenant that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from flask import Response, current_app, request, stream_with_context

from connector import admins, auth, browse, counters, csv_export, feed, provlog, tenants
from connector.actions import accounts, groups, notifications, users, webhooks
from connector.actions import tenants as tenant_actions
from connector.api import OPENAPI_FILE, bp
from connector.api.contract import request_body
from connector.errors import ModuleHeld, NotFound, StateConflict
from connector.http import (
    admin_call,
    done,
    invalid,
    json_response,
    page_args,
    page_json,
    principal,
    scim_base_url,
    session,
    tenant_for,
)
from connector.models import AdminAccount, Tenant
from connector.text import digits
from connector.webhooks.service import attempt_json, endpoint_json

SETTING_NAMES = {"statusSource": "status_source", "scimDefaultStatus": "scim_default_status",
                 "provisioningPaused": "provisioning_paused"}


# -- the contract ---------------------------------------------------------------------------


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(OPENAPI_FILE.read_bytes(), mimetype="application/json")


# -- the caller -------------------------------------------------------------------------------


def account_json(account: AdminAccount) -> dict[str, Any]:
    return {"id": account.id, "email": account.email, "role": account.role,
            "tenantId": account.tenant_id, "mustChangePassword": account.must_change_password,
            "created": account.created_at.isoformat(),
            "disabled": account.disabled_at.isoformat() if account.disabled_at else None,
            "twoFactor": account.totp_secret is not None,
            "oneTimePasswordExpires": account.one_time_expires_at.isoformat()
            if account.must_change_password and account.one_time_expires_at else None}


@bp.get("/me")
def me() -> Response:
    account = accounts.own_account(admin_call())
    return json_response({**account_json(account), "via": principal().via,
                          "csrfToken": auth.csrf_token() if principal().via == "session"
                          else None})


@bp.post("/me/password")
def change_password() -> Response:
    body = request_body()
    account = accounts.change_password(admin_call(), body["currentPassword"],
                                       body["newPassword"], limits=auth.throttle_limits())
    if principal().via == "session":  # this browser stays signed in under the new epoch
        auth.keep_session(account)
    session().commit()
    return Response(status=204)


def token_json(token: Any) -> dict[str, Any]:
    return {"id": token.id, "name": token.name, "hint": token.hint + "…",
            "created": token.created_at.isoformat(),
            "lastUsed": token.last_used_at.isoformat() if token.last_used_at else None,
            "revoked": token.revoked_at.isoformat() if token.revoked_at else None}


@bp.get("/me/tokens")
def list_tokens() -> Response:
    return json_response({"items": [token_json(t) for t in
                                    admins.list_tokens(session(), principal().admin_id)]})


@bp.post("/me/tokens")
def create_token() -> Response:
    token, clear = accounts.create_token(admin_call(), request_body()["name"])
    return done(201, {**token_json(token), "token": clear})


@bp.delete("/me/tokens/<token_id>")
def revoke_token(token_id: str) -> Response:
    accounts.revoke_token(admin_call(), token_id)
    return done()


# -- notifications ----------------------------------------------------------------------------


def preferences_json(opt_out: list[str]) -> dict[str, Any]:
    return {"optOut": opt_out, "kinds": notifications.kinds()}


@bp.get("/me/notifications")
def notification_preferences() -> Response:
    return json_response(preferences_json(notifications.opt_outs(admin_call())))


@bp.put("/me/notifications")
def set_notification_preferences() -> Response:
    chosen = notifications.set_opt_outs(admin_call(), request_body()["optOut"])
    return done(200, preferences_json(chosen))


@bp.get("/notifications")
def list_notifications() -> Response:
    days = current_app.config["SETTINGS"].notify.recently_cleared_days
    return json_response({"items": [n.json() for n in notifications.notices(admin_call(),
                                                                            days)]})


# -- admin accounts (partner) -------------------------------------------------------------


@bp.get("/admins")
def list_admins() -> Response:
    principal().require_partner()
    page = browse.find_admins(session(), browse.admin_query(request.args.to_dict()))
    return json_response(page_json(page, [account_json(a) for a in page.items]))


@bp.post("/admins")
def create_admin() -> Response:
    principal().require_partner()
    body = request_body()
    account, one_time = accounts.create_admin(admin_call(), body["email"], body["role"],
                                              body.get("tenantId"), _one_time_hours())
    return done(201, {**account_json(account), "oneTimePassword": one_time})


def _one_time_hours() -> int:
    return int(current_app.config["SETTINGS"].admin.one_time_password_hours)


@bp.get("/admins/<admin_id>")
def get_admin(admin_id: str) -> Response:
    principal().require_partner()
    account = session().get(AdminAccount, admin_id)
    if account is None:
        raise NotFound(f"Admin account {admin_id} not found.")
    return json_response(account_json(account))


@bp.post("/admins/<admin_id>/disable")
def disable_admin(admin_id: str) -> Response:
    return done(200, account_json(accounts.set_disabled(admin_call(), admin_id, True)))


@bp.post("/admins/<admin_id>/enable")
def enable_admin(admin_id: str) -> Response:
    return done(200, account_json(accounts.set_disabled(admin_call(), admin_id, False)))


@bp.post("/admins/<admin_id>/reset-password")
def reset_admin_password(admin_id: str) -> Response:
    account, one_time = accounts.reset_password(admin_call(), admin_id, _one_time_hours())
    return done(200, {**account_json(account), "oneTimePassword": one_time})


@bp.post("/admins/<admin_id>/reset-two-factor")
def reset_admin_two_factor(admin_id: str) -> Response:
    return done(200, account_json(accounts.reset_two_factor(admin_call(), admin_id)))


# -- tenants -----------------------------------------------------------------------------------


def tenant_json(tenant: Tenant, users: int | None = None) -> dict[str, Any]:
    """A tenant as the API shows it; `users` its live-user count, when the caller has
    read it (a list reads every tenant's at once)."""
    return {"id": tenant.id, "name": tenant.name, "created": tenant.created_at.isoformat(),
            "timeZone": tenant.time_zone, "scimBaseUrl": scim_base_url(),
            "users": users if users is not None else counters.live_users(session(),
                                                                         tenant.id),
            "settings": settings_json(tenant),
            "closed": tenant.closed_at.isoformat() if tenant.closed_at else None,
            "purgeAfter": _purge_after(tenant)}


def _purge_after(tenant: Tenant) -> str | None:
    due = tenants.purge_due(tenant, current_app.config["SETTINGS"].admin
                            .closed_tenant_retention_days)
    return due.isoformat() if due else None


def settings_json(tenant: Tenant) -> dict[str, Any]:
    return {camel: getattr(tenant, snake) for camel, snake in SETTING_NAMES.items()}


@bp.get("/tenants")
def list_tenants() -> Response:
    query = browse.tenant_query(request.args.to_dict())
    me = principal()
    page = browse.find_tenants(session(), query,
                               only=None if me.role == admins.PARTNER else me.tenant_id)
    return json_response(page_json(page, [tenant_json(t, users) for t, users in page.items]))


@bp.post("/tenants")
def create_tenant() -> Response:
    principal().require_partner()
    tenant, issued = tenant_actions.create_tenant(admin_call(), request_body()["name"])
    return done(201, {**tenant_json(tenant), "scimToken": issued.token})


@bp.get("/tenants/<tenant_id>")
def get_tenant(tenant_id: str) -> Response:
    return json_response(tenant_json(tenant_for(tenant_id)))


@bp.patch("/tenants/<tenant_id>")
def rename_tenant(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    tenant_actions.rename_tenant(admin_call(), tenant_id, request_body()["name"])
    return done(200, tenant_json(tenant_for(tenant_id)))


@bp.post("/tenants/<tenant_id>/close")
def close_tenant(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    tenant = tenant_actions.close_tenant(admin_call(), tenant_id)
    return done(200, tenant_json(tenant))


@bp.post("/tenants/<tenant_id>/reopen")
def reopen_tenant(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    tenant = tenant_actions.reopen_tenant(admin_call(), tenant_id)
    return done(200, tenant_json(tenant))


@bp.get("/tenants/<tenant_id>/settings")
def get_settings(tenant_id: str) -> Response:
    return json_response(settings_json(tenant_for(tenant_id)))


@bp.patch("/tenants/<tenant_id>/settings")
def patch_settings(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    body = request_body()
    tenant_actions.change_settings(admin_call(), tenant_id,
                                   **{SETTING_NAMES[k]: v for k, v in body.items()})
    return done(200, settings_json(tenant_for(tenant_id)))


@bp.post("/tenants/<tenant_id>/scim-token")
def rotate_scim_token(tenant_id: str) -> Response:
    issued = tenant_actions.rotate_scim_token(admin_call(), tenant_id)
    return done(201, {"scimBaseUrl": scim_base_url(), "scimToken": issued.token})


# -- users ------------------------------------------------------------------------------------


@bp.get("/tenants/<tenant_id>/users")
def list_users(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    query = browse.user_query(request.args.to_dict())
    page = browse.list_users(session(), tenant_id, query)
    return json_response({**page_json(page, [u.as_json() for u in page.items]),
                          "capped": page.capped})


@bp.post("/tenants/<tenant_id>/users")
def create_user(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    body = request_body()
    new = users.NewUser(
        user_name=body["userName"], display_name=body.get("displayName"),
        given_name=body.get("givenName"), family_name=body.get("familyName"),
        email=body.get("email"), active=body.get("active"), guest=body.get("guest", False),
        external_company_guest=body.get("externalCompanyGuest", False),
        admin=body.get("admin", False), modules=body.get("modules"))
    user = users.create_user(admin_call(), tenant_id, new)
    return done(201, browse.user_detail(session(), tenant_id, user.id))


@bp.get("/tenants/<tenant_id>/users/<user_id>")
def get_user(tenant_id: str, user_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(browse.user_detail(session(), tenant_id, user_id))


@bp.patch("/tenants/<tenant_id>/users/<user_id>")
def patch_user(tenant_id: str, user_id: str) -> Response:
    tenant_for(tenant_id)
    body = request_body()
    users.change_user(admin_call(), tenant_id, user_id, guest=body.get("guest"),
                      admin=body.get("admin"), modules=body.get("modules"),
                      external_company_guest=body.get("externalCompanyGuest"))
    return done(200, browse.user_detail(session(), tenant_id, user_id))


@bp.put("/tenants/<tenant_id>/users/<user_id>/status")
def set_status(tenant_id: str, user_id: str) -> Response:
    tenant_for(tenant_id)
    users.set_status(admin_call(), tenant_id, user_id, request_body()["status"])
    return done(200, browse.user_detail(session(), tenant_id, user_id))


@bp.post("/tenants/<tenant_id>/users/<user_id>/corrections")
def correct_user(tenant_id: str, user_id: str) -> Response:
    tenant_for(tenant_id)
    body = request_body()
    correction = users.correction_of(body.get("kind"), body.get("value"),
                                     body.get("effectiveAt"), body.get("reason"))
    call = admin_call()
    _user, changed = users.correct_user(call, tenant_id, user_id, correction)
    return done(201, {
        "kind": body["kind"], "value": body.get("value"),
        "effectiveAt": correction.effective_at.isoformat(), "reason": correction.reason,
        "currentStateChanged": changed,
        "events": browse.user_history(session(), tenant_id, user_id,
                                      correlation_id=call.correlation_id),
        "user": browse.user_detail(session(), tenant_id, user_id)})


@bp.get("/tenants/<tenant_id>/users/<user_id>/history")
def user_history(tenant_id: str, user_id: str) -> Response:
    tenant_for(tenant_id)
    browse.get_user(session(), tenant_id, user_id, include_removed=True)  # 404 if unknown
    return json_response({"items": browse.user_history(session(), tenant_id, user_id)})


# -- deleted users ----------------------------------------------------------------------------


@bp.get("/tenants/<tenant_id>/deleted-users")
def deleted_users(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    page = browse.deleted_users(session(), tenant_id, *page_args())
    return json_response(page_json(page, [u.as_json() for u in page.items]))


@bp.post("/tenants/<tenant_id>/deleted-users/<user_id>/restore")
def restore_user(tenant_id: str, user_id: str) -> Response:
    users.restore_user(admin_call(), tenant_id, user_id)
    return done(200, browse.user_detail(session(), tenant_id, user_id))


@bp.delete("/tenants/<tenant_id>/deleted-users/<user_id>")
def purge_user(tenant_id: str, user_id: str) -> Response:
    users.purge_user(admin_call(), tenant_id, user_id)
    return done()


# -- groups and modules -----------------------------------------------------------------------


@bp.get("/tenants/<tenant_id>/groups")
def list_groups(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    q = request.args.get("q", "").strip()[:200]
    page = browse.list_groups(session(), tenant_id, q, *page_args())
    return json_response(page_json(page))


@bp.get("/tenants/<tenant_id>/groups/<group_id>")
def get_group(tenant_id: str, group_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(browse.get_group(session(), tenant_id, group_id))


@bp.get("/tenants/<tenant_id>/groups/<group_id>/members")
def group_members(tenant_id: str, group_id: str) -> Response:
    tenant_for(tenant_id)
    browse.get_group(session(), tenant_id, group_id)  # 404 if unknown
    return json_response(page_json(browse.group_members(session(), tenant_id, group_id,
                                                        *page_args())))


@bp.put("/tenants/<tenant_id>/groups/<group_id>/modules")
def set_group_modules(tenant_id: str, group_id: str) -> Response:
    tenant_for(tenant_id)
    groups.set_group_modules(admin_call(), tenant_id, group_id, request_body()["modules"])
    return done(200, browse.get_group(session(), tenant_id, group_id))


@bp.get("/tenants/<tenant_id>/modules")
def list_modules(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response({"items": browse.module_usage(session(), tenant_id)})


@bp.post("/tenants/<tenant_id>/modules")
def add_module(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    module = tenant_actions.add_module(admin_call(), tenant_id, request_body()["name"])
    return done(201, {"name": module, "users": 0, "groups": 0})


@bp.patch("/tenants/<tenant_id>/modules/<module>")
def rename_module(tenant_id: str, module: str) -> Response:
    tenant_for(tenant_id)
    new = tenant_actions.rename_module(admin_call(), tenant_id, module,
                                       request_body()["name"])
    usage = {m["name"]: m for m in browse.module_usage(session(), tenant_id)}
    return done(200, usage[new])


@bp.delete("/tenants/<tenant_id>/modules/<module>")
def remove_module(tenant_id: str, module: str) -> Response:
    tenant_for(tenant_id)
    confirm = request.args.get("confirm", "false")
    if confirm not in ("true", "false"):
        raise invalid(f"confirm must be true or false; got {confirm!r}.")
    try:
        tenant_actions.remove_module(admin_call(), tenant_id, module,
                                     confirmed=confirm == "true")
    except ModuleHeld as held:
        raise StateConflict(f"{held.message} To remove it anyway, send the DELETE again "
                            "with ?confirm=true.") from None
    return done(204)


# -- the event feed (docs/events.md) ---------------------------------------------------------


@bp.get("/events")
def events_feed() -> Response:
    principal().require_partner()
    return json_response(feed.read(session(), None, feed.parse_query(request.args)).as_json())


@bp.get("/events/cursor")
def events_cursor() -> Response:
    principal().require_partner()
    return json_response({"cursor": feed.latest(session(), None).encode()})


@bp.get("/tenants/<tenant_id>/events")
def tenant_events_feed(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(feed.read(session(), tenant_id,
                                   feed.parse_query(request.args)).as_json())


@bp.get("/tenants/<tenant_id>/events/cursor")
def tenant_events_cursor(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response({"cursor": feed.latest(session(), tenant_id).encode()})


# -- webhooks (docs/webhooks.md) ---------------------------------------------------------------
# Each operation twice: under /webhooks for the partner-wide endpoints (partner admins) and
# under /tenants/<tenant_id>/webhooks for a tenant's (its admins and the partner admins).


def _webhook_route(rule: str, methods: list[str]) -> Callable[[Callable[..., Response]],
                                                               Callable[..., Response]]:
    def register(view: Callable[..., Response]) -> Callable[..., Response]:
        name = view.__name__
        bp.add_url_rule("/webhooks" + rule, f"partner_{name}", partial(view, None),
                        methods=methods)
        bp.add_url_rule("/tenants/<tenant_id>/webhooks" + rule, f"tenant_{name}", view,
                        methods=methods)
        return view
    return register


def _hook_settings() -> Any:
    return current_app.config["SETTINGS"]


@_webhook_route("", ["GET"])
def webhooks_list(tenant_id: str | None) -> Response:
    return json_response({"items": [endpoint_json(e) for e in
                                    webhooks.list_endpoints(admin_call(), tenant_id)]})


@_webhook_route("", ["POST"])
def webhooks_create(tenant_id: str | None) -> Response:
    body = request_body()
    endpoint, secret = webhooks.create_endpoint(
        admin_call(), _hook_settings(), tenant_id, body["url"], body.get("description", ""),
        body.get("eventTypes"))
    return done(201, {**endpoint_json(endpoint), "secret": secret})


@_webhook_route("/<endpoint_id>", ["GET"])
def webhooks_get(tenant_id: str | None, endpoint_id: str) -> Response:
    return json_response(endpoint_json(webhooks.get_endpoint(admin_call(), tenant_id,
                                                             endpoint_id)))


@_webhook_route("/<endpoint_id>", ["PATCH"])
def webhooks_update(tenant_id: str | None, endpoint_id: str) -> Response:
    body = request_body()
    endpoint = webhooks.update_endpoint(admin_call(), _hook_settings(), tenant_id, endpoint_id,
                                        body.get("url"), body.get("description"),
                                        body.get("eventTypes"))
    return done(200, endpoint_json(endpoint))


@_webhook_route("/<endpoint_id>", ["DELETE"])
def webhooks_delete(tenant_id: str | None, endpoint_id: str) -> Response:
    webhooks.delete_endpoint(admin_call(), tenant_id, endpoint_id)
    return done()


@_webhook_route("/<endpoint_id>/rotate-secret", ["POST"])
def webhooks_rotate_secret(tenant_id: str | None, endpoint_id: str) -> Response:
    endpoint, secret = webhooks.rotate_secret(admin_call(), _hook_settings(), tenant_id,
                                              endpoint_id)
    return done(200, {**endpoint_json(endpoint), "secret": secret})


@_webhook_route("/<endpoint_id>/enable", ["POST"])
def webhooks_enable(tenant_id: str | None, endpoint_id: str) -> Response:
    return done(200, endpoint_json(webhooks.set_enabled(admin_call(), tenant_id, endpoint_id,
                                                        True)))


@_webhook_route("/<endpoint_id>/disable", ["POST"])
def webhooks_disable(tenant_id: str | None, endpoint_id: str) -> Response:
    return done(200, endpoint_json(webhooks.set_enabled(admin_call(), tenant_id, endpoint_id,
                                                        False)))


@_webhook_route("/<endpoint_id>/ping", ["POST"])
def webhooks_ping(tenant_id: str | None, endpoint_id: str) -> Response:
    return done(200, attempt_json(webhooks.ping(admin_call(), _hook_settings(), tenant_id,
                                                endpoint_id)))


@_webhook_route("/<endpoint_id>/replay", ["POST"])
def webhooks_replay(tenant_id: str | None, endpoint_id: str) -> Response:
    endpoint = webhooks.replay(admin_call(), tenant_id, endpoint_id,
                               request_body().get("after", ""))
    return done(200, endpoint_json(endpoint))


@_webhook_route("/<endpoint_id>/attempts", ["GET"])
def webhooks_attempts(tenant_id: str | None, endpoint_id: str) -> Response:
    limit = _whole(request.args.get("limit", "50"), "limit", 1, 500)
    before = request.args.get("before")
    rows = webhooks.list_attempts(admin_call(), tenant_id, endpoint_id, limit,
                                  _whole(before, "before", 1, 2**62) if before else None)
    return json_response({"items": [attempt_json(a) for a in rows]})


@_webhook_route("/<endpoint_id>/attempts/<int:attempt_id>/redeliver", ["POST"])
def webhooks_redeliver(tenant_id: str | None, endpoint_id: str, attempt_id: int) -> Response:
    return done(200, attempt_json(webhooks.redeliver(admin_call(), _hook_settings(), tenant_id,
                                                     endpoint_id, attempt_id)))


def _whole(raw: str, name: str, low: int, high: int) -> int:
    if not digits(raw) or not low <= int(raw) <= high:
        raise invalid(f"{name} must be a whole number from {low} to {high}; got {raw!r}.")
    return int(raw)


# -- audit and export -------------------------------------------------------------------------


@bp.get("/tenants/<tenant_id>/audit")
def tenant_audit(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(page_json(browse.audit_entries(session(), tenant_id, *page_args())))


@bp.get("/tenants/<tenant_id>/provisioning-log")
def provisioning_log(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    log_filter = provlog.parse_filter(request.args)
    page, per_page = page_args()
    rows, total = provlog.search(session(), tenant_id, log_filter, page, per_page)
    return json_response(page_json(browse.Page([provlog.entry_json(r) for r in rows], total,
                                               page, per_page)))


@bp.get("/tenants/<tenant_id>/provisioning-log/<entry_id>")
def provisioning_log_entry(tenant_id: str, entry_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(provlog.entry_json(provlog.get_entry(session(), tenant_id, entry_id)))


@bp.get("/tenants/<tenant_id>/exports/provisioning-log.csv")
def export_provisioning_log(tenant_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    log_filter = provlog.parse_filter(request.args)
    maker = current_app.extensions["sessionmaker"]
    filename = csv_export.file_name("provisioning-log", tenant.name, admin_call().now)

    def generate() -> Iterator[str]:
        with maker() as export_session:  # outlives the request's own session
            yield from csv_export.csv_chunks(
                provlog.export_rows(export_session, tenant_id, log_filter))

    return Response(stream_with_context(generate()), content_type=csv_export.CSV_MIMETYPE,
                    headers={"Content-Disposition": csv_export.attachment(f"{filename}.csv")})


@bp.get("/audit")
def audit_log() -> Response:
    principal().require_partner()
    return json_response(page_json(browse.audit_entries(session(), None, *page_args())))


@bp.get("/tenants/<tenant_id>/exports/users.csv")
def export_users(tenant_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    users.note_export(admin_call(), tenant_id, "users.exported")
    session().commit()
    maker = current_app.extensions["sessionmaker"]
    filename = csv_export.file_name("users", tenant.name, admin_call().now)

    def generate() -> Iterator[str]:
        with maker() as export_session:  # outlives the request's own session
            yield from csv_export.csv_chunks(
                csv_export.user_rows(browse.export_users(export_session, tenant_id)))

    return Response(stream_with_context(generate()), content_type=csv_export.CSV_MIMETYPE,
                    headers={"Content-Disposition": csv_export.attachment(f"{filename}.csv")})
