"""CSV and XLSX exports (PRODUCT.md "Reporting"): a tenant's users, a closed month's
billed users, a closed month's invoice.

    users_report / billed_users_report / invoice_report ──> Report (title, name, rows)
    Report ──> csv_chunks(report)            text chunks, streamed
           └─> write_xlsx(report, out)       openpyxl write-only, rows spooled to disk
               xlsx_file(report)             the same into a rewound temporary file

A report's rows are sequences of cells: `str`, `int`, `bool`, `Decimal` (an amount) or
None; a `Heading` row is shown bold. Rows are produced lazily, in keyset batches, so
memory stays flat whatever the tenant's size. Spreadsheet formulas never come out of
user data: CSV cells get the apostrophe OWASP recommends (`connector.csv_export`, the
writer of every CSV the connector hands out), XLSX cells are typed as text.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from billing import invoice as inv
from billing.lines import SEP
from connector import browse
from connector.csv_export import (
    Cell,
    Heading,
    Row,
    file_name,
    looks_like_formula,
    user_rows,
)
from connector.csv_export import csv_chunks as write_csv
from connector.models import BillingAdjustment, BillingClose, BillingLine, Tenant, User

XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
BATCH = 2000

@dataclass
class Report:
    """One export: its sheet title, a file name without extension, and its rows (the
    first is a `Heading`); `rows` is an iterator, read once."""

    title: str
    name: str
    rows: Iterable[Row]


# -- reports ----------------------------------------------------------------------------

BILLED_COLUMNS = Heading(("username", "first name", "last name", "e-mail", "user id",
                          "billable", "reason", "plan", "audience", "modules",
                          "billed units"))
INVOICE_LINE_COLUMNS = Heading(("kind", "description", "month corrected", "unit",
                                "audience", "plan", "quantity", "unit price", "amount"))


def users_report(session: Session, tenant_id: str, stamp: str = "") -> Report:
    """Every live user with the columns of the admin API's users CSV (seed 004)."""
    tenant = _tenant(session, tenant_id)
    return Report("Users", _file_name("users", tenant, stamp),
                  user_rows(browse.export_users(session, tenant_id)))


def billed_users_report(session: Session, close: BillingClose) -> Report:
    """One row per line of a close: the user's name at the month's end and the decision
    (billable, why, plan, audience, modules, billed units); first and last name and
    e-mail are the user's current ones, read with each batch of lines (one join)."""
    tenant = _tenant(session, close.tenant_id)
    return Report(f"Billed users {close.month}",
                  _file_name("billed-users", tenant, _version_stamp(close)),
                  _billed_rows(session, close))


def _billed_rows(session: Session, close: BillingClose) -> Iterator[Row]:
    yield BILLED_COLUMNS
    user = and_(User.tenant_id == close.tenant_id, User.id == BillingLine.user_id)
    columns = (BillingLine.user_id, BillingLine.user_name, BillingLine.billable,
               BillingLine.reason, BillingLine.plan, BillingLine.audience,
               BillingLine.modules, BillingLine.units,
               User.data["name"]["givenName"].as_string().label("given"),
               User.data["name"]["familyName"].as_string().label("family"),
               browse.primary_email_column().label("email"))
    after: str | None = None
    while True:
        where = [BillingLine.close_id == close.id]
        if after is not None:
            where.append(BillingLine.user_id > after)
        rows = session.execute(select(*columns).outerjoin(User, user).where(*where)
                               .order_by(BillingLine.user_id).limit(BATCH)).all()
        if not rows:
            return
        for r in rows:
            yield (r.user_name, r.given, r.family, r.email, r.user_id, r.billable, r.reason,
                   r.plan, r.audience, _listed(r.modules), _listed(r.units))
        after = rows[-1].user_id


NO_PRICE = "no price set"


def invoice_report(session: Session, close: BillingClose) -> Report:
    """A close's invoice as it was issued: the billing info frozen into the close, the
    month's lines, the adjustment lines, the totals (USD, tax excluded)."""
    tenant = _tenant(session, close.tenant_id)
    return Report(f"Invoice {close.month}",
                  _file_name("invoice", tenant, _version_stamp(close)),
                  invoice_rows(tenant.name, close))


def invoice_rows(tenant_name: str, close: BillingClose) -> Iterator[Row]:
    invoice = close.invoice or {}
    info = (close.inputs or {}).get("billingInfo", {})
    yield Heading(("field", "value"))
    yield from (
        ("tenant", tenant_name), ("tenant id", close.tenant_id),
        ("company name", info.get("companyName", "")),
        ("reference number", info.get("referenceNumber", "")),
        ("customer type", info.get("customerType", "")),
        ("industry", info.get("industry", "")),
        ("PO number", invoice.get("poNumber") or ""), ("month", close.month),
        ("version", close.version),
        ("closed at", close.closed_at.isoformat() if close.closed_at else ""),
        ("hash", close.content_hash or ""),
        ("non-profit", bool(invoice.get("nonProfit", False))))
    yield ()
    yield INVOICE_LINE_COLUMNS
    for kind, key in (("line", "lines"), ("adjustment", "adjustments")):
        for line in invoice.get(key, []):
            # A unit without a price is "no price set", as on the invoice page: never a
            # price of 0 that reads as free (it may be priced and billed later).
            priced = line.get("priced", True)
            yield (kind, line["description"] + ("" if priced else f" ({NO_PRICE})"),
                   line.get("month"), line["unit"], line["audience"], line["plan"],
                   int(line["quantity"]), Decimal(line["unitPrice"]) if priced else None,
                   Decimal(line["amount"]))
    yield ()
    yield from (
        ("subtotal", _amount(invoice.get("subtotal"))),
        ("adjustments total", _amount(invoice.get("adjustmentsTotal"))),
        ("total", _amount(invoice.get("total"))),
        ("currency", invoice.get("currency", inv.CURRENCY)),
        ("tax", "included" if invoice.get("taxIncluded") else "excluded"),
        ("invoice payment eligible", bool(invoice.get("invoicePaymentEligible", False))))


