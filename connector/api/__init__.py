"""The admin API at /api/v1: JSON in and out, errors as RFC 9457 problem details.

Plumbing lives here (authentication, CSRF, the request's transaction, error
translation); the endpoints are in `connector.api.routes`. The contract is
`openapi.json` next to this file, served at /api/v1/openapi.json and checked against
the routes by the tests.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from connector import admins, auth, db, errors
from connector.text import storable

PREFIX = "/api/v1"
PROBLEM_JSON = "application/problem+json"
OPENAPI_FILE = Path(__file__).with_name("openapi.json")
log = logging.getLogger("connector.api")
bp = Blueprint("api", __name__, url_prefix=PREFIX)
_NESTED: set[str] = set()
PUBLIC = {"api.openapi"}
# What a signed-in account that must still choose its password may call.
BEFORE_PASSWORD_CHANGE = {"api.me", "api.change_password", "api.openapi"}


class Problem(Exception):
    """An HTTP problem (RFC 9457) raised by the API plumbing itself."""

    def __init__(self, status: int, title: str, detail: str, slug: str,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.slug = status, title, detail, slug
        self.headers = headers or {}
        self.extra = extra


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


def problem_response(problem: Problem) -> Response:
    body = {"type": f"urn:connector:problem:{problem.slug}" if problem.slug else "about:blank",
            "title": problem.title, "status": problem.status, "detail": problem.detail,
            **problem.extra}
    if request_id := g.get("request_id"):
        body["requestId"] = request_id
    return Response(json.dumps(body), status=problem.status, mimetype=PROBLEM_JSON,
                    headers=problem.headers)


def to_problem(exc: Exception) -> Problem:
    """The one place domain and auth errors become HTTP."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, admins.TooManyFailedLogins):
        return Problem(429, "Too many failed sign-ins", exc.message, "too-many-failed-logins",
                       {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, auth.CsrfError):
        return Problem(403, "CSRF check failed", exc.message, "csrf")
    if isinstance(exc, admins.Forbidden):
        return Problem(403, "Forbidden", exc.message, "forbidden")
    if isinstance(exc, admins.BadCredentials):
        return Problem(401, "Not signed in", exc.message, "unauthorized",
                       {"WWW-Authenticate": 'Bearer realm="connector admin API"'})
    if isinstance(exc, errors.StatusChangeRefused):
        return Problem(409, "Status change refused", exc.reason, "status-change-refused",
                       setting=exc.setting)
    if isinstance(exc, errors.Conflict):
        return Problem(409, "Already in use", exc.message, "conflict", field=exc.field)
    if isinstance(exc, errors.StateConflict):
        return Problem(409, "Not possible now", exc.message, "state-conflict")
    if isinstance(exc, errors.NotFound):
        return Problem(404, "Not found", exc.message, "not-found")
    if isinstance(exc, errors.VersionMismatch):
        return Problem(412, "Changed meanwhile", exc.message, "version-mismatch")
    if isinstance(exc, errors.DomainError):  # InvalidSetting, UnknownModule, InvalidReference
        return Problem(400, "Invalid request", exc.message, "invalid-request")
    raise exc


_HTTP_SLUGS = {400: "bad-request", 404: "not-found", 405: "method-not-allowed",
               413: "payload-too-large", 415: "unsupported-media-type"}


def _http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    detail = {404: f"No API endpoint at {request.path}.",
              405: f"{request.method} is not allowed on {request.path}."}.get(
                  code, exc.description or exc.name)
    headers = {k: v for k, v in exc.get_headers() if k == "Allow"}
    return problem_response(Problem(code, exc.name, detail, _HTTP_SLUGS.get(code, ""), headers))


def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected error in an admin API request")
    return problem_response(Problem(500, "Internal error", "Something went wrong on our side; "
                                    "the change was not applied. The request id helps the "
                                    "operator find it in the log.", "internal"))


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
    return problem_response(problem)


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
        raise Problem(403, "Password change required",
                      "This account has a one-time password: choose your own first "
                      "(POST /api/v1/me/password).", "password-change-required")
    _refuse_unstorable_url()


def _refuse_unstorable_url() -> None:
    """An id with NUL names nothing; a query argument with NUL is invalid. (PostgreSQL
    refuses NUL in text: unchecked, either would reach it and end in a 500.)"""
    if any("\x00" in value for value in (request.view_args or {}).values()
           if isinstance(value, str)):
        raise errors.NotFound(f"No resource at {request.path!r}.")
    if any("\x00" in value for value in request.args.values()):
        raise Problem(400, "Invalid request", "Query arguments may not contain NUL "
                      "characters.", "invalid-request")


def read_body(allowed: set[str], required: frozenset[str] | set[str] = frozenset()
              ) -> dict[str, Any]:
    """The JSON object body; unknown or missing members are a 400 naming them."""
    if request.mimetype not in ("application/json", "application/merge-patch+json"):
        raise Problem(415, "Unsupported media type",
                      "Send the body as JSON with Content-Type: application/json.",
                      "unsupported-media-type")
    try:
        body = json.loads(request.get_data(cache=False) or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[…
        raise Problem(400, "Malformed JSON", "The body is not valid JSON.",
                      "malformed-json") from None
    if not isinstance(body, dict):
        raise Problem(400, "Invalid request", "The body must be a JSON object.",
                      "invalid-request")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Problem(400, "Invalid request", f"Unknown member(s): {', '.join(unknown)}; "
                      f"allowed: {', '.join(sorted(allowed))}.", "invalid-request")
    missing = sorted(required - set(body))
    if missing:
        raise Problem(400, "Invalid request", f"Missing member(s): {', '.join(missing)}.",
                      "invalid-request")
    unstorable = sorted(name for name, value in body.items() if not storable(value))
    if unstorable:
        raise Problem(400, "Invalid request", f"{', '.join(unstorable)}: text may not contain "
                      "NUL characters or unpaired surrogates.", "invalid-request")
    return body


def expect(body: dict[str, Any], name: str, kind: type | tuple[type, ...],
           what: str) -> Any:
    """body[name] if present and of `kind` (bool is never an int here), else a 400."""
    value = body.get(name)
    if name not in body:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise Problem(400, "Invalid request", f"{name} must be {what}.", "invalid-request")
    return value


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json",
                    headers=headers)
