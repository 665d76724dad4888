"""The reporting API for the hosting partner: /reporting/v1, across all tenants.

For BI tools (Power BI, Excel, Metabase…) that poll: authenticated with a provisioning
key (`Authorization: Bearer <key>`; random, stored as a SHA-256 digest, shown once,
revocable), stable versioned URLs, JSON or CSV (`.csv`), paginated (`page`, `per_page`,
RFC 8288 `Link` headers), and the same columns whatever the month holds, an empty month
included. Each answer's `ETag` is derived from the snapshot hashes it is made of, so
`If-None-Match` answers 304 until a month is closed, reissued or adjusted.

    GET /reporting/v1/months                       months that have closed tenants
    GET /reporting/v1/months/{YYYY-MM}/tenants     one row per tenant: billing info, totals
    GET /reporting/v1/months/{YYYY-MM}/counts      one row per tenant × unit × audience × plan
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import uuid
from collections.abc import Iterable
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing import exports
from billing.calendar import InvalidMonth, Month
from connector import db, token_kinds
from connector.models import BillingClose, ReportingKey, Tenant

PREFIX = "/reporting/v1"
KEY_PREFIX = "rk_"  # every provisioning key starts so
bp = Blueprint("reporting", __name__, url_prefix=PREFIX)
MAX_PER_PAGE = 1000

TENANT_COLUMNS = ("month", "tenantId", "tenantName", "companyName", "referenceNumber",
                  "customerType", "industry", "poNumber", "policy", "timeZone", "version",
                  "closedAt", "usersCounted", "usersBillable", "currency", "subtotal",
                  "adjustmentsTotal", "total", "invoicePaymentEligible", "nonProfit", "hash")
AMOUNTS = frozenset({"subtotal", "adjustmentsTotal", "total", "unitPrice", "amount"})
COUNT_COLUMNS = ("month", "tenantId", "tenantName", "unit", "audience", "plan", "count",
                 "unitPrice", "amount", "currency")


class ReportingError(Exception):
    def __init__(self, status: int, title: str, detail: str,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers or {}


# -- keys ------------------------------------------------------------------------------


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, actor: str, now: dt.datetime
               ) -> tuple[ReportingKey, str]:
    """A new provisioning key: (its row, the key itself, shown this once)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("A key needs a name of 1 to 100 characters (who or what uses it).")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ReportingKey(id=str(uuid.uuid4()), name=name, key_hash=_digest(key), hint=key[-4:],
                       created_at=now, created_by=actor)
    session.add(row)
    return row, key


def revoke_key(session: Session, key_id: str, now: dt.datetime) -> ReportingKey | None:
    row = session.get(ReportingKey, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now
    return row


def key_json(row: ReportingKey) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "hint": f"…{row.hint}",
            "createdAt": row.created_at.isoformat(), "createdBy": row.created_by,
            "revokedAt": row.revoked_at.isoformat() if row.revoked_at else None}


def _authenticate(session: Session) -> ReportingKey:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ReportingError(401, "Provisioning key required",
                             "Send the provisioning key as 'Authorization: Bearer <key>'. A "
                             "partner admin creates one with `connector reporting create-key`.",
                             {"WWW-Authenticate": 'Bearer realm="connector reporting"'})
    row = session.scalar(select(ReportingKey).where(ReportingKey.key_hash == _digest(key.strip())))
    if row is None or row.revoked_at is not None:
        raise ReportingError(401, "Unknown provisioning key",
                             "This provisioning key is unknown or revoked; ask a partner admin "
                             "for a new one." + token_kinds.elsewhere(key.strip(), KEY_PREFIX),
                             {"WWW-Authenticate": 'Bearer realm="connector reporting", '
                                                  'error="invalid_token"'})
    return row


# -- plumbing ---------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    if "reporting" not in app.blueprints:
        app.register_blueprint(bp)
    app.extensions.setdefault("error_surfaces", []).append((PREFIX, _http_error, _unexpected))


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None
             ) -> Response:
    """A problem of type `about:blank`, whose title is the status's reason phrase (RFC 9457
    §4.2.1); `title`, when it says more ("Invalid month"), leads the detail."""
    phrase = HTTPStatus(status).phrase
    if title.casefold() != phrase.casefold():
        detail = f"{title}: {detail}"
    body = {"type": "about:blank", "title": phrase, "status": status, "detail": detail}
    if request_id := g.get("request_id"):
        body["requestId"] = request_id
    return Response(json.dumps(body), status=status, mimetype="application/problem+json",
                    headers=headers)


def _http_error(exc: Any) -> Response:
    code = exc.code or 500
    detail = {404: f"No reporting resource at {request.path}.",
              405: f"{request.method} is not allowed on {request.path}."}.get(
                  code, exc.description or exc.name)
    return _problem(code, exc.name, detail)


def _unexpected(_exc: Exception) -> Response:
    current_app.logger.exception("unexpected error in a reporting request")
    return _problem(500, "Internal Server Error", "Something went wrong on our side. The "
                    "request id helps the operator find it in the log.")


@bp.errorhandler(ReportingError)
def _reporting_error(exc: ReportingError) -> Response:
    return _problem(exc.status, exc.title, exc.detail, exc.headers)


@bp.before_request
def _gate() -> None:
    session = db.get_session(writes=False)
    row = _authenticate(session)
    g.reporting_key = row.id


def _paging() -> tuple[int, int]:
    try:
        page = int(request.args.get("page", "1"))
        per_page = int(request.args.get("per_page", "100"))
    except ValueError:
        raise ReportingError(400, "Invalid paging", "page and per_page must be whole "
                             "numbers.") from None
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise ReportingError(400, "Invalid paging", f"page must be 1 or more and per_page "
                             f"from 1 to {MAX_PER_PAGE}.")
    return page, per_page


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except InvalidMonth as exc:
        raise ReportingError(400, "Invalid month", str(exc)) from None


