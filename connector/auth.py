"""Who is calling the admin API or UI: browser sessions, API tokens, CSRF, throttling.

Browsers sign in with a password (and a TOTP or recovery code, for an account that set
up two-factor sign-in) and get a signed session cookie (HttpOnly, SameSite=Lax, Secure
over HTTPS) that names a server-side session (`admin_sessions`, by a random id), the
account and the session epoch it was issued under. Signing out ends the session row, so
a copy of the cookie is worth nothing afterwards; changing or resetting the password,
resetting two-factor sign-in or disabling the account ends every row of the account and
bumps the epoch. Scripts send `Authorization: Bearer <personal API token>`.

Every state-changing request made with a session cookie must carry the session's CSRF
token (a form field `csrf_token` or the `X-CSRF-Token` header); requests with a bearer
token carry no ambient credential and need none.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import time
from typing import Any

from flask import Flask, current_app, g, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from connector import admins, clock, db
from connector.admins import BadCredentials, Principal, Throttle
from connector.models import AdminAccount

# How long the second step of a sign-in (the code) may follow the first (the password).
PENDING_SECONDS = 300

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class CsrfError(admins.AuthError):
    pass


class AdminSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signing key taken from the settings or,
    when they leave it empty, generated once and kept in the database (so every process
    of the instance shares it), and no session at all for the SCIM API."""

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        key = app.extensions.get("session_key")
        if key is None:
            configured = app.config["SETTINGS"].admin.session_secret
            key = configured or _stored_key()
            app.extensions["session_key"] = key
        app.secret_key = key
        return super().get_signing_serializer(app)

    def open_session(self, app: Flask, request: Any) -> Any:
        if request.path.startswith("/scim/"):
            return self.null_session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        mode = app.config["SETTINGS"].admin.secure_cookies
        if mode == "auto":
            base = app.config["SETTINGS"].server.public_base_url
            return request.is_secure or base.startswith("https://")
        return mode == "always"


def _stored_key() -> str:
    with current_app.extensions["write_sessionmaker"]() as s:
        return admins.instance_key(s, "session_secret", clock.now())


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"].admin
    app.session_interface = AdminSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="connector_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=settings.session_hours),
    )


# -- signing in and out ---------------------------------------------------------------------


def throttle_limits() -> Throttle:
    settings = current_app.config["SETTINGS"].admin
    return Throttle(settings.login_max_failures, settings.login_window_seconds,
                    settings.login_account_ceiling, settings.login_address_ceiling)


def _failed(email: str, step: str | None = None) -> None:
    """Record a failed sign-in (what throttling counts) and commit it: it must be kept
    even though the request fails."""
    s = db.get_session(writes=True)
    addr = request.remote_addr
    admins.audit(s, at=clock.now(), actor=f"anonymous:{addr}", action=admins.LOGIN_FAILED,
                 target=email.strip().casefold()[:320], remote_addr=addr,
                 detail={"step": step} if step else None, correlation_id=g.request_id)
    s.commit()


def sign_in(email: str, password: str) -> tuple[AdminAccount, bool]:
    """Check the credentials (throttled) and audit a failure. Returns the account and
    whether it must still give its second factor (`sign_in_code`); when not, the browser
    session has started.

    Commits: a failed attempt must be recorded even though the request fails.
    """
    s = db.get_session(writes=True)
    now = clock.now()
    admins.check_throttle(s, email, request.remote_addr, now, throttle_limits())
    try:
        account = admins.verify_login(s, email, password, now, lock=True)
    except BadCredentials:
        _failed(email)
        raise
    if account.totp_secret is not None:
        session.clear()
        session["pending"] = {"admin_id": account.id, "epoch": account.session_epoch,
                              "at": int(time.time())}
        session["csrf"] = secrets.token_urlsafe(32)
        return account, True
    _start(account, now, "password")
    return account, False


def pending_account() -> AdminAccount | None:
    """The account whose password this browser gave and whose code is awaited."""
    pending = session.get("pending")
    if not pending or time.time() - pending.get("at", 0) > PENDING_SECONDS:
        return None
    # Locked: two requests with the same code (or recovery code) must not both sign in.
    account = db.get_session().get(AdminAccount, pending["admin_id"],
                                   with_for_update=request.method == "POST" or None)
    if (account is None or account.disabled_at is not None or account.totp_secret is None
            or account.session_epoch != pending.get("epoch")):
        return None
    return account


