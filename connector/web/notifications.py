"""Notifications in the admin UI: a notice in the header (and on a tenant's pages) while
a condition of the admin's tenants stands, the notifications page, and the admin's
e-mail opt-outs on the account page.

A tenant's pages already say "round held" and "quarantine" in Entra ID sync's banners
(azure_sync/pages.py); the tenant notice lists only the other kinds, so nothing is said
twice."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, render_template, request, url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response

from connector.actions import notifications
from connector.http import admin_call
from connector.web import bp
from connector.web.pages import come_back_to, done

# Said by the Entra ID sync banners on every page of the tenant already.
SHOWN_BY_SYNC = frozenset({"round_held", "quarantined"})


def raised_notices() -> list[notifications.Notice]:
    """The raised conditions of the admin's tenants, once per request (a page renders
    the header count and the tenant notice from the same read)."""
    found = g.get("raised_notices")
    if found is None:
        try:
            found = [n for n in notifications.notices(admin_call(), 0)
                     if n.condition.cleared_at is None]
        except SQLAlchemyError:  # the error page after a failed statement: no notice
            found = []
        g.raised_notices = found
    return list(found)


def tenant_notices(tenant_id: str) -> list[notifications.Notice]:
    """The tenant's raised conditions the Entra ID sync banners do not say already (the
    quarantine banner also says how many rounds failed)."""
    mine = [n for n in raised_notices() if n.condition.tenant_id == tenant_id]
    hidden = set(SHOWN_BY_SYNC)
    if any(n.condition.kind == "quarantined" for n in mine):
        hidden.add("rounds_failing")
    return [n for n in mine if n.condition.kind not in hidden]


@bp.app_context_processor
def _notices() -> dict[str, Any]:
    return {"raised_notices": raised_notices, "tenant_notices": tenant_notices}


@bp.get("/notifications")
def notifications_page() -> str:
    days = current_app.config["SETTINGS"].notify.recently_cleared_days
    items = notifications.notices(admin_call(), days)
    return render_template("admin/notifications.html", items=items, days=days)


@bp.post("/account/notifications")
def notification_preferences() -> Response:
    come_back_to(url_for("web.account"))
    chosen = notifications.set_opt_outs(admin_call(), request.form.getlist("opt_out"))
    if "*" in chosen:
        message = "You will not be e-mailed about any notification; notices still show here."
    elif chosen:
        message = f"Saved: no e-mail about {len(chosen)} kind(s) of notification."
    else:
        message = "Saved: you are e-mailed about every notification."
    return done(message, url_for("web.account") + "#notifications-heading")
