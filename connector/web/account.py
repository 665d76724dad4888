"""Signing in (password, then a TOTP or recovery code when the account has one) and
out, the start page, and the signed-in admin's own account: password, two-factor
sign-in and personal API tokens.

A secret shown once after a form (recovery codes, a one-time password a partner admin
issued) is kept in the browser's server-side session row by the POST, which redirects
to `/admin/account/shown`; that page shows it and clears it, so a reload neither shows
it again nor makes a new one."""

from __future__ import annotations

import json
from typing import Any

import segno
from flask import current_app, flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from connector import admins, auth, db
from connector.actions import accounts, notifications
from connector.admins import BadCredentials, TooManyFailedLogins
from connector.config import AzureSyncSettings
from connector.http import admin_call
from connector.web import bp
from connector.web import shown_once as once
from connector.web.pages import come_back_to, done, me, safe_next


@bp.get("/")
def index() -> Response:
    if me().role == admins.PARTNER:
        return redirect(url_for("web.tenants"))
    return redirect(url_for("web.users", tenant_id=me().tenant_id))


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Response | str:
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        if auth.current_principal(allow_token=False) is not None:
            return redirect(target or url_for("web.index"))
        return render_template("admin/sign_in.html", next=target, email="")
    email = request.form.get("email", "")
    try:
        account, needs_code = auth.sign_in(email, request.form.get("password", ""))
    except TooManyFailedLogins as exc:
        return _sign_in_again(email, target, exc.message, 429,
                              {"Retry-After": str(exc.retry_after)})
    except BadCredentials as exc:
        return _sign_in_again(email, target, exc.message, 422)
    if needs_code:
        session["pending"] = {**session["pending"], "next": target}
        return redirect(url_for("web.sign_in_code"), 303)
    return _after_sign_in(account, target)


def _after_sign_in(account: Any, target: str | None) -> Response:
    if account.must_change_password:
        return redirect(url_for("web.password"), 303)
    return redirect(target or url_for("web.index"), 303)


@bp.route("/sign-in/code", methods=["GET", "POST"])
def sign_in_code() -> Response | str:
    """The second step of signing in: the code from the authenticator app, or a recovery
    code."""
    if request.method == "GET":
        if auth.pending_account() is None:
            flash("Sign in with your e-mail and password first (a sign-in waits 5 minutes "
                  "for its code).", "error")
            return redirect(url_for("web.sign_in"))
        return render_template("admin/sign_in_code.html")
    target = safe_next((session.get("pending") or {}).get("next"))
    try:
        account = auth.sign_in_code(request.form.get("code", ""))
    except TooManyFailedLogins as exc:
        flash(exc.message, "error")
        return redirect(url_for("web.sign_in_code"), 303)
    except BadCredentials as exc:
        flash(exc.message, "error")
        pending = auth.pending_account() is not None
        return redirect(url_for("web.sign_in_code" if pending else "web.sign_in"), 303)
    return _after_sign_in(account, target)


def _sign_in_again(email: str, target: str | None, message: str, status: int,
                   headers: dict[str, str] | None = None) -> Response:
    body = render_template("admin/sign_in.html", next=target, email=email, error=message)
    return Response(body, status=status, headers=headers, mimetype="text/html")


@bp.post("/sign-out")
def sign_out() -> Response:
    auth.sign_out()
    return redirect(url_for("web.sign_in"), 303)


# -- the account ------------------------------------------------------------------------------


@bp.get("/account")
def account() -> str:
    tokens = admins.list_tokens(db.get_session(), me().admin_id)
    return render_template("admin/account.html", account=accounts.own_account(admin_call()),
                           tokens=tokens, opt_out=notifications.opt_outs(admin_call()),
                           kinds=notifications.kinds())


@bp.route("/account/password", methods=["GET", "POST"])
def password() -> Response | str:
    account = accounts.own_account(admin_call())
    used_one_time = account.must_change_password and account.one_time_used_at is not None
    if request.method == "GET":
        return render_template("admin/password.html", forced=me().must_change_password,
                               ask_current=not used_one_time)
    come_back_to(url_for("web.password"))
    account = accounts.change_password(admin_call(), request.form.get("current_password", ""),
                                       request.form.get("new_password", ""),
                                       request.form.get("new_password_again", ""),
                                       auth.throttle_limits())
    auth.keep_session(account)  # this browser stays signed in
    return done("Your password is changed. Other browsers signed in as you are signed out.",
                url_for("web.index"))


