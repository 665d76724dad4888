"""A tenant's users: the searchable list, a user's detail and timeline with the admin
actions on it, and the deleted-users list with restore and permanent removal."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask import session as flask_session
from werkzeug.wrappers import Response

from connector import browse, db
from connector.actions import users as actions
from connector.errors import (
    InvalidSetting,
    NotFound,
    StateConflict,
    StatusChangeRefused,
    UnknownModule,
)
from connector.http import admin_call
from connector.status import admin_may_set_status
from connector.tenants import policy_of
from connector.text import digits
from connector.web import bp
from connector.web.pages import (
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
    "user.frontline": "Frontline plan", "user.invited": "Invited", "user.claimed": "Claimed",
}
_CORRECTION_FORM = "user_correction_form"  # a refused correction's values and error
CORRECTION_FIELDS = ("kind", "status_value", "flag_value", "modules", "desklessPercent",
                     "paidHourly", "hasEmail", "frontlineRole", "effective_at", "reason")


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
    refused = flask_session.pop(_CORRECTION_FORM, None)
    if not isinstance(refused, dict) or refused.get("user") != [tenant_id, user_id]:
        refused = None
    return render_template("admin/user.html", user=detail,
                           history=browse.user_history(s, tenant_id, user_id),
                           kinds=EVENT_LABELS,
                           catalogue=catalogue(tenant_id),
                           partner=me().role == "partner",
                           correction=refused or {"values": {}, "field": None, "text": None},
                           roles=actions.FRONTLINE_ROLES)


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
    _user, changed = actions.change_user(
        admin_call(), tenant_id, user_id, guest=checked("guest"), admin=checked("admin"),
        external_company_guest=checked("externalCompanyGuest"))
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


@bp.post("/tenants/<tenant_id>/users/<user_id>/corrections")
def correct(tenant_id: str, user_id: str) -> Response:
    """A billing clerk's back-dated correction; a refusal comes back next to its field,
    with what was typed."""
    me().require_partner()
    tenant_page(tenant_id)
    url = _user_url(tenant_id, user_id)
    come_back_to(url)
    form = request.form
    try:
        correction = actions.correction_of(
            form.get("kind", ""), _correction_value(form.get("kind", "")),
            _form_instant(form.get("effective_at", "")), form.get("reason", ""))
        user, changed = actions.correct_user(admin_call(), tenant_id, user_id, correction)
    except (InvalidSetting, StateConflict, StatusChangeRefused, UnknownModule) as exc:
        db.get_session().rollback()
        text = exc.reason if isinstance(exc, StatusChangeRefused) else exc.message
        field = exc.field if isinstance(exc, InvalidSetting) else (
            "value" if isinstance(exc, UnknownModule) else None)
        values: dict[str, Any] = {k: form.get(k, "") for k in CORRECTION_FIELDS}
        values["modules"] = form.getlist("modules_then")
        flask_session[_CORRECTION_FORM] = {"user": [tenant_id, user_id], "field": field,
                                           "text": text, "values": values}
        flash(f"The correction was not recorded: {text}", "error")
        return redirect(url + "#correction", 303)
    when = correction.effective_at.strftime("%Y-%m-%d %H:%M UTC")
    said = ("its current state changed too" if changed else
            "its current state stays: something later in its history has the last word")
    return done(f"Correction recorded for {user.user_name}, effective {when}; {said}. The "
                "next month close bills it back (closed months stay as they were).", url)


def _correction_value(kind: str) -> Any:
    """The correction's value from the form fields its kind uses."""
    form = request.form
    if kind == "status":
        return form.get("status_value", "")
    if kind in ("guest", "externalCompanyGuest"):
        return {"yes": True, "no": False}.get(form.get("flag_value", ""), form.get(
            "flag_value", ""))
    if kind == "modules":
        return form.getlist("modules_then")
    if kind == "frontline":
        value: dict[str, Any] = {"paidHourly": checked("paidHourly"),
                                 "hasEmail": checked("hasEmail")}
        percent = form.get("desklessPercent", "").strip()
        if percent:
            if not digits(percent):
                raise InvalidSetting("desklessPercent must be a whole number from 0 to 100.",
                                     "desklessPercent")
            value["desklessPercent"] = int(percent)
        if form.get("frontlineRole"):
            value["frontlineRole"] = form["frontlineRole"]
        return value
    return None


def _form_instant(text: str) -> str:
    """A datetime-local field's value, read as UTC (the page says so)."""
    text = text.strip()
    if not text:
        raise InvalidSetting("Give the instant the correction took effect (UTC).",
                             "effectiveAt")
    return text if text.endswith("Z") or "+" in text[10:] else text + "+00:00"


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
