"""The admin web UI's billing pages, under /admin/tenants/{id}/billing.

A blueprint nested in the web UI's (connector.web), like Entra sync's: it adds a
"Billing" tab to every tenant with the billing info form, the quick overview (active
users per module, regular and guest), the running month so far, the history of closed
months with a chart, and a page per closed month: its invoice, adjustment lines, the
per-user billed list with reasons, its versions, and (partner admins) a reissue form.

Every action is the admin action the API calls too (`billing.actions`), with its one
audit line.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from werkzeug.wrappers import Response

from billing import actions, overview
from billing.calendar import InvalidMonth, Month, zone
from billing.chart import chart
from billing.planning import NotDue
from billing.policies import POLICIES
from billing.preview import preview
from billing.profiles import load_profile
from connector import counters, db
from connector.errors import FieldChecks, InvalidSetting, NotFound
from connector.http import admin_call
from connector.text import storable_text
from connector.web.pages import (
    TenantTab,
    add_tenant_tab,
    come_back_to,
    done,
    me,
    page_number,
    tenant_page,
)

bp = Blueprint("billing", __name__, url_prefix="/tenants/<tenant_id>/billing",
               template_folder="templates")
LINES_PER_PAGE = 100
PREVIEW_INLINE_USERS = 50_000  # larger tenants compute the running month on request
REASONS = {
    "active_whole_month": "Active the whole month",
    "not_active_whole_month": "Not active the whole month (created, closed or inactive "
                              "during it)",
    "active_with_module": "Active at the month's end with a module",
    "inactive_at_end": "Inactive at the month's end",
    "no_module": "No module at the month's end",
    "removed": "Deleted by the month's end",
    "invited": "Invited to claim an account",
    "claimed": "Claimed the account",
    "not_invited": "Not invited (provisioned only)",
    "monthly_active": "Signed in, visited or chatted during the month",
    "no_activity": "No sign-in, visit or chat during the month",
    "no_account_on_first_day": "No account on the month's first day",
    "trial": "Trial (billing starts the 1st after the trial ends)",
    "external_company_guest": "Guest from another company (never billed)",
}


@bp.record_once
def _add_tab(state: BlueprintSetupState) -> None:
    add_tenant_tab(state.app, TenantTab("Billing", "web.billing.index", "web.billing."))


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {"reasons": REASONS, "policies": POLICIES, "chart": chart,
            "local_time": local_time}


def local_time(instant: dt.datetime, tz: str) -> str:
    """An instant as the tenant's clock read it: a month of a tenant in Amsterdam runs
    from 2026-11-01 00:00 there, which UTC alone shows as 2026-10-31 23:00."""
    return instant.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M")


def _index_url(tenant_id: str) -> str:
    return url_for("web.billing.index", tenant_id=tenant_id)


@bp.get("")
def index(tenant_id: str) -> str:
    tenant = tenant_page(tenant_id)
    session = db.get_session()
    closes = overview.closed_months(session, tenant_id)
    # The running month is folded on the spot: quick for most tenants, tens of seconds
    # for a very large one, whose page offers it as a separate step instead.
    live = overview.live_overview(session, tenant_id)
    people = sum(live["activeUsers"].values())
    show_preview = people < PREVIEW_INLINE_USERS or request.args.get("preview") == "1"
    now = admin_call().now
    return render_template(
        "admin/billing/index.html", tenant=tenant, profile=load_profile(session, tenant_id),
        live=live,
        preview=preview(session, tenant, now) if show_preview else None,
        closes=closes, series=overview.history_series(closes[:24]),
        awaiting=overview.months_awaiting_close(
            session, tenant, current_app.config["SETTINGS"].billing, now, closes),
        listed=counters.live_users(session, tenant_id),
        partner=me().role == "partner")


TENANT_FORM = ("company_name", "reference_number", "customer_type", "industry", "po_number")


@bp.post("")
def save(tenant_id: str) -> Response:
    tenant_page(tenant_id)
    come_back_to(_index_url(tenant_id))
    changes: dict[str, Any] = {k: request.form.get(k, "") for k in TENANT_FORM}
    fields = FieldChecks()
    if me().role == "partner":
        changes.update(_trial_from_form(tenant_id))
        changes.update(policy=request.form.get("policy", ""),
                       non_profit=request.form.get("non_profit") == "on",
                       time_zone=request.form.get("time_zone", "").strip())
        with fields.field("prices"):
            changes["prices"] = _prices_from_form()
    with fields.field("form"):
        # The rest checked too, so one answer names every wrong field.
        actions.update_billing(admin_call(), tenant_id, changes)
    fields.raise_any()
    return done("Billing info saved. Closed months keep what they were closed with; the "
                "change applies from the next close.", _index_url(tenant_id))


def _trial_from_form(tenant_id: str) -> dict[str, str]:
    """The trial as the form gives it: a start date (if filled in) wins over the end date
    field left as it was; an end date changed too must agree with it (else refused)."""
    starts_on = request.form.get("trial_starts_on", "").strip()
    ends_on = request.form.get("trial_ends_on", "")
    if not starts_on:
        return {"trial_ends_on": ends_on}
    stored = load_profile(db.get_session(), tenant_id).trial_ends_on
    if ends_on == (stored.isoformat() if stored else ""):
        return {"trial_starts_on": starts_on}
    return {"trial_starts_on": starts_on, "trial_ends_on": ends_on}


def _prices_from_form() -> list[dict[str, str]]:
    """One text line per price: `unit, plan, price` (e.g. `Hybrid, standard, 4.50`)."""
    prices, wrong = [], []
    for number, line in enumerate(request.form.get("prices", "").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            wrong.append(str(number))
            continue
        prices.append({"unit": parts[0], "plan": parts[1], "price": parts[2]})
    if wrong:
        which = (f"Price line {wrong[0]} does" if len(wrong) == 1 else
                 f"Price lines {', '.join(wrong[:-1])} and {wrong[-1]} do")
        raise InvalidSetting(f"{which} not read unit, plan, price (e.g. Hybrid, standard, "
                             "4.50).")
    return prices


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except InvalidMonth as exc:
        raise NotFound(str(exc)) from None


@bp.get("/months/<month>")
def month(tenant_id: str, month: str) -> str:
    tenant = tenant_page(tenant_id)
    target = _month(month)
    session = db.get_session()
    versions = overview.month_versions(session, tenant_id, str(target))
    if not versions:
        raise NotFound(f"{target} is not closed for this tenant yet.")
    current = overview.pick_version(versions, request.args.get("version", ""))
    if current is None:  # an earlier version stays readable; one never made is not found
        raise NotFound(f"{target} has no version {request.args['version']!r}; it has "
                       f"{', '.join(str(v.version) for v in versions)}.")
    billable = request.args.get("billable", "")
    if billable not in ("", "true", "false"):  # never "everyone" for a filter not understood
        raise InvalidSetting(f"billable must be true, false or empty; got {billable!r}.")
    search = request.args.get("q", "")[:200]
    if not storable_text(search):
        raise InvalidSetting("The search text contains a character that cannot be searched.")
    lines = overview.lines_page(session, current.id, page_number(), LINES_PER_PAGE,
                                None if not billable else billable == "true", search)
    return render_template(
        "admin/billing/month.html", tenant=tenant, close=current, versions=versions,
        lines=lines, adjustments=overview.adjustments_of(session, current.id),
        billable=billable, q=request.args.get("q", ""), partner=me().role == "partner",
        standing_version=versions[-1])


@bp.post("/months/<month>/reissue")
def reissue(tenant_id: str, month: str) -> Response:
    me().require_partner()
    tenant_page(tenant_id)
    target = _month(month)
    url = url_for("web.billing.month", tenant_id=tenant_id, month=str(target))
    come_back_to(url)
    try:
        outcome = actions.close_month(admin_call(), current_app.extensions["write_sessionmaker"],
                                      current_app.config["SETTINGS"].billing, tenant_id, target,
                                      reissue_reason=request.form.get("reason", ""))
    except NotDue as exc:
        flash(str(exc), "error")
        return redirect(url, 303)
    return done(f"{target} reissued as version {outcome.close.version}; version "
                f"{outcome.close.version - 1} stays readable below.", url)
