"""The admin API at /api/v1: JSON in and out, errors as RFC 9457 problem details.

Plumbing lives here (authentication, CSRF, the request's transaction, error
translation; what the web UI shares with it is in `connector.http`); the endpoints are
in `connector.api.routes`, each one an admin action of `connector.actions`. The contract is
`openapi.json` next to this file, served at /api/v1/openapi.json and checked against
the routes by the tests.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from connector import admins, auth, db, errors, request_body
from connector.http import Problem, invalid, problem_response, to_problem

PREFIX = "/api/v1"
OPENAPI_FILE = Path(__file__).with_name("openapi.json")
log = logging.getLogger("connector.api")
bp = Blueprint("api", __name__, url_prefix=PREFIX)
_NESTED: set[str] = set()
PUBLIC = {"api.openapi"}
# What a signed-in account that must still choose its password may call.
BEFORE_PASSWORD_CHANGE = {"api.me", "api.change_password", "api.openapi"}


def init_app(app: Flask, children: tuple[Blueprint, ...] = ()) -> None:
    """Register the API; `children` are other packages' blueprints (Entra sync…) nested
    in it, so they share its sign-in, CSRF and error handling."""
    from connector.api import routes  # noqa: F401  (registers the endpoints on bp)

    for child in children:
        if child.name not in _NESTED:  # once per process; every app then has it
            bp.register_blueprint(child)
            _NESTED.add(child.name)
    app.register_blueprint(bp)
    app.extensions.setdefault("error_surfaces", []).append((PREFIX, _http_error, _unexpected))
    app.after_request(_api_headers)


def _api_headers(response: Response) -> Response:
    """Every answer of the admin API, errors and unknown URLs included: JSON is never
    sniffed as something else, and never stored by a cache (answers carry directory data
    and, now and then, a secret shown once: a new API token, a rotated SCIM token)."""
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers["Cache-Control"] = "no-store"
    return response


_HTTP_SLUGS = {400: "bad-request", 404: "not-found", 405: "method-not-allowed",
               413: "payload-too-large", 414: "uri-too-long", 415: "unsupported-media-type"}


def _http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    detail = {404: f"No API endpoint at {request.path}.",
              405: f"{request.method} is not allowed on {request.path}."}.get(
                  code, exc.description or exc.name)
    if code == 413:
        detail = request_body.too_large()
    headers = {k: v for k, v in exc.get_headers() if k == "Allow"}
    return problem_response(Problem(code, exc.name, detail, _HTTP_SLUGS.get(code, ""), headers))


def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected error in an admin API request")
    return problem_response(Problem(500, "Internal Server Error",
                                    "Something went wrong on our side; the change was not "
                                    "applied. The request id helps the operator find it in "
                                    "the log.", "internal"))


@bp.errorhandler(Exception)
def _api_error(exc: Exception) -> Response:
    session = g.get("db")
    if session is not None:
        session.rollback()
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    try:
        problem = to_problem(exc)
    except Exception:  # noqa: BLE001 - anything else is our bug: logged, never shown
        return _unexpected(exc)
    if isinstance(exc, auth.CsrfError):  # a script with the session cookie, not a stale form
        problem.detail = API_CSRF_DETAIL
    return problem_response(problem)


API_CSRF_DETAIL = (
    "This request carries the session cookie but not the session's CSRF token: send it in "
    "the X-CSRF-Token header (GET /api/v1/me returns it as csrfToken), or authenticate "
    "with a personal API token instead (Authorization: Bearer cadm_…), which needs none.")


@bp.before_request
def _authenticate() -> None:
    db.get_session(writes=request.method not in auth.SAFE_METHODS)
    if request.endpoint in PUBLIC:
        return
    principal = auth.current_principal()
    if principal is None:
        raise admins.BadCredentials("Sign in, or send 'Authorization: Bearer <API token>' "
                                    "(create one under Account → API tokens).")
    auth.check_csrf()
    if principal.must_change_password and request.endpoint not in BEFORE_PASSWORD_CHANGE:
        raise Problem(403, "Password Change Required",
                      "This account has a one-time password: choose your own first "
                      "(POST /api/v1/me/password).", "password-change-required")
    if principal.must_enrol_two_factor and request.endpoint not in BEFORE_PASSWORD_CHANGE:
        raise Problem(403, "Two-Factor Sign-In Required",
                      "Partner admins must sign in with two factors here: set it up in the "
                      "admin UI (Account → Two-factor sign-in) first.", "two-factor-required")
    _refuse_unstorable_url()


def _refuse_unstorable_url() -> None:
    """An id with NUL names nothing; a query argument with NUL is invalid. (PostgreSQL
    refuses NUL in text: unchecked, either would reach it and end in a 500.)"""
    if any("\x00" in value for value in (request.view_args or {}).values()
           if isinstance(value, str)):
        raise errors.NotFound(f"No resource at {request.path!r}.")
    if any("\x00" in value for value in request.args.values()):
        raise invalid("Query arguments may not contain NUL characters.")