def _closes(session: Session, month: Month) -> list[tuple[BillingClose, Tenant]]:
    return list(session.execute(
        select(BillingClose, Tenant).join(Tenant, Tenant.id == BillingClose.tenant_id)
        .where(BillingClose.month == str(month), BillingClose.state == "closed")
        .order_by(Tenant.id)).all())


def _etag(parts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def _answer(rows: list[dict[str, Any]], columns: tuple[str, ...], as_csv: bool, total: int,
            page: int, per_page: int, etag: str, name: str) -> Response:
    headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}
    links = []
    base = request.base_url
    if page * per_page < total:
        links.append(f'<{base}?page={page + 1}&per_page={per_page}>; rel="next"')
    if page > 1:
        links.append(f'<{base}?page={page - 1}&per_page={per_page}>; rel="prev"')
    if links:
        headers["Link"] = ", ".join(links)
    headers["X-Total-Count"] = str(total)
    if request.if_none_match.contains_weak(etag):
        return Response(status=304, headers=headers)
    if as_csv:
        # Amounts are numbers in the CSV (a credit's "-5.00" is not a formula to defuse).
        text = "".join(exports.csv_chunks([columns, *(
            [Decimal(row[c]) if c in AMOUNTS and row[c] is not None else row[c]
             for c in columns] for row in rows)]))
        headers["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return Response(text, mimetype="text/csv", headers=headers)
    body = {"columns": list(columns), "items": rows, "total": total, "page": page,
            "perPage": per_page}
    return Response(json.dumps(body), mimetype="application/json", headers=headers)


# -- resources --------------------------------------------------------------------------


@bp.get("/months")
def months() -> Response:
    session = db.get_session()
    rows = session.execute(
        select(BillingClose.month, func.count(), func.max(BillingClose.closed_at))
        .where(BillingClose.state == "closed").group_by(BillingClose.month)
        .order_by(BillingClose.month.desc())).all()
    items = [{"month": m, "tenants": int(n), "lastClosedAt": last.isoformat() if last else None,
              "tenantsUrl": f"{PREFIX}/months/{m}/tenants",
              "countsUrl": f"{PREFIX}/months/{m}/counts"} for m, n, last in rows]
    etag = _etag(f"{i['month']}:{i['tenants']}:{i['lastClosedAt']}" for i in items)
    headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}
    if request.if_none_match.contains_weak(etag):
        return Response(status=304, headers=headers)
    return Response(json.dumps({"items": items}), mimetype="application/json",
                    headers=headers)


def tenant_row(close: BillingClose, tenant: Tenant) -> dict[str, Any]:
    inputs, invoice = close.inputs or {}, close.invoice or {}
    info = inputs.get("billingInfo", {})
    return {"month": close.month, "tenantId": tenant.id, "tenantName": tenant.name,
            "companyName": info.get("companyName", ""),
            "referenceNumber": info.get("referenceNumber", ""),
            "customerType": info.get("customerType", ""), "industry": info.get("industry", ""),
            "poNumber": inputs.get("poNumber", ""), "policy": inputs.get("policy"),
            "timeZone": inputs.get("timeZone"), "version": close.version,
            "closedAt": close.closed_at.isoformat() if close.closed_at else None,
            "usersCounted": close.users_counted, "usersBillable": close.users_billable,
            "currency": invoice.get("currency", "USD"), "subtotal": invoice.get("subtotal"),
            "adjustmentsTotal": invoice.get("adjustmentsTotal"), "total": invoice.get("total"),
            "invoicePaymentEligible": invoice.get("invoicePaymentEligible", False),
            "nonProfit": inputs.get("nonProfit", False), "hash": close.content_hash}


def _fingerprint(closes: list[tuple[BillingClose, Tenant]], *extra: Any) -> str:
    return _etag([*(f"{c.tenant_id}:{c.version}:{c.content_hash}:{t.name}" for c, t in closes),
                  *map(str, extra)])


@bp.get("/months/<month>/tenants", defaults={"fmt": "json"})
@bp.get("/months/<month>/tenants.csv", defaults={"fmt": "csv"})
def month_tenants(month: str, fmt: str) -> Response:
    target = _month(month)
    page, per_page = _paging()
    closes = _closes(db.get_session(), target)
    rows = [tenant_row(c, t) for c, t in closes[(page - 1) * per_page:page * per_page]]
    return _answer(rows, TENANT_COLUMNS, fmt == "csv", len(closes), page, per_page,
                   _fingerprint(closes, "tenants", fmt, page, per_page),
                   f"tenants-{target}")


@bp.get("/months/<month>/counts", defaults={"fmt": "json"})
@bp.get("/months/<month>/counts.csv", defaults={"fmt": "csv"})
def month_counts(month: str, fmt: str) -> Response:
    target = _month(month)
    page, per_page = _paging()
    closes = _closes(db.get_session(), target)
    every = []
    for close, tenant in closes:
        for line in (close.invoice or {}).get("lines", []):
            every.append({"month": close.month, "tenantId": tenant.id,
                          "tenantName": tenant.name, "unit": line["unit"],
                          "audience": line["audience"], "plan": line["plan"],
                          "count": line["quantity"],
                          # No price set is not a price of 0 (free): null, an empty cell.
                          "unitPrice": line["unitPrice"] if line.get("priced", True)
                          else None,
                          "amount": line["amount"], "currency": "USD"})
    rows = every[(page - 1) * per_page:page * per_page]
    return _answer(rows, COUNT_COLUMNS, fmt == "csv", len(every), page, per_page,
                   _fingerprint(closes, "counts", fmt, page, per_page), f"counts-{target}")
