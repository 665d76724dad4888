"""A tenant's users: the searchable list, a user's detail and timeline with the admin
actions on it, and the deleted-users list with restore and permanent removal."""

from __future__ import annotations

from flask import render_template, request, url_for
from werkzeug.wrappers import Response

from connector import browse, db
from connector.actions import users as actions
from connector.errors import NotFound
from connector.http import admin_call
from connector.status import admin_may_set_status
from connector.tenants import policy_of
from connector.web import bp
from connector.web.pages import catalogue, checked, come_back_to, done, page_number, tenant_page

DELETED_PER_PAGE = 50
# How a user's events read on its timeline (connector.events names them).
EVENT_LABELS = {
    "user.created": "Created", "user.status": "Status", "user.idp_status":
    "Identity provider said (status kept)", "user.deleted_list": "On the deleted-users list",
    "user.removed": "Deleted by the identity provider", "user.restored": "Restored",
    "user.purged": "Removed permanently", "user.guest": "Guest",
    "user.external_guest": "External-company guest", "user.admin": "Admin",
    "user.modules": "Own modules", "user.profile": "Profile",
}


@bp.get("/tenants/<tenant_id>/users")
def users(tenant_id: str) -> str:
    tenant_page(tenant_id)
    query = browse.user_query(request.args.to_dict())
    page = browse.list_users(db.get_session(), tenant_id, query)
    return render_template("admin/users.html", query=query, page=page,
                           catalogue=catalogue(tenant_id), origins=browse.ORIGINS)


@bp.get("/tenants/<tenant_id>/users/<user_id>")
def user(tenant_id: str, user_id: str) -> str:
    tenant_page(tenant_id)
    s = db.get_session()
    detail = browse.user_detail(s, tenant_id, user_id)
    return render_template("admin/user.html", user=detail,
                           history=browse.user_history(s, tenant_id, user_id),
                           kinds=EVENT_LABELS,
                           catalogue=catalogue(tenant_id))


def _user_url(tenant_id: str, user_id: str) -> str:
    return url_for("web.user", tenant_id=tenant_id, user_id=user_id)


@bp.post("/tenants/<tenant_id>/users/<user_id>/status")
def set_status(tenant_id: str, user_id: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(_user_url(tenant_id, user_id))
    status = request.form.get("status", "")
    user, changed = actions.set_status(admin_call(), tenant_id, user_id, status)
    said = "is now" if changed else "was already"
    return done(f"{user.user_name} {said} {status}.", _user_url(tenant_id, user_id))


@bp.post("/tenants/<tenant_id>/users/<user_id>/flags")
def set_flags(tenant_id: str, user_id: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(_user_url(tenant_id, user_id))
    _user, changed = actions.change_user(admin_call(), tenant_id, user_id,
                                         guest=checked("guest"), admin=checked("admin"))
    return done("Guest and admin flags saved." if changed else "Nothing changed.",
                _user_url(tenant_id, user_id))


@bp.post("/tenants/<tenant_id>/users/<user_id>/modules")
def set_modules(tenant_id: str, user_id: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(_user_url(tenant_id, user_id))
    _user, changed = actions.change_user(admin_call(), tenant_id, user_id,
                                         modules=request.form.getlist("modules"))
    return done("Own modules saved." if changed else "Nothing changed.",
                _user_url(tenant_id, user_id))


# -- the deleted-users list -----------------------------------------------------------------


def _deleted_url(tenant_id: str) -> str:
    return url_for("web.deleted_users", tenant_id=tenant_id)


@bp.get("/tenants/<tenant_id>/deleted-users")
def deleted_users(tenant_id: str) -> str:
    tenant = tenant_page(tenant_id)
    page = browse.deleted_users(db.get_session(), tenant_id, page_number(), DELETED_PER_PAGE)
    # What the status rules would refuse, said before the click: restoring (and removing
    # one the identity provider still holds) is a status change.
    policy = policy_of(tenant)
    refusals = {u.id: admin_may_set_status(policy, u.origin,
                                           bool(tenant.entra_sync) or u.origin == "entra_sync")
                for u in page.items}
    blocked = {r.setting for r in refusals.values() if r is not None}
    return render_template("admin/deleted_users.html", page=page, refusals=refusals,
                           blocked=blocked)


@bp.post("/tenants/<tenant_id>/deleted-users/<user_id>/restore")
def restore(tenant_id: str, user_id: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(_deleted_url(tenant_id))
    user = actions.restore_user(admin_call(), tenant_id, user_id)
    return done(f"{user.user_name} is restored and active.", _deleted_url(tenant_id))


@bp.get("/tenants/<tenant_id>/deleted-users/<user_id>/remove")
def confirm_purge(tenant_id: str, user_id: str) -> str:
    tenant = tenant_page(tenant_id)
    summary = browse.get_user(db.get_session(), tenant_id, user_id, include_removed=True)
    if summary.purged_at is not None:
        raise NotFound(f"User {user_id} is not on this tenant's deleted-users list.")
    refusal = None if summary.removed_at else admin_may_set_status(
        policy_of(tenant), summary.origin,
        bool(tenant.entra_sync) or summary.origin == "entra_sync")
    return render_template("admin/confirm_purge.html", user=summary, refusal=refusal)


@bp.post("/tenants/<tenant_id>/deleted-users/<user_id>/remove")
def purge(tenant_id: str, user_id: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(_deleted_url(tenant_id))
    user = actions.purge_user(admin_call(), tenant_id, user_id)
    return done(f"{user.user_name} is removed permanently (its history stays for billing).",
                _deleted_url(tenant_id))
