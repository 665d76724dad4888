"""Tenants (partners), and per tenant: provisioning settings, SCIM token rotation, the
module catalogue and the audit log."""

from __future__ import annotations

from typing import Any

from flask import current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from connector import admins, browse, counters, db, tenants
from connector.actions import tenants as actions
from connector.errors import InvalidSetting, ModuleHeld, StateConflict
from connector.http import admin_call, scim_base_url
from connector.tenant_settings import CHOICES
from connector.web import bp, shown_once
from connector.web.pages import come_back_to, done, me, page_number, safe_next, tenant_page

AUDIT_PER_PAGE = 50


@bp.get("/tenants", endpoint="tenants")
def tenants_page() -> Response | str:
    if me().role != admins.PARTNER:  # a tenant admin has one tenant: go straight there
        return redirect(url_for("web.users", tenant_id=me().tenant_id))
    query = browse.tenant_query(request.args.to_dict())
    page = browse.find_tenants(db.get_session(), query)
    return render_template("admin/tenants.html", query=query, page=page,
                           purge_dates={t.id: tenants.purge_due(t, _retention_days())
                                        for t, _users in page.items})


@bp.post("/tenants")
def create_tenant() -> Response:
    me().require_partner()
    come_back_to(url_for("web.tenants"))
    tenant, issued = actions.create_tenant(admin_call(), request.form.get("name", ""))
    db.get_session().commit()
    return redirect(url_for("web.tenant_created", tenant_id=tenant.id,
                            shown=shown_once.stash(issued.token)), 303)


@bp.get("/tenants/<tenant_id>/created")
def tenant_created(tenant_id: str) -> str:
    """The new tenant's first SCIM token, once; a reload says where to get a new one."""
    tenant = tenant_page(tenant_id)
    return render_template(
        "admin/secret.html", title=f"Tenant “{tenant.name}” created",
        secret=shown_once.take(request.args.get("shown")),
        label="SCIM bearer token", scim_base_url=scim_base_url(),
        explain="Give the identity provider (Entra ID, Okta, OneLogin, JumpCloud) the SCIM "
                "base URL and this token. The token is shown only now; rotating it on the "
                "tenant's settings page issues a new one.",
        again="Rotate the SCIM token to get a new one (the first one then stops working).",
        again_url=url_for("web.rotate_scim_token", tenant_id=tenant.id),
        again_label="Rotate the SCIM token…",
        back=url_for("web.settings", tenant_id=tenant.id),
        back_label=f"Go to {tenant.name}’s provisioning settings")


def _retention_days() -> int:
    return int(current_app.config["SETTINGS"].admin.closed_tenant_retention_days)


@bp.get("/tenants/<tenant_id>/rename")
def rename_tenant_form(tenant_id: str) -> str:
    me().require_partner()
    tenant_page(tenant_id)
    return render_template("admin/tenant_rename.html")


@bp.post("/tenants/<tenant_id>/rename")
def rename_tenant(tenant_id: str) -> Response:
    me().require_partner()
    tenant_page(tenant_id)
    come_back_to(url_for("web.rename_tenant_form", tenant_id=tenant_id))
    old, new = actions.rename_tenant(admin_call(), tenant_id, request.form.get("name", ""))
    said = (f"“{old}” is now called “{new}”." if old != new else
            f"Nothing changed: the tenant is already called “{new}”.")
    return done(said, url_for("web.tenants"))


@bp.get("/tenants/<tenant_id>/close")
def close_tenant_form(tenant_id: str) -> str:
    me().require_partner()
    tenant = tenant_page(tenant_id)
    users = counters.live_users_of(db.get_session(), [tenant.id])[tenant.id]
    return render_template("admin/tenant_close.html", users=users,
                           retention_days=_retention_days())


