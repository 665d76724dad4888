"""A tenant's users: the searchable list, a user's detail and timeline with the admin
actions on it, and the deleted-users list with restore and permanent removal."""

from __future__ import annotations

from flask import Response, render_template, request, url_for

from connector import auth, browse, db
from connector.api.routes import directory, listed_user, live_user
from connector.errors import InvalidSetting, NotFound
from connector.web import (
    bp,
    catalogue,
    checked,
    come_back_to,
    done,
    me,
    page_number,
    tenant_page,
)

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
    tenant = tenant_page(tenant_id)
    come_back_to(_user_url(tenant_id, user_id))
    status = request.form.get("status", "")
    if status not in browse.STATUSES:
        raise InvalidSetting(f"status must be 'active' or 'inactive'; got {status!r}.")
    user = live_user(tenant_id, user_id)
    if not directory(tenant).admin_set_status(user, status == "active"):
        return done(f"{user.user_name} was already {status}.", _user_url(tenant_id, user_id))
    auth.audit(me(), "user.status", tenant_id, user_id, {"status": status})
    return done(f"{user.user_name} is now {status}.", _user_url(tenant_id, user_id))


@bp.post("/tenants/<tenant_id>/users/<user_id>/flags")
def set_flags(tenant_id: str, user_id: str) -> Response:
    tenant = tenant_page(tenant_id)
    come_back_to(_user_url(tenant_id, user_id))
    flags = {"guest": checked("guest"), "admin": checked("admin")}
    user = live_user(tenant_id, user_id)
    if directory(tenant).set_user_flags(user, **flags):
        auth.audit(me(), "user.changed", tenant_id, user_id, flags)
        return done("Guest and admin flags saved.", _user_url(tenant_id, user_id))
    return done("Nothing changed.", _user_url(tenant_id, user_id))


@bp.post("/tenants/<tenant_id>/users/<user_id>/modules")
def set_modules(tenant_id: str, user_id: str) -> Response:
    tenant = tenant_page(tenant_id)
    come_back_to(_user_url(tenant_id, user_id))
    modules = request.form.getlist("modules")
    user = live_user(tenant_id, user_id)
    if directory(tenant).set_user_modules(user, modules):
        auth.audit(me(), "user.changed", tenant_id, user_id, {"modules": modules})
        return done("Own modules saved.", _user_url(tenant_id, user_id))
    return done("Nothing changed.", _user_url(tenant_id, user_id))


# -- the deleted-users list -----------------------------------------------------------------


def _deleted_url(tenant_id: str) -> str:
    return url_for("web.deleted_users", tenant_id=tenant_id)


@bp.get("/tenants/<tenant_id>/deleted-users")
def deleted_users(tenant_id: str) -> str:
    tenant_page(tenant_id)
    page = browse.deleted_users(db.get_session(), tenant_id, page_number(), DELETED_PER_PAGE)
    return render_template("admin/deleted_users.html", page=page)


@bp.post("/tenants/<tenant_id>/deleted-users/<user_id>/restore")
def restore(tenant_id: str, user_id: str) -> Response:
    tenant = tenant_page(tenant_id)
    come_back_to(_deleted_url(tenant_id))
    user = listed_user(tenant_id, user_id)
    directory(tenant).restore_user(user)
    auth.audit(me(), "user.restored", tenant_id, user_id)
    return done(f"{user.user_name} is restored and active.", _deleted_url(tenant_id))


@bp.get("/tenants/<tenant_id>/deleted-users/<user_id>/remove")
def confirm_purge(tenant_id: str, user_id: str) -> str:
    tenant_page(tenant_id)
    summary = browse.get_user(db.get_session(), tenant_id, user_id, include_removed=True)
    if summary.purged_at is not None:
        raise NotFound(f"User {user_id} is not on this tenant's deleted-users list.")
    return render_template("admin/confirm_purge.html", user=summary)


@bp.post("/tenants/<tenant_id>/deleted-users/<user_id>/remove")
def purge(tenant_id: str, user_id: str) -> Response:
    tenant = tenant_page(tenant_id)
    come_back_to(_deleted_url(tenant_id))
    user = listed_user(tenant_id, user_id)
    directory(tenant).purge_user(user)
    auth.audit(me(), "user.purged", tenant_id, user_id)
    return done(f"{user.user_name} is removed permanently (its history stays for billing).",
                _deleted_url(tenant_id))
