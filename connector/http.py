"""What every admin surface takes from an HTTP request, in one neutral place.

The admin API (`connector.api`), the web UI (`connector.web`) and the packages' own
routes (Entra ID sync, billing) all need the same few things from a request: who is
calling and for which tenant, the request's transaction and clock, the SCIM base URL,
paging arguments, JSON bodies read strictly, and RFC 9457 problem responses. They live
here so that no surface imports another surface's routes.

    DomainError (connector.errors) ── to_problem ──> Problem ── problem_response ──> JSON
                                                        └── connector.web: a flash or an error page
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app, g, request
from sqlalchemy.orm import Session

from connector import admins, auth, browse, clock, db, errors, limits, urls
from connector.actions import AdminCall
from connector.admins import Principal
from connector.models import Tenant
from connector.request_body import body_bytes
from connector.text import storable

PROBLEM_JSON = "application/problem+json"

# -- the caller and its transaction ----------------------------------------------------------


def session() -> Session:
    """The request's database session (one transaction per request)."""
    return db.get_session()


def principal() -> Principal:
    """The signed-in admin (the surfaces' gates have refused anyone else)."""
    return g.principal


def admin_call() -> AdminCall:
    """The request as the caller of an admin action: its session, admin, clock reading,
    request id and client address (one per request)."""
    call = g.get("admin_call")
    if call is None:
        call = g.admin_call = AdminCall(session(), principal(), clock.now(),
                                        str(g.get("request_id", "")), request.remote_addr)
    return call


def tenant_for(tenant_id: str, lock: bool = False) -> Tenant:
    """The tenant a request is about: 404 for one the caller may not see, as for one
    that does not exist; `lock` takes its row FOR UPDATE."""
    return admin_call().tenant(tenant_id, lock)


def scim_base_url() -> str:
    """The SCIM base URL as this request reached the connector."""
    return urls.scim_base_url(current_app.config["SETTINGS"], request.url_root)


# -- paging ----------------------------------------------------------------------------------


def page_args() -> tuple[int, int]:
    """`page` and `per_page` from the query string, checked (400 when out of range)."""
    query = browse.user_query({k: request.args.get(k, "") for k in ("page", "per_page")})
    return query.page, query.per_page


def page_json(page: browse.Page, items: list[Any] | None = None) -> dict[str, Any]:
    return {"items": items if items is not None else page.items, "total": page.total,
            "page": page.page, "perPage": page.per_page, "pages": page.pages}


# -- problems (RFC 9457) -----------------------------------------------------------------------


class Problem(Exception):
    """An HTTP problem (RFC 9457) raised by request plumbing itself."""

    def __init__(self, status: int, title: str, detail: str, slug: str,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.slug = status, title, detail, slug
        self.headers = headers or {}
        self.extra = extra


def invalid(detail: str) -> Problem:
    """A 400 for a request the caller must correct."""
    return Problem(400, "Invalid Request", detail, "invalid-request")


def to_problem(exc: Exception) -> Problem:
    """The one place domain and auth errors become HTTP; anything else is re-raised."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, admins.TooManyFailedLogins):
        return Problem(429, "Too Many Failed Sign-Ins", exc.message, "too-many-failed-logins",
                       {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, auth.CsrfError):
        return Problem(403, "CSRF Check Failed", exc.message, "csrf")
    if isinstance(exc, admins.Forbidden):
        return Problem(403, "Forbidden", exc.message, "forbidden")
    if isinstance(exc, admins.BadCredentials):
        return Problem(401, "Not Signed In", exc.message, "unauthorized",
                       {"WWW-Authenticate": 'Bearer realm="connector admin API"'})
    if isinstance(exc, errors.StatusChangeRefused):
        return Problem(409, "Status Change Refused", exc.reason, "status-change-refused",
                       setting=exc.setting)
    if isinstance(exc, errors.Conflict):
        return Problem(409, "Already In Use", exc.message, "conflict", field=exc.field)
    if isinstance(exc, errors.StateConflict):
        return Problem(409, "Not Possible Now", exc.message, "state-conflict")
    if isinstance(exc, errors.NotFound):
        return Problem(404, "Not Found", exc.message, "not-found")
    if isinstance(exc, errors.VersionMismatch):
        return Problem(412, "Changed Meanwhile", exc.message, "version-mismatch")
    if isinstance(exc, limits.ValueTooLong):
        return Problem(400, "Value Too Long", exc.message, "invalid-value", field=exc.attribute)
    if isinstance(exc, errors.DomainError):  # InvalidSetting, UnknownModule, InvalidReference
        return Problem(400, "Invalid Request", exc.message, "invalid-request")
    raise exc


def problem_response(problem: Problem) -> Response:
    body = {"type": f"urn:connector:problem:{problem.slug}" if problem.slug else "about:blank",
            "title": problem.title, "status": problem.status, "detail": problem.detail,
            **problem.extra}
    if request_id := g.get("request_id"):
        body["requestId"] = request_id
    return Response(json.dumps(body), status=problem.status, mimetype=PROBLEM_JSON,
                    headers=problem.headers)


# -- JSON in and out ---------------------------------------------------------------------------


def read_json() -> Any:
    """The request's JSON body, parsed; a 415 or 400 when it is not JSON, or holds text no
    database can store. What it must contain is the caller's to check (the admin API
    checks it against its contract, `connector.api.contract`)."""
    if request.mimetype not in ("application/json", "application/merge-patch+json"):
        raise Problem(415, "Unsupported Media Type",
                      "Send the body as JSON with Content-Type: application/json.",
                      "unsupported-media-type")
    try:
        body = json.loads(body_bytes() or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[…
        raise Problem(400, "Malformed JSON", "The body is not valid JSON.",
                      "malformed-json") from None
    if isinstance(body, dict):
        unstorable = sorted(str(name) for name, value in body.items()
                            if not storable(name) or not storable(value))
        if unstorable:
            raise invalid(f"{', '.join(unstorable)}: text may not contain NUL characters or "
                          "unpaired surrogates.")
    elif not storable(body):
        raise invalid("Text may not contain NUL characters or unpaired surrogates.")
    return body


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json",
                    headers=headers)


def done(status: int = 200, body: Any = None) -> Response:
    """Commit the request's transaction and answer with `body` as JSON (204 without)."""
    session().commit()
    return json_response(body, status) if body is not None else Response(status=204)