@bp.post("/tenants/<tenant_id>/close")
def close_tenant(tenant_id: str) -> Response:
    me().require_partner()
    tenant_page(tenant_id)
    come_back_to(url_for("web.tenants"))
    tenant = actions.close_tenant(admin_call(), tenant_id)
    due = tenants.purge_due(tenant, _retention_days())
    assert due is not None
    return done(f"{tenant.name} is closed: SCIM requests with its token are refused and Entra "
                "ID sync stopped; its closed months and invoices stay readable. Its data is "
                f"deleted on {due:%Y-%m-%d} unless you reopen it before then.",
                url_for("web.tenants"))


@bp.post("/tenants/<tenant_id>/reopen")
def reopen_tenant(tenant_id: str) -> Response:
    me().require_partner()
    tenant_page(tenant_id)
    come_back_to(url_for("web.tenants"))
    tenant = actions.reopen_tenant(admin_call(), tenant_id)
    return done(f"{tenant.name} is open again: SCIM and Entra ID sync work as before.",
                url_for("web.tenants"))


@bp.get("/tenants/<tenant_id>/")
def tenant_home(tenant_id: str) -> Response:
    tenant_page(tenant_id)
    return redirect(url_for("web.users", tenant_id=tenant_id))


# -- provisioning settings ----------------------------------------------------------------


@bp.get("/tenants/<tenant_id>/settings")
def settings(tenant_id: str) -> str:
    tenant = tenant_page(tenant_id)
    return render_template("admin/settings.html", tenant=tenant, scim_base_url=scim_base_url())


def _form_settings() -> dict[str, Any]:
    """The settings a form sent, typed as `change_settings` takes them (it validates)."""
    changes: dict[str, Any] = {}
    for name in CHOICES:
        if name in request.form:
            value: Any = request.form[name]
            if name == "provisioning_paused":
                value = {"true": True, "false": False}.get(value, value)
            changes[name] = value
    if not changes:
        raise InvalidSetting("The form sent no setting to change.")
    return changes


SAID = {
    ("provisioning_paused", True): "Provisioning is paused: identity providers' changes are "
    "refused (and retried by them later) until you resume it.",
    ("provisioning_paused", False): "Provisioning resumed: identity providers' changes are "
    "applied again.",
    ("status_source", "connector"): "Active status is now managed from the connector.",
    ("status_source", "identity_provider"): "Active status is now managed from the identity "
    "provider: every user has the status the identity provider last gave it.",
    ("scim_default_status", "active"): "Users created through SCIM from now on start active.",
    ("scim_default_status", "inactive"): "Users created through SCIM from now on start "
    "inactive.",
}


@bp.post("/tenants/<tenant_id>/settings")
def change(tenant_id: str) -> Response:
    tenant_page(tenant_id)
    back = safe_next(request.form.get("next")) or url_for("web.settings", tenant_id=tenant_id)
    come_back_to(back)
    changed = actions.change_settings(admin_call(), tenant_id, **_form_settings())
    said = " ".join(SAID[name, new] for name, (_old, new) in changed.items())
    return done(said or "Nothing changed: the settings already had these values.", back)


def _rotated_explanation() -> str:
    cached = int(current_app.config["SETTINGS"].scim.token_cache_seconds)
    lag = (f" Another process of this instance may still answer reads with an old token "
           f"for up to {cached} seconds." if cached > 0 else "")
    return ("Every earlier token of this tenant is refused from now on: paste this one into "
            f"the identity provider's provisioning settings. It is shown only now.{lag}")


@bp.get("/tenants/<tenant_id>/scim-token")
def rotate_scim_token(tenant_id: str) -> str:
    """Ask before rotating; after a rotation, the new token (once)."""
    tenant = tenant_page(tenant_id)
    ticket = request.args.get("shown")
    secret = shown_once.take(ticket)
    if secret is not None:
        return render_template(
            "admin/secret.html", title="New SCIM token", secret=secret,
            label="SCIM bearer token", scim_base_url=scim_base_url(),
            explain=_rotated_explanation(),
            back=url_for("web.settings", tenant_id=tenant.id),
            back_label="Back to the settings")
    return render_template("admin/confirm_rotate.html", shown_before=bool(ticket))


