"""A refused form comes back as it was typed, with every error next to its field.

When a form's POST is refused (bad input, a rule, a name taken), the error handler
keeps what was typed and the errors by field in the session and redirects to the
page the form is on (post/redirect/get: a reload repeats nothing). That page's next GET
takes them out (`load`) and its template fills the fields from them:
`typed(name, saved)`, `ticked(name, saved)`, `picked(name, saved)` and
`m.field_error(name)` (`error_of(name)` is the text). Passwords, secrets and
certificates are never kept.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from flask import g, request, session

from connector import errors

KEPT = "kept_form"
NEVER_KEPT = ("csrf_token", "password", "secret", "certificate", "next")
# A session cookie over ~4 KB is dropped by browsers (and signs the admin out): long
# values are not kept (the field shows its saved value), errors always are.
MAX_KEPT_CHARS = 2500
MAX_ERROR_CHARS = 300


def keep(back: str, exc: errors.DomainError | None = None) -> None:
    """Remember the refused form for the page at `back` (its errors from `exc`)."""
    field_errors: dict[str, str] = {}
    if isinstance(exc, errors.InvalidFields):
        field_errors = dict(exc.errors)
    elif isinstance(exc, errors.Conflict) and exc.field in request.form:
        field_errors = {exc.field: exc.message}
    # Errors may quote what was typed: each is cut, and only as many as fit are kept (the
    # page's summary at the top says the rest).
    kept_errors: dict[str, str] = {}
    size = 0
    for name, message in field_errors.items():
        message = shortened(message)
        size += len(name) + len(message)
        if size > MAX_KEPT_CHARS:
            break
        kept_errors[name] = message
    values: dict[str, list[str]] = {}
    for name, vs in sorted(request.form.lists(), key=lambda item: len(json.dumps(item))):
        if any(word in name for word in NEVER_KEPT):
            continue
        size += len(json.dumps([name, vs]))
        if size > MAX_KEPT_CHARS:
            break
        values[name] = vs
    session[KEPT] = {"path": urlsplit(back).path, "action": request.path, "values": values,
                     "errors": kept_errors}


def shortened(message: str) -> str:
    """A message for the session (a flash, a field's error) that may quote what was typed:
    cut to MAX_ERROR_CHARS, so a huge value cannot push the cookie past what browsers
    keep."""
    return message if len(message) <= MAX_ERROR_CHARS else message[:MAX_ERROR_CHARS - 1] + "…"


def fitted(values: dict[str, str], budget: int = MAX_KEPT_CHARS) -> dict[str, str]:
    """As many of `values` as fit in `budget` characters, the shortest first (what a page
    keeps of a refused form of its own making); the rest show their saved value."""
    kept: dict[str, str] = {}
    size = 0
    for name, value in sorted(values.items(), key=lambda item: len(item[0]) + len(item[1])):
        size += len(name) + len(value)
        if size > budget:
            break
        kept[name] = value
    return kept


def load() -> None:
    """On a GET: take a refused form out of the session if it belongs to this page."""
    kept = session.pop(KEPT, None) if KEPT in session else None
    if isinstance(kept, dict) and kept.get("path") == request.path:
        g.kept_form = kept


def _kept(action: str | None = None) -> dict[str, Any] | None:
    """The refused form, if any (and if `action` is given, only if it was posted there:
    a page with several forms fills only the refused one's fields from it)."""
    kept: dict[str, Any] | None = g.get("kept_form")
    if kept is not None and action is not None and kept.get("action") != action:
        return None
    return kept


def typed(name: str, saved: Any = "") -> Any:
    """The field's value: as typed in a refused form, else as saved."""
    kept = _kept()
    if kept is not None and name in kept["values"]:
        return kept["values"][name][0]
    return "" if saved is None else saved


def ticked(name: str, saved: bool, action: str | None = None) -> bool:
    """A checkbox: as ticked in a refused form (absent = not ticked), else as saved."""
    kept = _kept(action)
    if kept is not None:
        return bool(kept["values"].get(name)) and kept["values"][name][0] not in ("", "false")
    return saved


def picked(name: str, value: str, saved: bool, action: str | None = None) -> bool:
    """One value of a multi-value field (checkboxes of modules…): as sent, else saved."""
    kept = _kept(action)
    if kept is not None:
        return value in kept["values"].get(name, [])
    return saved


def sent(name: str) -> bool:
    """Whether a refused form sent this field (its typed value is then what to show)."""
    kept = _kept()
    return kept is not None and name in kept["values"]


def field_error(name: str) -> str | None:
    kept = _kept()
    return None if kept is None else kept["errors"].get(name)


def template_globals() -> dict[str, Any]:
    return {"typed": typed, "ticked": ticked, "picked": picked, "error_of": field_error,
            "sent": sent}
