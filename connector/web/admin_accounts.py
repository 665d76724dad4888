"""Partner admins manage admin accounts: the list, invitations (a new account with a
one-time password, shown once), disabling and enabling, password and two-factor resets.
Each is the same admin action the API calls (`connector.actions.accounts`), audited."""

from __future__ import annotations

from flask import current_app, render_template, request, url_for
from werkzeug.wrappers import Response

from connector import admins, browse, db, tenants
from connector.actions import accounts
from connector.http import admin_call
from connector.web import bp
from connector.web.account import show_once
from connector.web.pages import come_back_to, done, me


def _hours() -> int:
    return int(current_app.config["SETTINGS"].admin.one_time_password_hours)


# Up to this many tenants the invitation offers them in a list; beyond, the partner
# types the tenant's name or id (a list of thousands is no help, and weighed 0.7 MB
# with 10,000 tenants).
TENANT_CHOICES = 200


@bp.get("/admins", endpoint="admins")
def admins_page() -> str:
    me().require_partner()
    s = db.get_session()
    query = browse.admin_query(request.args.to_dict())
    page = browse.find_admins(s, query)
    names = tenants.names_of(s, {a.tenant_id for a in page.items if a.tenant_id}
                             | ({query.tenant_id} if query.tenant_id else set()))
    choices = tenants.list_tenants(s, limit=TENANT_CHOICES + 1)
    return render_template("admin/admins.html", query=query, page=page, names=names,
                           tenants=choices if len(choices) <= TENANT_CHOICES else None,
                           hours=_hours())


@bp.post("/admins")
def invite_admin() -> Response:
    come_back_to(url_for("web.admins"))
    role = request.form.get("role", "")
    tenant_id = request.form.get("tenant_id") or None
    typed = request.form.get("tenant", "").strip()
    if tenant_id is None and typed and role == admins.TENANT:
        tenant_id = tenants.tenant_called(db.get_session(), typed).id
    account, one_time = accounts.create_admin(
        admin_call(), request.form.get("email", ""), role, tenant_id, _hours())
    return _show_password(account.email, one_time or "", "Invitation for")


@bp.post("/admins/<admin_id>/reset-password")
def reset_admin_password(admin_id: str) -> Response:
    come_back_to(url_for("web.admins"))
    account, one_time = accounts.reset_password(admin_call(), admin_id, _hours())
    return _show_password(account.email, one_time, "New one-time password for")


def _show_password(email: str, one_time: str, title: str) -> Response:
    return show_once(
        title=f"{title} {email}", label="One-time password", secret=one_time,
        reload_note=True,
        explain=f"Give it to {email} by a channel other than the sign-in address (a call, "
                f"a chat). It works for one sign-in within {_hours()} hours, which asks "
                "for a new password; after that, reset the password again here.",
        back=url_for("web.admins"), back_label="Back to admin accounts")


@bp.post("/admins/<admin_id>/disable")
def disable_admin(admin_id: str) -> Response:
    come_back_to(url_for("web.admins"))
    account = accounts.set_disabled(admin_call(), admin_id, True)
    return done(f"{account.email} is disabled: signed out everywhere, and its API tokens "
                "are refused until you enable it again.", url_for("web.admins"))


@bp.post("/admins/<admin_id>/enable")
def enable_admin(admin_id: str) -> Response:
    come_back_to(url_for("web.admins"))
    account = accounts.set_disabled(admin_call(), admin_id, False)
    return done(f"{account.email} is enabled: it can sign in again.", url_for("web.admins"))


@bp.post("/admins/<admin_id>/reset-two-factor")
def reset_admin_two_factor(admin_id: str) -> Response:
    come_back_to(url_for("web.admins"))
    account = accounts.reset_two_factor(admin_call(), admin_id)
    return done(f"Two-factor sign-in of {account.email} is off and it is signed out; it "
                "signs in with its password and can set two-factor sign-in up again.",
                url_for("web.admins"))
