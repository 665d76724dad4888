"""The monthly e-mail report (PRODUCT.md "Reporting"): after each close, the month's
invoice summary to the configured recipients over SMTP, with the billed users (CSV and
XLSX) and the invoice (CSV) attached. For self-hosted partners.

    close_month ── flip to closed ──> enqueue_for        (the same transaction)
    scheduler ──> send_due ──> claim a due row ──> compose ──> SMTP (connector/mail.py)
                                                   ├─ accepted ──> sent
                                                   └─ refused, unreachable ──> retry with
                                                      backoff; after max attempts: failed

A report waits in `billing_mail_outbox`, so an SMTP server that is down never holds up
or fails a close. Sending is at least once: a process that dies between the server's
250 and recording it sends that report again when its claim expires.

Errors: `MailSettingsError` (unusable settings; nothing is attempted); every SMTP, TLS
and socket error of a send (`smtplib.SMTPException`, `OSError`) is a failed attempt.
The password is never logged nor put in an error.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from billing import exports
from connector import logs
from connector import mail as smtp_mail
from connector.config import BillingSettings
from connector.mail import MailSettingsError
from connector.models import BillingClose, BillingMailOutbox, Tenant

log = logging.getLogger("connector.billing.mail")

__all__ = ["MailSettingsError", "backoff", "check_settings", "deliver", "enabled",
           "enqueue_for", "send_due"]
BATCH = 20
XLSX_SUBTYPE = exports.XLSX_MIMETYPE.split("/", 1)[1]


def enabled(settings: BillingSettings) -> bool:
    return bool(settings.mail_host.strip() and recipients(settings))


def recipients(settings: BillingSettings) -> list[str]:
    return [a.strip() for a in settings.mail_recipients.split(",") if a.strip()]


def check_settings(settings: BillingSettings) -> None:
    smtp_mail.check_settings(settings)


# -- the outbox -------------------------------------------------------------------------


def enqueue_for(session: Session, settings: BillingSettings, close_id: int,
                now: dt.datetime) -> None:
    """Queue the e-mail report of a close, in the caller's transaction (the close's
    flip): nothing when no e-mail report is configured."""
    if not enabled(settings):
        return
    close = session.get(BillingClose, close_id)
    assert close is not None
    session.add(BillingMailOutbox(close_id=close_id, tenant_id=close.tenant_id,
                                  month=close.month, state="pending", created_at=now,
                                  next_attempt_at=now, attempts=0))


@dataclass
class SendResult:
    sent: list[int] = field(default_factory=list)  # close ids
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def send_due(maker: sessionmaker[Session], settings: BillingSettings, now: dt.datetime
             ) -> SendResult:
    """Send every report that is due (new, or whose retry time has come), oldest first.
    Safe in several processes at once: each report is claimed before it is sent."""
    result = SendResult()
    if not enabled(settings):
        return result
    check_settings(settings)
    while True:
        with maker() as s:
            due = s.execute(select(BillingMailOutbox.id, BillingMailOutbox.attempts)
                            .where(BillingMailOutbox.state == "pending",
                                   BillingMailOutbox.next_attempt_at <= now)
                            .order_by(BillingMailOutbox.next_attempt_at, BillingMailOutbox.id)
                            .limit(BATCH)).all()
        claimed = [row_id for row_id, attempts in due
                   if smtp_mail.claim(maker, BillingMailOutbox, row_id, attempts, now)]
        for row_id in claimed:
            _send_one(maker, settings, row_id, now, result)
        if len(due) < BATCH:
            return result


def _send_one(maker: sessionmaker[Session], settings: BillingSettings, row_id: int,
              now: dt.datetime, result: SendResult) -> None:
    with maker() as s:
        row = s.get(BillingMailOutbox, row_id)
        assert row is not None
        close = s.get(BillingClose, row.close_id)
        assert close is not None
        to = recipients(settings)
        try:
            with compose(s, settings, close, to, now) as message:
                refused = deliver(settings, message)
        except (smtplib.SMTPException, OSError) as exc:
            _failed(row, settings, now, smtp_mail.describe(exc), result)
        else:
            row.state, row.sent_at, row.next_attempt_at = "sent", now, now
            row.sent_to = ", ".join(a for a in to if a not in refused)
            row.last_error = (f"refused recipients: {', '.join(sorted(refused))}"
                              if refused else None)
            result.sent.append(row.close_id)
            logs.log(log, logging.INFO, "billing report sent", tenant=row.tenant_id,
                     month=row.month, version=close.version, recipients=len(to),
                     refused=len(refused))
        s.commit()


def _failed(row: BillingMailOutbox, settings: BillingSettings, now: dt.datetime,
            error: str, result: SendResult) -> None:
    row.last_error = error
    if row.attempts >= settings.mail_max_attempts:
        row.state = "failed"
        result.failed.append(row.close_id)
        logs.log(log, logging.ERROR, "billing report given up", tenant=row.tenant_id,
                 month=row.month, attempts=row.attempts, error=error)
        return
    row.next_attempt_at = now + backoff(settings, row.attempts)
    result.retrying.append(row.close_id)
    logs.log(log, logging.WARNING, "billing report not sent, will retry",
             tenant=row.tenant_id, month=row.month, attempts=row.attempts, error=error,
             retry_at=row.next_attempt_at.isoformat())


def backoff(settings: BillingSettings, attempts: int) -> dt.timedelta:
    """The wait after the `attempts`-th failure: retry_minutes, doubled each time."""
    return smtp_mail.backoff(settings.mail_retry_minutes, attempts)


# -- the message ------------------------------------------------------------------------


@contextmanager
def compose(session: Session, settings: BillingSettings, close: BillingClose,
            to: list[str], now: dt.datetime) -> Iterator[EmailMessage]:
    """The report of one close: a text summary and the exports attached. The exports
    are written to temporary files first, removed when the block ends."""
    tenant = session.get(Tenant, close.tenant_id)
    assert tenant is not None
    message = EmailMessage()
    company = (close.inputs or {}).get("billingInfo", {}).get("companyName") or tenant.name
    reissued = f" (version {close.version}, reissued)" if close.version > 1 else ""
    message["Subject"] = (f"Billing {close.month} for {company}: USD "
                          f"{close.invoice.get('total', '0.00')}{reissued}")
    message["From"] = settings.mail_from
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("billing", domain=smtp_mail.domain_of(settings.mail_from))
    with ExitStack() as stack:
        # Each report's rows are read once: one report per file.
        billed_csv = exports.billed_users_report(session, close)
        files = [(billed_csv.name + ".csv", "text", "csv",
                  stack.enter_context(_spooled_csv(billed_csv))),
                 (billed_csv.name + ".xlsx", "application", XLSX_SUBTYPE,
                  stack.enter_context(exports.xlsx_file(
                      exports.billed_users_report(session, close))))]
        left_out = sum(_size(f) for *_, f in files) > settings.mail_attachment_max_bytes
        if left_out:
            files = []
        invoice = exports.invoice_report(session, close)
        files.append((invoice.name + ".csv", "text", "csv",
                      stack.enter_context(_spooled_csv(invoice))))
        message.set_content(summary(tenant, close, left_out))
        for name, maintype, subtype, handle in files:
            message.add_attachment(handle.read(), maintype=maintype, subtype=subtype,
                                   filename=name)
        yield message


@contextmanager
def _spooled_csv(report: exports.Report) -> Iterator[IO[bytes]]:
    with tempfile.SpooledTemporaryFile(max_size=1_000_000) as out:
        for chunk in exports.csv_chunks(report):
            out.write(chunk.encode("utf-8"))
        out.seek(0)
        yield out


def _size(handle: IO[bytes]) -> int:
    here = handle.tell()
    size = handle.seek(0, 2)
    handle.seek(here)
    return size


def summary(tenant: Tenant, close: BillingClose, left_out: bool = False) -> str:
    """The body: what the month's invoice says, in plain text."""
    invoice, info = close.invoice or {}, (close.inputs or {}).get("billingInfo", {})
    out = [f"The month {close.month} is closed for {tenant.name} ({close.tenant_id}).", ""]
    if close.version > 1:
        out += [f"This is version {close.version}, a reissue: {close.reason or ''}", ""]
    for label, value in (("Company", info.get("companyName")),
                         ("Reference number", info.get("referenceNumber")),
                         ("Customer type", info.get("customerType")),
                         ("Industry", info.get("industry")),
                         ("PO number", invoice.get("poNumber"))):
        if value:
            out.append(f"{label}: {value}")
    out += [f"Users counted: {close.users_counted:,}, billable: {close.users_billable:,}", ""]
    for line in invoice.get("lines", []) + invoice.get("adjustments", []):
        month = f" (correcting {line['month']})" if line.get("month") else ""
        out.append(f"  {line['description']}{month}: {line['quantity']} x "
                   f"{line['unitPrice']} = {line['amount']}")
    out += ["", f"Subtotal: USD {invoice.get('subtotal', '0.00')}",
            f"Adjustments: USD {invoice.get('adjustmentsTotal', '0.00')}",
            f"Total: USD {invoice.get('total', '0.00')} (tax excluded)"]
    if invoice.get("invoicePaymentEligible"):
        out.append("Over USD 5,000: this month may be paid by invoice instead of by card.")
    for note in (close.report or {}).get("notes", []):
        out.append(f"Note: {note}")
    out += ["", f"Snapshot hash: {close.content_hash}"]
    if left_out:
        out += ["", "The billed users were too large to attach: download them from the "
                "connector's billing pages."]
    return "\n".join(out) + "\n"


# -- SMTP -------------------------------------------------------------------------------


def deliver(settings: BillingSettings, message: EmailMessage) -> dict[str, object]:
    """Send over SMTP as configured (connector/mail.py, shared with the notifications)."""
    return smtp_mail.deliver(settings, message)
