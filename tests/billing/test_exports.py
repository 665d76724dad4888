"""Billing exports on both databases: the users list, a closed month's billed users and
its invoice, as CSV (parsed with csv) and XLSX (parsed with openpyxl)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import tracemalloc
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openpyxl
from sqlalchemy import Engine, select

from billing import exports
from billing.calendar import Month
from billing.close import close_month
from connector import browse, csv_export
from connector.commands import IndexedValue, UserFields
from connector.config import BillingSettings
from connector.models import BillingClose, User
from tests.billing.history import History
from tests.support.statements import listening

NOV, DEC = Month(2026, 11), Month(2026, 12)
FORMULA = "=HYPERLINK(\"http://evil\",\"x\")"


def person(h: History, when: str, name: str, given: str, family: str, email: str,
           **kw: Any) -> str:
    with h.directory(when) as d:
        return d.create_user(UserFields(
            user_name=name, data={"name": {"givenName": given, "familyName": family}},
            values=(IndexedValue("emails", 0, email, "work", True),), active=True,
            **kw)).id


def tenant(engine: Engine) -> History:
    h = History(engine, name="Acme Corp")
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "3000.00"},
                      {"unit": "Engage", "plan": "standard", "price": "3.2500"}],
              po_number="PO-77", company_name="Acme BV", reference_number="R-9",
              customer_type="enterprise", industry="retail")
    person(h, "2026-10-05T10:00:00", "ann@x.io", "Ann", "Lee", "ann@x.io",
           modules=("Hybrid", "Engage"))
    person(h, "2026-10-06T10:00:00", "bob@x.io", FORMULA, "-1+2", "bob@x.io", guest=True,
           modules=("Hybrid",))
    person(h, "2026-10-07T10:00:00", "cy@x.io", "Cy", "Ng", "cy@x.io", admin=True,
           modules=("Hybrid",))
    h.create("2026-10-08T10:00:00", "dee@x.io")  # no module: a line, not billable
    return h


def close(h: History, month: Month) -> BillingClose:
    return close_month(h.maker, h.tenant_id, month, BillingSettings(),
                       month.end("UTC") + dt.timedelta(hours=1)).close


def parse_csv(report: exports.Report) -> list[list[str]]:
    return list(csv.reader(io.StringIO("".join(exports.csv_chunks(report)))))


def parse_xlsx(report: exports.Report) -> Any:
    with exports.xlsx_file(report) as f:
        return openpyxl.load_workbook(f).active


def test_users_csv_is_the_admin_api_export(engine: Engine) -> None:
    h = tenant(engine)
    with h.maker() as s:
        ours = "".join(exports.csv_chunks(exports.users_report(s, h.tenant_id)))
        api = "".join(csv_export.csv_chunks(csv_export.user_rows(browse.export_users(
            s, h.tenant_id))))
    assert ours == api
    rows = list(csv.reader(io.StringIO(ours)))
    assert rows[0] == list(csv_export.USER_COLUMNS)
    assert rows[1] == ["Ann", "Lee", "ann@x.io", "ann@x.io", "active", "Engage;Hybrid",
                       "false", "false"]
    # Formulas neutralised (OWASP): an apostrophe in front.
    assert rows[2][:2] == ["'" + FORMULA, "'-1+2"] and rows[2][6] == "true"
    assert rows[3][7] == "true" and rows[4][3:6] == ["dee@x.io", "active", ""]


def test_users_xlsx(engine: Engine) -> None:
    h = tenant(engine)
    with h.maker() as s:
        report = exports.users_report(s, h.tenant_id, stamp="20261201")
        sheet = parse_xlsx(report)
    assert report.name == "users-acme-corp-20261201"
    rows = [[c.value for c in r] for r in sheet.iter_rows()]
    assert rows[0] == list(csv_export.USER_COLUMNS)
    assert all(c.font.b for c in sheet[1]) and sheet.freeze_panes == "A2"
    assert rows[1] == ["Ann", "Lee", "ann@x.io", "ann@x.io", "active", "Engage;Hybrid",
                       False, False]
    given, family = sheet["A3"], sheet["B3"]
    # Text, never a formula (and quote-prefixed, so that Excel keeps it text on edit:
    # "-1+2" too, which Excel runs once the cell is edited).
    assert (given.value, given.data_type, given.quotePrefix) == (FORMULA, "s", True)
    assert (family.value, family.data_type, family.quotePrefix) == ("-1+2", "s", True)
    assert sheet["C3"].quotePrefix is False  # an ordinary value is left as it is
    assert rows[2][6] is True and rows[3][7] is True


def test_billed_users_of_a_closed_month(engine: Engine) -> None:
    h = tenant(engine)
    nov = close(h, NOV)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    with h.maker() as s:
        s.connection()  # the session's own statements before counting starts
        with listening(engine, count):
            report = exports.billed_users_report(s, nov)
            rows = parse_csv(report)
        sheet = parse_xlsx(exports.billed_users_report(s, nov))
    assert report.name == "billed-users-acme-corp-2026-11"
    assert rows[0] == list(exports.BILLED_COLUMNS)
    by_name = {r[0]: r for r in rows[1:]}
    assert set(by_name) == {"ann@x.io", "bob@x.io", "cy@x.io", "dee@x.io"}
    ann = by_name["ann@x.io"]
    assert ann[1:4] == ["Ann", "Lee", "ann@x.io"]
    assert ann[5:] == ["true", "active_with_module", "standard", "regular", "Engage;Hybrid",
                       "Engage;Hybrid"]
    assert by_name["bob@x.io"][1] == "'" + FORMULA and by_name["bob@x.io"][8] == "guest"
    assert by_name["dee@x.io"][1:4] == ["", "", ""]  # no name or e-mail given
    assert by_name["dee@x.io"][5:7] == ["false", "no_module"]
    # Names and e-mails come with the lines, one statement per batch, not one per row.
    assert len(statements) <= 3
    xrows = [[c.value for c in r] for r in sheet.iter_rows()]
    assert xrows[0] == list(exports.BILLED_COLUMNS) and len(xrows) == 5
    assert {r[0]: r[5] for r in xrows[1:]}["ann@x.io"] is True
    assert sheet.freeze_panes == "A2" and sheet["A1"].font.b


def test_billed_users_read_in_batches(engine: Engine, monkeypatch: Any) -> None:
    h = tenant(engine)
    nov = close(h, NOV)
    monkeypatch.setattr(exports, "BATCH", 3)
    with h.maker() as s:
        rows = parse_csv(exports.billed_users_report(s, nov))
    assert len(rows) == 5 and len({r[4] for r in rows[1:]}) == 4


def test_invoice_csv_and_xlsx(engine: Engine) -> None:
    h = tenant(engine)
    ids = dict(zip(["ann@x.io", "bob@x.io", "cy@x.io", "dee@x.io"], ids_by_name(h),
                   strict=True))
    close(h, NOV)
    # Learned in December: cy left on 20 November: an adjustment line on December's invoice.
    h.late_event("2026-11-20T00:00:00", "2026-12-10T00:00:00", ids["cy@x.io"],
                 "user.status", True, False)
    dec = close(h, DEC)
    with h.maker() as s:
        report = exports.invoice_report(s, dec)
        rows = parse_csv(report)
        sheet = parse_xlsx(exports.invoice_report(s, dec))
    assert report.name == "invoice-acme-corp-2026-12"
    header = dict(r for r in rows[1:13])
    assert header == {"tenant": "Acme Corp", "tenant id": h.tenant_id,
                      "company name": "Acme BV", "reference number": "R-9",
                      "customer type": "enterprise", "industry": "retail",
                      "PO number": "PO-77", "month": "2026-12", "version": "1",
                      "closed at": dec.closed_at.isoformat(), "hash": dec.content_hash,
                      "non-profit": "false"}
    lines = [r for r in rows if r and r[0] in ("line", "adjustment")]
    assert ["line", "Engage, regular, standard plan", "", "Engage", "regular", "standard",
            "1", "3.2500", "3.25"] in lines
    adjustment = [r for r in lines if r[0] == "adjustment"]
    assert [r[2:] for r in adjustment] == [["2026-11", "Hybrid", "regular", "standard", "-1",
                                            "3000.00", "-3000.00"]]
    totals = {r[0]: r[1] for r in rows[-6:]}
    assert totals == {"subtotal": "6003.25", "adjustments total": "-3000.00",
                      "total": "3003.25", "currency": "USD", "tax": "excluded",
                      "invoice payment eligible": "true"}
    cells = {r[0].value: r for r in sheet.iter_rows() if r[0].value}
    subtotal = cells["subtotal"][1]
    assert subtotal.value == 6003.25
    assert subtotal.number_format == exports.AMOUNT_FORMAT
    assert cells["invoice payment eligible"][1].value is True
    adj = cells["adjustment"]
    assert (adj[6].value, adj[8].value, adj[8].number_format) == (-1, -3000, "#,##0.00")
    assert sheet["A1"].font.b and sheet["A15"].font.b  # the lines' heading too


def test_an_unpriced_line_is_no_price_set_in_the_invoice_export(engine: Engine) -> None:
    """The invoice page marks a line without a price "no price set"; the CSV and XLSX
    said unit price 0, which reads as free of charge."""
    h = History(engine, name="Acme Corp")
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "4.00"}])
    h.create("2026-10-05T10:00:00", "ann@x.io", modules=("Hybrid", "Engage"))
    nov = close(h, NOV)
    with h.maker() as s:
        rows = parse_csv(exports.invoice_report(s, nov))
        sheet = parse_xlsx(exports.invoice_report(s, nov))
    lines = {r[3]: r for r in rows if r and r[0] == "line"}
    assert lines["Engage"][1] == "Engage, regular, standard plan (no price set)"
    assert lines["Engage"][7:] == ["", "0.00"]
    assert lines["Hybrid"][1] == "Hybrid, regular, standard plan"
    assert lines["Hybrid"][7:] == ["4.00", "4.00"]
    engage = next(r for r in sheet.iter_rows() if r[0].value == "line" and r[3].value ==
                  "Engage")
    assert engage[7].value is None and engage[1].value.endswith("(no price set)")


def ids_by_name(h: History) -> list[str]:
    with h.maker() as s:
        return list(s.scalars(select(User.id).where(User.tenant_id == h.tenant_id)
                              .order_by(User.user_name)))


def _rows(n: int) -> Iterator[csv_export.Row]:
    yield csv_export.Heading(("name", "number", "amount"))
    for i in range(n):
        yield (f"user-{i:07d}@example.com", i, Decimal("4.50"))


def test_xlsx_memory_does_not_grow_with_rows() -> None:
    peaks = []
    for n in (300, 2400):
        tracemalloc.start()
        with exports.xlsx_file(exports.Report("Big", "big", _rows(n))) as f:
            size = f.seek(0, 2)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert size > n * 10
    # Write-only mode: rows go to a temporary file, not a list of the world.
    assert peaks[1] < peaks[0] * 1.5


def test_csv_cells() -> None:
    chunks = list(exports.csv_chunks(_rows(1200)))
    assert len(chunks) == 3  # every 500 rows, then the rest
    rows = list(csv.reader(io.StringIO("".join(chunks))))
    assert rows[1] == ["user-0000000@example.com", "0", "4.50"] and len(rows) == 1201
    assert [csv_export.csv_cell(v) for v in ("@x", "+1", "\tx", "", None, True, Decimal("-1.5"))] \
        == ["'@x", "'+1", "'\tx", "", "", "true", "-1.5"]