# -- two-factor sign-in -------------------------------------------------------------------------


def _keys() -> AzureSyncSettings:
    """What seals two-factor secrets: the instance key (`connector.sealed`)."""
    return current_app.config["SETTINGS"].azure_sync


@bp.get("/account/two-factor")
def two_factor() -> str:
    account = accounts.own_account(admin_call())
    qr = uri = None
    pending = admins.pending_two_factor(account, _keys())
    if pending and not account.totp_secret:
        uri = admins.provisioning_uri(account, pending)
        qr = segno.make(uri, error="m").svg_data_uri(scale=5, border=2)
    return render_template("admin/two_factor.html", account=account, uri=uri, qr=qr,
                           key=pending, required=me().must_enrol_two_factor)


@bp.post("/account/two-factor/start")
def start_two_factor() -> Response:
    come_back_to(url_for("web.two_factor"))
    accounts.start_two_factor(admin_call(), _keys())
    return done("Scan the QR code with your authenticator app (or type the key), then "
                "type the code it shows to turn two-factor sign-in on.",
                url_for("web.two_factor"))


@bp.post("/account/two-factor/confirm")
def confirm_two_factor() -> Response:
    come_back_to(url_for("web.two_factor"))
    codes = accounts.confirm_two_factor(admin_call(), request.form.get("code", ""), _keys())
    return show_once(
        title="Two-factor sign-in is on", label="Recovery codes", codes=codes,
        explain="Each code signs you in once instead of the app's code, if you lose your "
                "phone. Keep them somewhere safe, apart from your password. A partner "
                "admin can also reset your two-factor sign-in.",
        back=url_for("web.index"), back_label="Continue")


_SHOWN_PAGE = "account-shown"  # the ticket of /account/shown's secret


def show_once(**shown: Any) -> Response:
    """Commit the request, keep `shown` (a secret and the words around it) for this
    browser's next page only (`connector.web.shown_once`), and redirect to that page."""
    db.get_session().commit()
    once.stash(json.dumps(shown), _SHOWN_PAGE)
    return redirect(url_for("web.shown_once"), 303)


@bp.get("/account/shown")
def shown_once() -> Response | str:
    """A secret a form just made, shown this once: the page takes it as it shows it."""
    kept = once.take(_SHOWN_PAGE)
    if not kept:
        flash("That secret was shown once and is not kept, so it cannot be shown again. "
              "For a new one, reset the password (or two-factor sign-in) again.", "error")
        return redirect(url_for("web.account"))
    return render_template("admin/secret.html", **json.loads(kept))


@bp.post("/account/tokens")
def create_token() -> Response:
    come_back_to(url_for("web.account"))
    token, clear = accounts.create_token(admin_call(), request.form.get("name", ""))
    db.get_session().commit()
    return redirect(url_for("web.token_created", token_id=token.id,
                            shown=once.stash(clear)), 303)


@bp.get("/account/tokens/<token_id>/created")
def token_created(token_id: str) -> str:
    """A new API token, once; a reload says where to get a new one."""
    token = accounts.own_token(admin_call(), token_id)
    return render_template(
        "admin/secret.html", title=f"API token “{token.name}”",
        secret=once.take(request.args.get("shown")), label="Personal API token",
        explain="Scripts send it as “Authorization: Bearer …” to /api/v1. It acts as you; "
                "revoke it on your account page when it is no longer needed.",
        again="Revoke this token on your account page and create a new one.",
        back=url_for("web.account"), back_label="Back to your account")


@bp.post("/account/tokens/<token_id>/revoke")
def revoke_token(token_id: str) -> Response:
    come_back_to(url_for("web.account"))
    token = accounts.revoke_token(admin_call(), token_id)
    return done(f"Token “{token.name}” revoked: scripts using it are refused from now on.",
                url_for("web.account"))