def sign_in_code(code: str) -> AdminAccount:
    """The second step: a TOTP or recovery code for the pending account (throttled like
    the password, counted on the same account and address). Commits."""
    s = db.get_session(writes=True)
    account = pending_account()
    if account is None:
        session.pop("pending", None)
        raise BadCredentials("Your sign-in timed out before the code came. Sign in again "
                             "with your e-mail and password.")
    now = clock.now()
    admins.check_throttle(s, account.email, request.remote_addr, now, throttle_limits())
    try:
        kind = admins.check_second_factor(account, code, now,
                                          current_app.config["SETTINGS"].azure_sync)
    except BadCredentials:
        s.rollback()
        _failed(account.email, "code")
        raise
    _start(account, now, kind)
    return account


def _start(account: AdminAccount, now: dt.datetime, how: str) -> None:
    """Start the browser session: one server-side row, a fresh cookie (no fixation across
    sign-in), the one-time password used up, one audit line. Commits."""
    settings = current_app.config["SETTINGS"].admin
    s = db.get_session(writes=True)
    admins.use_one_time_password(account, now)
    sid = admins.start_session(s, account, now, dt.timedelta(hours=settings.session_hours))
    admins.audit(s, at=now, actor=f"admin:{account.email}", admin_id=account.id,
                 action="login", tenant_id=account.tenant_id, target=account.email_norm,
                 detail=None if how == "password" else {"second_factor": how},
                 remote_addr=request.remote_addr, correlation_id=g.request_id)
    s.commit()
    session.clear()
    session.permanent = True
    session.update(admin_id=account.id, epoch=account.session_epoch, sid=sid,
                   csrf=secrets.token_urlsafe(32), issued=int(time.time()))


def sign_out() -> None:
    """End the session server-side (a copied cookie no longer works) and in the browser."""
    principal = g.get("principal")
    s = db.get_session(writes=True)
    if principal is not None:
        admins.audit(s, at=clock.now(), actor=principal.actor,
                     admin_id=principal.admin_id, action="logout",
                     tenant_id=principal.tenant_id, target=principal.email,
                     remote_addr=request.remote_addr, correlation_id=g.request_id)
    if session.get("sid"):
        admins.end_session(s, session["sid"], clock.now())
    s.commit()
    session.clear()


def keep_session(account: AdminAccount) -> None:
    """Keep this browser signed in after its own password change, which ended every
    session of the account: a new server-side session under the new epoch. The caller
    commits."""
    if session.get("sid"):
        settings = current_app.config["SETTINGS"].admin
        sid = admins.start_session(db.get_session(), account, clock.now(),
                                   dt.timedelta(hours=settings.session_hours))
        session.update(sid=sid, epoch=account.session_epoch)


def this_session() -> str | None:
    """The cookie's server-side session id, when signed in with a browser."""
    return session.get("sid")


# -- who is calling --------------------------------------------------------------------------


def current_principal(allow_token: bool = True) -> Principal | None:
    """The caller, from a bearer token or the session cookie; None when signed out.
    Raises BadCredentials for a bearer token that is not valid."""
    if "principal" in g:
        return g.principal
    principal = None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if allow_token and scheme.lower() == "bearer":
        principal = admins.authenticate_token(
            db.get_session(), token.strip(), clock.now(),
            current_app.config["SETTINGS"].admin.require_two_factor_for_partner_admins)
    elif session.get("admin_id"):
        principal = _from_session()
    g.principal = principal
    return principal


def _from_session() -> Principal | None:
    settings = current_app.config["SETTINGS"].admin
    issued = session.get("issued", 0)
    sid = session.get("sid")
    if time.time() - issued > settings.session_hours * 3600 or not sid:
        session.clear()
        return None
    found = admins.session_account(db.get_session(), sid)
    account = found[1] if found else None
    if (account is None or account.id != session.get("admin_id")
            or account.disabled_at is not None
            or account.session_epoch != session.get("epoch")):
        session.clear()
        return None
    return admins.principal_of(account, "session",
                               settings.require_two_factor_for_partner_admins)


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Refuse an unsafe request made with the session cookie and no matching token."""
    if request.method in SAFE_METHODS:
        return
    principal = g.get("principal")
    if principal is not None and principal.via == "token":
        return
    sent = request.headers.get(CSRF_HEADER) or (
        request.form.get(CSRF_FIELD) if request.mimetype in (
            "application/x-www-form-urlencoded", "multipart/form-data") else None) or ""
    expected = session.get("csrf") or ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfError("The form is out of date or was not sent by this site (CSRF check "
                        "failed). Reload the page and try again.")
