"""Who is calling the admin API or UI: browser sessions, API tokens, CSRF, throttling.

Browsers sign in with a password and get a signed session cookie (HttpOnly,
SameSite=Lax, Secure over HTTPS) that names the account and the session epoch it was
issued under; changing the password or disabling the account bumps the epoch and so
signs out every browser. Scripts send `Authorization: Bearer <personal API token>`.

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
from connector.admins import BadCredentials, Principal
from connector.models import AdminAccount

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


def sign_in(email: str, password: str) -> AdminAccount:
    """Check the credentials (throttled), start a browser session, audit both outcomes.

    Commits: a failed attempt must be recorded even though the request fails.
    """
    settings = current_app.config["SETTINGS"].admin
    s = db.get_session(writes=True)
    now = clock.now()
    addr = request.remote_addr
    admins.check_throttle(s, email, addr, now, settings.login_max_failures,
                          settings.login_window_seconds)
    try:
        account = admins.verify_login(s, email, password)
    except BadCredentials:
        admins.audit(s, at=now, actor=f"anonymous:{addr}", action=admins.LOGIN_FAILED,
                     target=email.strip().casefold()[:320], remote_addr=addr,
                     correlation_id=g.request_id)
        s.commit()
        raise
    admins.audit(s, at=now, actor=f"admin:{account.email}", admin_id=account.id,
                 action="login", tenant_id=account.tenant_id, target=account.email,
                 remote_addr=addr, correlation_id=g.request_id)
    s.commit()
    session.clear()  # a fresh session id and CSRF token: no fixation across sign-in
    session.permanent = True
    session.update(admin_id=account.id, epoch=account.session_epoch,
                   csrf=secrets.token_urlsafe(32), issued=int(time.time()))
    return account


def sign_out() -> None:
    principal = g.get("principal")
    if principal is not None:
        admins.audit(db.get_session(), at=clock.now(), actor=principal.actor,
                     admin_id=principal.admin_id, action="logout",
                     tenant_id=principal.tenant_id, target=principal.email,
                     remote_addr=request.remote_addr, correlation_id=g.request_id)
        db.get_session().commit()
    session.clear()


def keep_session(account: AdminAccount) -> None:
    """Keep this browser signed in under the epoch its own password change moved to
    (every other session of the account ends)."""
    session["epoch"] = account.session_epoch


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
        principal = admins.authenticate_token(db.get_session(), token.strip(),
                                              clock.now())
    elif session.get("admin_id"):
        principal = _from_session()
    g.principal = principal
    return principal


def _from_session() -> Principal | None:
    settings = current_app.config["SETTINGS"].admin
    issued = session.get("issued", 0)
    if time.time() - issued > settings.session_hours * 3600:
        session.clear()
        return None
    account = db.get_session().get(AdminAccount, session["admin_id"])
    if (account is None or account.disabled_at is not None
            or account.session_epoch != session.get("epoch")):
        session.clear()
        return None
    return admins.principal_of(account, "session")


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
