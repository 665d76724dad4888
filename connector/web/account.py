"""Signing in and out, the start page, and the signed-in admin's own account: password
and personal API tokens."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from connector import admins, auth, db
from connector.actions import accounts, notifications
from connector.admins import BadCredentials, TooManyFailedLogins
from connector.http import admin_call
from connector.web import bp, shown_once
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
        account = auth.sign_in(email, request.form.get("password", ""))
    except TooManyFailedLogins as exc:
        return _sign_in_again(email, target, exc.message, 429,
                              {"Retry-After": str(exc.retry_after)})
    except BadCredentials as exc:
        return _sign_in_again(email, target, exc.message, 422)
    if account.must_change_password:
        return redirect(url_for("web.password"), 303)
    return redirect(target or url_for("web.index"), 303)


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
    if request.method == "GET":
        return render_template("admin/password.html", forced=me().must_change_password)
    come_back_to(url_for("web.password"))
    account = accounts.change_password(admin_call(), request.form.get("current_password", ""),
                                       request.form.get("new_password", ""),
                                       request.form.get("new_password_again", ""))
    auth.keep_session(account)  # this browser stays signed in
    return done("Your password is changed. Other browsers signed in as you are signed out.",
                url_for("web.index"))


@bp.post("/account/tokens")
def create_token() -> Response:
    come_back_to(url_for("web.account"))
    token, clear = accounts.create_token(admin_call(), request.form.get("name", ""))
    db.get_session().commit()
    return redirect(url_for("web.token_created", token_id=token.id,
                            shown=shown_once.stash(clear)), 303)


@bp.get("/account/tokens/<token_id>/created")
def token_created(token_id: str) -> str:
    """A new API token, once; a reload says where to get a new one."""
    token = accounts.own_token(admin_call(), token_id)
    return render_template(
        "admin/secret.html", title=f"API token “{token.name}”",
        secret=shown_once.take(request.args.get("shown")), label="Personal API token",
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
