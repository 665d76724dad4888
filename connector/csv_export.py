"""CSV for downloads: rows of cells as streamed text, with spreadsheet formulas defused.

One writer for every CSV the connector hands out (the admin API's users export, billing's
reports): a cell is `str`, `int`, `bool`, `Decimal` or None; text that a spreadsheet
would run as a formula gets the apostrophe OWASP recommends ("CSV injection").
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from urllib.parse import quote

from connector.browse import ExportRow

CSV_MIMETYPE = "text/csv; charset=utf-8"
FLUSH_ROWS = 500  # rows per streamed chunk: one write per row would be slow

Cell = str | int | bool | Decimal | None
Row = Sequence[Cell]


class Heading(tuple[str, ...]):
    """A row of column names (a plain row in CSV; billing's XLSX shows it bold)."""


# The users export (seed 004): the admin API's users.csv and billing's users report.
USER_COLUMNS = Heading(("first name", "last name", "e-mail", "username", "status", "modules",
                        "guest", "admin"))


def user_rows(users: Iterable[ExportRow]) -> Iterator[Row]:
    """The users export's rows, its heading first."""
    yield USER_COLUMNS
    for u in users:
        yield (u.given_name, u.family_name, u.email, u.user_name,
               "active" if u.active else "inactive", ";".join(u.modules), u.guest, u.admin)


def csv_chunks(rows: Iterable[Row]) -> Iterator[str]:
    """The rows as CSV text, a few hundred rows per chunk (for a streamed response)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for index, row in enumerate(rows, 1):
        writer.writerow([csv_cell(value) for value in row])
        if index % FLUSH_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int):
        return str(value)
    return neutralise(value)


# What a spreadsheet may take for the start of a formula (OWASP, "CSV injection").
FORMULA_STARTS = "=+-@\t\r"


def looks_like_formula(value: str) -> bool:
    return bool(value) and value[0] in FORMULA_STARTS


def neutralise(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection): a cell starting with = + - @ or
    a control character is prefixed with an apostrophe, as OWASP recommends."""
    if not value:
        return ""
    return "'" + value if looks_like_formula(value) else value


def file_name(kind: str, tenant_name: str, stamp: str | dt.datetime = "") -> str:
    """`kind-tenant-name-stamp` (no extension; the tenant's name may keep letters outside
    ASCII: send it with `attachment`); a datetime stamp is written to the minute."""
    if isinstance(stamp, dt.datetime):
        stamp = stamp.strftime("%Y%m%d-%H%M")
    slug = "".join(c if c.isalnum() else "-" for c in tenant_name.lower()).strip("-")[:40]
    return "-".join(part for part in (kind, slug or "tenant", stamp) if part)


def attachment(download_name: str) -> str:
    """The Content-Disposition value of a download named `download_name`, as
    flask.send_file writes it (RFC 6266): the name itself when it is ASCII, else an ASCII
    spelling (accents dropped) as `filename` and the UTF-8 one as `filename*`. A header
    value outside Latin-1 is refused by the WSGI server, a 500 for a tenant named
    "Dvořák" (gunicorn) or "東京" (every server)."""
    if download_name.isascii():
        return f'attachment; filename="{download_name}"'
    simple = unicodedata.normalize("NFKD", download_name).encode("ascii", "ignore").decode()
    return (f'attachment; filename="{simple}"; '
            f"filename*=UTF-8''{quote(download_name, safe='!#$&+-.^_`|~')}")