def adjustment_rows(session: Session, close: BillingClose) -> Iterator[Row]:
    """The per-user adjustment lines a close issued (what the invoice's adjustment lines
    add up), for whoever wants them next to the invoice."""
    yield Heading(("month corrected", "username", "user id", "sign", "units", "audience",
                   "plan", "reason", "amount"))
    for a in session.scalars(select(BillingAdjustment).where(
            BillingAdjustment.close_id == close.id).order_by(BillingAdjustment.id)):
        yield (a.month, a.user_name, a.user_id, a.sign, _listed(a.units), a.audience,
               a.plan, a.reason, Decimal(a.amount))


def _tenant(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"No tenant {tenant_id}.")
    return tenant


def _file_name(kind: str, tenant: Tenant, stamp: str) -> str:
    return file_name(kind, tenant.name, stamp)


def _version_stamp(close: BillingClose) -> str:
    return close.month + (f"-v{close.version}" if close.version > 1 else "")


def _listed(joined: str) -> str:
    return ";".join(part for part in joined.split(SEP) if part)


def _amount(text: Any) -> Decimal:
    return Decimal(str(text)) if text not in (None, "") else Decimal("0.00")


# -- CSV --------------------------------------------------------------------------------


def csv_chunks(report: Report | Iterable[Row]) -> Iterator[str]:
    """The report's rows as CSV text chunks (`connector.csv_export`)."""
    return write_csv(report.rows if isinstance(report, Report) else report)


# -- XLSX -------------------------------------------------------------------------------

BOLD = Font(bold=True)
AMOUNT_FORMAT = "#,##0.00"
PRICE_FORMAT = "#,##0.00##"  # unit prices may have up to 4 decimals


def write_xlsx(report: Report, out: IO[bytes] | str) -> None:
    """Write the report as one worksheet into `out` (a path or a binary file), in
    write-only mode: rows go to a temporary file as they come, memory stays flat."""
    book = Workbook(write_only=True)
    sheet: WriteOnlyWorksheet = book.create_sheet(_sheet_title(report.title))
    sheet.freeze_panes = "A2"
    widths_set = False
    for row in report.rows:
        if not widths_set and isinstance(row, Heading):
            for index, name in enumerate(row, 1):
                # openpyxl's stubs miss the write-only sheet's column_dimensions
                dimensions: Any = sheet.column_dimensions  # type: ignore[attr-defined]
                dimensions[get_column_letter(index)].width = max(12, len(name) + 4)
            widths_set = True
        sheet.append(_xlsx_row(sheet, row))
    book.save(out)


def xlsx_file(report: Report) -> IO[bytes]:
    """The report as XLSX in a temporary file, rewound; the caller closes it (e.g. by
    handing it to Flask's `send_file`)."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - the caller owns and closes it
    try:
        write_xlsx(report, out)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def _xlsx_row(sheet: WriteOnlyWorksheet, row: Row) -> list[Any]:
    if isinstance(row, Heading):
        cells = []
        for name in row:
            cell = WriteOnlyCell(sheet, name)
            cell.font = BOLD
            cells.append(cell)
        return cells
    return [_xlsx_cell(sheet, value) for value in row]


def _xlsx_cell(sheet: WriteOnlyWorksheet, value: Cell) -> Any:
    if isinstance(value, Decimal):
        # openpyxl writes a Decimal as a number; its stubs list float only
        cell = WriteOnlyCell(sheet, value)  # type: ignore[arg-type]
        exponent = value.as_tuple().exponent  # 'n', 'N' or 'F' for NaN and infinities
        cell.number_format = (AMOUNT_FORMAT if isinstance(exponent, int) and exponent >= -2
                              else PRICE_FORMAT)
        return cell
    if not isinstance(value, str):
        return value
    value = ILLEGAL_CHARACTERS_RE.sub("", value)  # XML cannot carry them
    if not looks_like_formula(value):
        return value
    # openpyxl takes a string starting with "=" for a formula: force text. Mark it (and
    # one starting with + - @, which Excel also runs once the cell is edited)
    # quote-prefixed, so that Excel keeps it text.
    cell = WriteOnlyCell(sheet, value)
    cell.data_type = "s"
    cell.quotePrefix = True
    return cell


def _sheet_title(title: str) -> str:
    # Excel: at most 31 characters, none of []:*?/\
    return "".join(c for c in title if c not in "[]:*?/\\")[:31] or "Sheet"
