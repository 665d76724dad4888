"""The admin API for billing, under /api/v1/tenants/{id}.

A blueprint nested in the admin API's (connector.api), sharing its sign-in, CSRF,
transaction and problem+json plumbing:

- `…/billing`: the billing info (GET, PUT), the live overview, the running month's
  preview, closed months with their invoice, per-user lines and adjustments, closing a
  month and (partner admins, with a reason) reissuing one;
- `…/activity`: users' sign-ins, visits, chats and notifications, for `monthly_active`;
- `…/users/{uid}/invite`, `…/claim`, `…/frontline`: what the `invited` policy and the
  frontline plan read, written through the directory service like every user change.

Each endpoint parses its input and calls one admin action (`billing.actions`), which
says who may do what: commercial terms (policy, prices, trial, non-profit, time zone)
are a partner admin's to set; a tenant admin may fill in what the invoice shows.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request, send_file, stream_with_context
from sqlalchemy import select

from billing import actions, activity, exports, overview, reporting
from billing.calendar import InvalidMonth, Month
from billing.planning import NotDue
from billing.preview import preview
from billing.profiles import load_profile, profile_json
from connector.actions.users import note_export
from connector.api.contract import request_body
from connector.csv_export import CSV_MIMETYPE, attachment
from connector.errors import NotFound
from connector.http import (
    Problem,
    admin_call,
    done,
    invalid,
    json_response,
    page_args,
    page_json,
    principal,
    session,
    tenant_for,
)
from connector.models import BillingClose, ReportingKey, User
from connector.text import storable_text

bp = Blueprint("billing", __name__, url_prefix="/tenants/<tenant_id>")
# The hosting partner's provisioning keys for the reporting API (billing.reporting).
keys_bp = Blueprint("reporting_keys", __name__, url_prefix="/reporting-keys")

TENANT_FIELDS = {"companyName": "company_name", "referenceNumber": "reference_number",
                 "customerType": "customer_type", "industry": "industry",
                 "poNumber": "po_number"}
PARTNER_FIELDS = {"policy": "policy", "prices": "prices", "trialEndsOn": "trial_ends_on",
                  "trialStartsOn": "trial_starts_on", "nonProfit": "non_profit",
                  "timeZone": "time_zone"}


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except InvalidMonth as exc:
        raise Problem(400, "Invalid Month", str(exc), "invalid-month") from None


def _settings() -> Any:
    return current_app.config["SETTINGS"].billing


@bp.get("/billing")
def get_billing(tenant_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    return json_response(profile_json(load_profile(session(), tenant_id), tenant))


@bp.put("/billing")
def put_billing(tenant_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    body = request_body()
    changes = {field: body[key] for key, field in {**TENANT_FIELDS, **PARTNER_FIELDS}.items()
               if key in body}
    profile = actions.update_billing(admin_call(), tenant_id, changes)
    return done(200, profile_json(profile, tenant))


@bp.get("/billing/overview")
def get_overview(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    return json_response(overview.live_overview(session(), tenant_id))


@bp.get("/billing/preview")
def get_preview(tenant_id: str) -> Response:
    tenant = tenant_for(tenant_id)
    return json_response(preview(session(), tenant, admin_call().now))


@bp.get("/billing/months")
def list_months(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    closes = overview.closed_months(session(), tenant_id)
    return json_response({"items": [_month_summary(c) for c in closes]})


def _month_summary(close: Any) -> dict[str, Any]:
    invoice = close.invoice or {}
    return {"month": close.month, "version": close.version, "hash": close.content_hash,
            "closedAt": close.closed_at.isoformat() if close.closed_at else None,
            "usersCounted": close.users_counted, "usersBillable": close.users_billable,
            "subtotal": invoice.get("subtotal"), "total": invoice.get("total"),
            "adjustmentsTotal": invoice.get("adjustmentsTotal")}


def _current(tenant_id: str, month: str) -> Any:
    versions = overview.month_versions(session(), tenant_id, str(_month(month)))
    if not versions:
        raise NotFound(f"{month} is not closed for this tenant (POST …/billing/months/"
                       f"{month}/close closes it once its collection window is over).")
    return versions


def _chosen(versions: Any) -> Any:
    """The version `?version=` asks for, else the standing one."""
    asked = request.args.get("version", "")
    chosen = overview.pick_version(versions, asked)
    if chosen is None:
        raise NotFound(f"{versions[-1].month} has no version {asked!r}; it has "
                       f"{', '.join(str(v.version) for v in versions)}.")
    return chosen


@bp.get("/billing/months/<month>")
def get_month(tenant_id: str, month: str) -> Response:
    tenant_for(tenant_id)
    versions = _current(tenant_id, month)
    current = _chosen(versions)
    body = {**overview.close_json(current),
            "versions": [{"version": v.version, "state": v.state, "hash": v.content_hash,
                          "closedAt": v.closed_at.isoformat() if v.closed_at else None,
                          "closedBy": v.closed_by, "reason": v.reason} for v in versions],
            "adjustments": [overview.adjustment_json(a)
                            for a in overview.adjustments_of(session(), current.id)]}
    return json_response(body)


@bp.get("/billing/months/<month>/lines")
def get_lines(tenant_id: str, month: str) -> Response:
    tenant_for(tenant_id)
    current = _chosen(_current(tenant_id, month))
    billable = request.args.get("billable", "")
    if billable not in ("", "true", "false"):
        raise invalid("billable must be true or false.")
    page, per_page = page_args()
    search = request.args.get("q", "")[:200]
    if not storable_text(search):
        raise invalid("q must be text without NUL characters.")
    return json_response(page_json(overview.lines_page(
        session(), current.id, page, per_page, None if not billable else billable == "true",
        search)))


@bp.post("/billing/months/<month>/close")
def close_now(tenant_id: str, month: str) -> Response:
    principal().require_partner()
    tenant_for(tenant_id)
    target = _month(month)
    try:
        outcome = actions.close_month(admin_call(), _maker(), _settings(), tenant_id, target)
    except NotDue as exc:
        raise Problem(409, "Not Due Yet", str(exc), "not-due") from None
    return done(201 if outcome.created else 200,
                {**overview.close_json(outcome.close), "created": outcome.created})


@bp.post("/billing/months/<month>/reissue")
def reissue(tenant_id: str, month: str) -> Response:
    principal().require_partner()
    tenant_for(tenant_id)
    target = _month(month)
    reason = request_body()["reason"]
    try:
        outcome = actions.close_month(admin_call(), _maker(), _settings(), tenant_id, target,
                                      reissue_reason=reason)
    except NotDue as exc:
        raise Problem(409, "Not Due Yet", str(exc), "not-due") from None
    return done(201, {**overview.close_json(outcome.close), "created": outcome.created})


def _maker() -> Any:
    return current_app.extensions["write_sessionmaker"]


@bp.post("/activity")
def post_activity(tenant_id: str) -> Response:
    tenant_for(tenant_id)
    body = request_body()
    now = admin_call().now
    items = activity.parse_items(body["activity"], now)
    stored = activity.record_activity(session(), tenant_id, items, now)
    return done(202, {"accepted": stored})


@bp.post("/users/<user_id>/invite")
def invite(tenant_id: str, user_id: str) -> Response:
    return done(200, _invitation(actions.invite_user(admin_call(), tenant_id, user_id)))


@bp.post("/users/<user_id>/claim")
def claim(tenant_id: str, user_id: str) -> Response:
    return done(200, _invitation(actions.claim_user(admin_call(), tenant_id, user_id)))


def _invitation(user: User) -> dict[str, Any]:
    return {"userId": user.id,
            "invitedAt": user.invited_at.isoformat() if user.invited_at else None,
            "claimedAt": user.claimed_at.isoformat() if user.claimed_at else None}


@bp.put("/users/<user_id>/frontline")
def put_frontline(tenant_id: str, user_id: str) -> Response:
    tenant_for(tenant_id)
    attributes = {k: v for k, v in request_body().items() if v is not None}
    user = actions.set_frontline(admin_call(), tenant_id, user_id, attributes)
    return done(200, {"userId": user.id, "frontline": user.frontline or {}})


@keys_bp.get("")
def list_keys() -> Response:
    principal().require_partner()
    rows = session().scalars(select(ReportingKey).order_by(ReportingKey.created_at))
    return json_response({"items": [reporting.key_json(r) for r in rows]})


@keys_bp.post("")
def create_key() -> Response:
    principal().require_partner()
    row, key = actions.create_reporting_key(admin_call(), request_body()["name"])
    return done(201, {**reporting.key_json(row), "key": key})


@keys_bp.delete("/<key_id>")
def revoke_key(key_id: str) -> Response:
    actions.revoke_reporting_key(admin_call(), key_id)
    return done(204)


# -- exports ---------------------------------------------------------------------------


def _download(report: exports.Report, fmt: str, streamed_session: Any = None) -> Response:
    """A CSV streamed in chunks (read in a session of its own, which outlives the
    request's), or an XLSX written to a temporary file first (its format needs that)."""
    if fmt == "xlsx":
        return send_file(exports.xlsx_file(report), mimetype=exports.XLSX_MIMETYPE,
                         as_attachment=True, download_name=f"{report.name}.xlsx")
    rows = exports.csv_chunks(report)

    def generate() -> Any:
        try:
            yield from rows
        finally:
            if streamed_session is not None:
                streamed_session.close()

    return Response(stream_with_context(generate()), content_type=CSV_MIMETYPE,
                    headers={"Content-Disposition": attachment(f"{report.name}.csv")})


def _export(tenant_id: str, build: Any, fmt: str, action: str, target: str | None) -> Response:
    note_export(admin_call(), tenant_id, action, target, {"format": fmt})
    session().commit()
    reader = current_app.extensions["sessionmaker"]()
    try:
        return _download(build(reader), fmt, reader if fmt == "csv" else None)
    finally:
        if fmt != "csv":
            reader.close()


@bp.get("/exports/users.xlsx")
def export_users_xlsx(tenant_id: str) -> Response:
    return _export(tenant_id, lambda s: exports.users_report(s, tenant_id), "xlsx",
                   "users.exported", None)


@bp.get("/billing/months/<month>/billed-users.csv", defaults={"fmt": "csv"})
@bp.get("/billing/months/<month>/billed-users.xlsx", defaults={"fmt": "xlsx"})
def export_billed(tenant_id: str, month: str, fmt: str) -> Response:
    tenant_for(tenant_id)
    close_id = _chosen(_current(tenant_id, month)).id
    return _export(tenant_id, lambda s: exports.billed_users_report(
        s, s.get(BillingClose, close_id)), fmt, "billing.exported", f"{month} billed users")


@bp.get("/billing/months/<month>/invoice.csv", defaults={"fmt": "csv"})
@bp.get("/billing/months/<month>/invoice.xlsx", defaults={"fmt": "xlsx"})
def export_invoice(tenant_id: str, month: str, fmt: str) -> Response:
    tenant_for(tenant_id)
    close_id = _chosen(_current(tenant_id, month)).id
    return _export(tenant_id, lambda s: exports.invoice_report(
        s, s.get(BillingClose, close_id)), fmt, "billing.exported", f"{month} invoice")
