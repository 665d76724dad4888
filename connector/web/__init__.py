"""The admin web UI at /admin: server-rendered pages over the same services as the API.

Plumbing lives here (who is signed in, CSRF, the request's transaction, security
headers, how errors are shown); what a page uses is in `connector.web.pages`, and the
pages are in `account`, `tenants`, `users` and `groups`. Other packages' pages (Entra ID
sync, billing) come as child blueprints the app factory passes to `init_app`; they add a
tab to the tenant pages with `pages.add_tenant_tab`. The UI holds no business rules:
every action is the same admin action the API calls (`connector.actions`, or the
package's own; one transaction: the change, its events, one audit line), and a refusal
from the rules is shown with the setting that would allow the change.

Forms post to an action URL and are answered with a redirect (303) to the page they came
from, carrying a flash message; a refused form comes back as typed, every error next to
its field (`forms`). Secrets shown once (a new SCIM or API token) too: the POST stashes
the secret, encrypted, in the session and redirects to the page that shows it, which
takes it out (`shown_once`), so a reload shows nothing and re-issues nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from markupsafe import escape
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from connector import auth, db, errors
from connector.http import to_problem
from connector.web import forms

PREFIX = "/admin"
log = logging.getLogger("connector.web")
bp = Blueprint("web", __name__, url_prefix=PREFIX, template_folder="templates",
               static_folder="static")
_NESTED: set[str] = set()
PUBLIC = {"web.sign_in", "web.sign_in_code", "web.static"}
# What an account with a one-time password may open before it has chosen its own.
BEFORE_PASSWORD_CHANGE = {"web.password", "web.sign_out", "web.static"}
# What an account that must set up two-factor sign-in may open before it has.
BEFORE_TWO_FACTOR = {"web.two_factor", "web.start_two_factor", "web.confirm_two_factor",
                     "web.shown_once", "web.sign_out", "web.static"}
# No inline script or style anywhere: what the pages run comes from /admin/static.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HSTS = "max-age=31536000"  # a year
# Refusals a form can fix (bad input, a rule, a name taken): shown on the page it came
# from. Anything else (CSRF, 404, 403) gets an error page.
FORM_ERRORS = frozenset({400, 401, 409, 412})


def init_app(app: Flask, children: tuple[Blueprint, ...] = ()) -> None:
    """Register the web UI; `children` are other packages' blueprints (Entra sync…) nested
    in it, so they share its sign-in, CSRF, transaction and error pages. A child adds its
    tab to the tenant pages with `add_tenant_tab`."""
    from connector.web import (  # noqa: F401  (register views)
        account,
        admin_accounts,
        groups,
        notifications,
        provlog,
        tenants,
        users,
        webhooks,
    )

    for child in children:
        if child.name not in _NESTED:  # once per process; every app then has it
            bp.register_blueprint(child)
            _NESTED.add(child.name)
    app.register_blueprint(bp)
    app.add_url_rule("/", "root", lambda: redirect(url_for("web.index")))
    app.after_request(_security_headers)
    app.extensions.setdefault("error_surfaces", []).append((PREFIX, _http_error, _unexpected))
    app.jinja_env.filters.update(when=show_time, value=show_value, number=show_number,
                                  compact=compact_json, pretty=pretty_json)


# -- every request --------------------------------------------------------------------------


@bp.before_request
def _authenticate() -> Response | None:
    if request.endpoint == "web.static":
        return None
    if _has_nul():
        # PostgreSQL refuses NUL in text: such input names nothing and could only fail.
        return error_page(400, "Bad request", "The address or form contains a NUL "
                          "character, which no name or value here can have.")
    db.get_session(writes=request.method not in auth.SAFE_METHODS)
    principal = auth.current_principal(allow_token=False)
    auth.check_csrf()
    if request.endpoint in PUBLIC:
        return None
    if request.method == "GET":
        forms.load()
    if principal is None:
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("web.sign_in", next=target) if target else
                        url_for("web.sign_in"))
    if principal.must_change_password:  # first the password, then the second factor
        if request.endpoint not in BEFORE_PASSWORD_CHANGE:
            return redirect(url_for("web.password"))
    elif principal.must_enrol_two_factor and request.endpoint not in BEFORE_TWO_FACTOR:
        return redirect(url_for("web.two_factor"))
    return None


def _has_nul() -> bool:
    values = [*(request.view_args or {}).values()]
    sources = [request.args] if request.method in auth.SAFE_METHODS else [request.args,
                                                                          request.form]
    values.extend(v for source in sources for vs in source.listvalues() for v in vs)
    return any("\x00" in str(v) for v in values)


def _security_headers(response: Response) -> Response:
    if request.path == "/" or request.path.startswith(PREFIX):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Content-Type-Options", "nosniff")
        if current_app.session_interface.get_cookie_secure(current_app):
            # Served over HTTPS (as the session cookie's Secure flag says): the browser
            # comes back over HTTPS only, so a network attacker cannot offer the sign-in
            # page over plain HTTP (RFC 6797).
            headers.setdefault("Strict-Transport-Security", HSTS)
        if not request.path.startswith(PREFIX + "/static/"):
            # Pages show directory data and, now and then, a secret shown once.
            headers["Cache-Control"] = "no-store"
    return response


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    from connector.web.pages import url_with

    return {**forms.template_globals(), "me": g.get("principal"), "tenant": g.get("tenant"),
            "csrf_token": auth.csrf_token, "url_with": url_with,
            "tenant_tabs": current_app.extensions.get("web_tenant_tabs", ())}


# -- errors ---------------------------------------------------------------------------------


@bp.errorhandler(errors.DomainError)
def _domain_error(exc: errors.DomainError) -> Any:
    session = g.get("db")
    if session is not None:
        session.rollback()
    problem = to_problem(exc)
    if request.method == "POST" and problem.status in FORM_ERRORS:
        back = g.get("back") or url_for("web.index")
        forms.keep(back, exc)
        if isinstance(exc, errors.InvalidFields):
            count = len(exc.errors)
            flash("Nothing was saved: " + ("one field needs" if count == 1 else
                                           f"{count} fields need")
                  + " a change; each says what, next to it below.", "error")
        elif isinstance(exc, errors.StatusChangeRefused):
            # A message with a link to the setting: flash keeps any value the session
            # cookie can serialise, though Flask types it as text.
            flash({"text": forms.shortened(exc.reason), "setting": exc.setting}, "refusal")  # type: ignore[arg-type]
        else:
            flash(forms.shortened(exc.message), "error")
        return redirect(back, 303)
    return error_page(problem.status, problem.title, problem.detail, problem.headers)


def error_page(status: int, title: str, detail: str,
               headers: dict[str, str] | None = None) -> Response:
    try:
        body = render_template("admin/error.html", status=status, title=title, detail=detail,
                               request_id=g.get("request_id"))
    except Exception:  # noqa: BLE001 - the layout itself failed: a bare page, never a traceback
        log.exception("rendering the error page failed")
        body = f"<!doctype html><title>{status}</title><h1>{escape(title)}</h1>"
    return Response(body, status=status, headers=headers, mimetype="text/html")


def _http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    detail = {404: "There is no page at this address.",
              405: f"{request.method} is not allowed here."}.get(code, exc.description or "")
    headers = {k: v for k, v in exc.get_headers() if k == "Allow"}
    return error_page(code, exc.name, detail, headers)


def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected error in an admin UI request")
    return error_page(500, "Something went wrong",
                      "Something went wrong on our side; the change was not applied. The "
                      "request id below helps the operator find it in the log.")


# -- template filters ------------------------------------------------------------------------


def show_time(value: dt.datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def show_value(value: Any) -> str:
    """An event's old/new value, readably."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {show_value(v)}" for k, v in value.items())
    return str(value)


def show_number(value: int) -> str:
    return f"{value:,}"


def pretty_json(value: Any) -> str:
    """JSON as people read it: one member per line, non-ASCII letters as they are."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def compact_json(value: Any) -> str:
    return "" if value is None else json.dumps(value, separators=(", ", ": "))