@bp.post("/tenants/<tenant_id>/scim-token")
def rotate_scim_token_now(tenant_id: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(url_for("web.rotate_scim_token", tenant_id=tenant_id))
    issued = actions.rotate_scim_token(admin_call(), tenant_id)
    db.get_session().commit()
    return redirect(url_for("web.rotate_scim_token", tenant_id=tenant_id,
                            shown=shown_once.stash(issued.token)), 303)


# -- modules --------------------------------------------------------------------------------


@bp.get("/tenants/<tenant_id>/modules")
def modules(tenant_id: str) -> str:
    tenant_page(tenant_id)
    return render_template("admin/modules.html",
                           modules=browse.module_usage(db.get_session(), tenant_id))


@bp.post("/tenants/<tenant_id>/modules")
def add_module(tenant_id: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(url_for("web.modules", tenant_id=tenant_id))
    module = actions.add_module(admin_call(), tenant_id, request.form.get("name", ""))
    return done(f"Module “{module}” added to the catalogue.",
                url_for("web.modules", tenant_id=tenant_id))


@bp.get("/tenants/<tenant_id>/modules/<path:module>/rename")
def rename_module_form(tenant_id: str, module: str) -> str:
    tenant_page(tenant_id)
    name, users, groups = actions.module_holders(admin_call(), tenant_id, module)
    return render_template("admin/module_rename.html", module=name, users=users,
                           groups=groups)


@bp.post("/tenants/<tenant_id>/modules/<path:module>/rename")
def rename_module(tenant_id: str, module: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(url_for("web.rename_module_form", tenant_id=tenant_id, module=module))
    new = actions.rename_module(admin_call(), tenant_id, module, request.form.get("name", ""))
    said = (f"Module “{module}” is now called “{new}”; the users and groups that held it "
            "hold the new name. If the billing info's prices name it, change them too."
            if new != module else "Nothing changed: the module already has this name.")
    return done(said, url_for("web.modules", tenant_id=tenant_id))


@bp.get("/tenants/<tenant_id>/modules/<path:module>/remove")
def remove_module_form(tenant_id: str, module: str) -> str:
    tenant_page(tenant_id)
    name, users, groups = actions.module_holders(admin_call(), tenant_id, module)
    return render_template("admin/module_remove.html", module=name, users=users,
                           groups=groups)


@bp.post("/tenants/<tenant_id>/modules/<path:module>/remove")
def remove_module(tenant_id: str, module: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(url_for("web.remove_module_form", tenant_id=tenant_id, module=module))
    try:
        name, users, groups = actions.remove_module(
            admin_call(), tenant_id, module, confirmed=request.form.get("confirm") == "yes")
    except ModuleHeld as refused:
        raise StateConflict(f"{refused.message} Confirm on this page to remove it anyway."
                            ) from None
    held = (f" {users} user(s) and {groups} group(s) no longer hold it; their history keeps "
            "the name." if users or groups else "")
    return done(f"Module “{name}” removed from the catalogue.{held}",
                url_for("web.modules", tenant_id=tenant_id))


# -- audit log ----------------------------------------------------------------------------------


@bp.get("/tenants/<tenant_id>/audit")
def tenant_audit(tenant_id: str) -> str:
    tenant_page(tenant_id)
    page = browse.audit_entries(db.get_session(), tenant_id, page_number(), AUDIT_PER_PAGE)
    return render_template("admin/audit.html", page=page, names={})


@bp.get("/audit")
def audit_log() -> str:
    me().require_partner()
    s = db.get_session()
    page = browse.audit_entries(s, None, page_number(), AUDIT_PER_PAGE)
    names = tenants.names_of(s, {e["tenantId"] for e in page.items if e["tenantId"]})
    return render_template("admin/audit.html", page=page, names=names, all_tenants=True)
