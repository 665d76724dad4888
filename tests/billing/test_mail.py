"""The monthly e-mail report, against a real SMTP server on loopback (aiosmtpd): queued
by the close, sent by the scheduler's pass, retried after refusals, never in the way of
the close. Plain SMTP, and STARTTLS with AUTH verified against a throwaway CA."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Iterator
from dataclasses import replace
from email.message import EmailMessage
from typing import Any

import openpyxl
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import Engine, select

from billing import mail, scheduler
from billing.calendar import Month
from billing.close import close_month
from connector.config import BillingSettings
from connector.models import BillingClose, BillingMailOutbox
from tests.billing.history import History, at
from tests.fakes.smtp import Inbox, free_port
from tests.fakes.tls import LOOPBACK, LoopbackTLS, create_loopback_tls

NOV = Month(2026, 11)
CLOSED_AT = at("2026-12-01T01:00:00")
PASSWORD = "s3cret-Pa55"
# aiosmtpd 1.4 sets its own deprecated Session.login_data on every successful AUTH.
AUTH_WARNING = "ignore:Session.login_data is deprecated:DeprecationWarning"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> LoopbackTLS:
    return create_loopback_tls(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """A plain SMTP server on loopback."""
    box = Inbox()
    controller = Controller(box, hostname=LOOPBACK, port=free_port())
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"billing"
          and auth_data.password == PASSWORD.encode())
    # handled=False: aiosmtpd answers a failure with 535 (handled=True: nothing at all).
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def tls_inbox(tls: LoopbackTLS) -> Iterator[tuple[Inbox, int]]:
    """An SMTP server that requires STARTTLS, then AUTH."""
    box = Inbox()
    controller = Controller(box, hostname=LOOPBACK, port=free_port(),
                            tls_context=tls.server_context(), require_starttls=True,
                            authenticator=authenticate, auth_required=True)
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


def settings(port: int, **kw: Any) -> BillingSettings:
    values: dict[str, Any] = {
        "mail_host": LOOPBACK, "mail_port": port, "mail_security": "none",
        "mail_from": "billing@partner.example",
        "mail_recipients": "ops@partner.example, bi@partner.example",
        "mail_retry_minutes": 10, "mail_timeout_seconds": 5, **kw}
    return BillingSettings(**values)


def tenant(engine: Engine) -> History:
    # Created in October: the scheduler's pass has two months to close, not eleven.
    h = History(engine, created="2026-10-01T00:00:00", name="Acme Corp")
    h.billing("2026-10-01T00:00:00",
              prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"}],
              company_name="Acme BV", po_number="PO-77")
    h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
    h.create("2026-10-06T10:00:00", "=cmd@x.io", guest=True, modules=("Hybrid",))
    return h


def close(h: History, s: BillingSettings) -> BillingClose:
    outcome = close_month(h.maker, h.tenant_id, NOV, s, CLOSED_AT)
    assert outcome.created and outcome.close.state == "closed"
    return outcome.close


def outbox(h: History) -> list[BillingMailOutbox]:
    with h.maker() as s:
        return list(s.scalars(select(BillingMailOutbox).order_by(BillingMailOutbox.id)))


def attachments(message: EmailMessage) -> dict[str, bytes]:
    return {part.get_filename(): part.get_content() if part.get_content_maintype() != "text"
            else part.get_content().encode() for part in message.iter_attachments()}


def test_report_sent_after_the_close_with_its_exports(engine: Engine,
                                                      inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    h, s = tenant(engine), settings(port)
    nov = close(h, s)
    [queued] = outbox(h)
    assert (queued.close_id, queued.state, queued.attempts) == (nov.id, "pending", 0)
    assert box.messages == []  # the close itself sends nothing
    result = mail.send_due(h.maker, s, CLOSED_AT)
    assert result.sent == [nov.id] and len(box.messages) == 1
    message = box.messages[0]
    assert message["Subject"] == "Billing 2026-11 for Acme BV: USD 10.00"
    assert box.recipients == [["ops@partner.example", "bi@partner.example"]]
    body = message.get_body(("plain",)).get_content()
    assert "Total: USD 10.00 (tax excluded)" in body and "PO number: PO-77" in body
    assert nov.content_hash in body
    files = attachments(message)
    assert sorted(files) == ["billed-users-acme-corp-2026-11.csv",
                             "billed-users-acme-corp-2026-11.xlsx",
                             "invoice-acme-corp-2026-11.csv"]
    billed = list(csv.reader(io.StringIO(files["billed-users-acme-corp-2026-11.csv"].decode())))
    assert sorted(r[0] for r in billed[1:]) == ["'=cmd@x.io", "a@x.io"]
    sheet = openpyxl.load_workbook(io.BytesIO(
        files["billed-users-acme-corp-2026-11.xlsx"])).active
    assert sorted(r[0].value for r in sheet.iter_rows(min_row=2)) == ["=cmd@x.io", "a@x.io"]
    invoice = dict(r[:2] for r in csv.reader(io.StringIO(
        files["invoice-acme-corp-2026-11.csv"].decode())) if len(r) >= 2)
    assert invoice["total"] == "10.00" and invoice["PO number"] == "PO-77"
    [sent] = outbox(h)
    assert (sent.state, sent.attempts, sent.sent_at) == ("sent", 1, CLOSED_AT)
    assert sent.sent_to == "ops@partner.example, bi@partner.example"
    # Sent once: later passes find nothing due.
    assert mail.send_due(h.maker, s, CLOSED_AT + dt.timedelta(days=1)).sent == []
    assert len(box.messages) == 1


@pytest.mark.filterwarnings(AUTH_WARNING)
def test_starttls_and_auth_verified_with_the_configured_ca(
        engine: Engine, tls: LoopbackTLS, tls_inbox: tuple[Inbox, int]) -> None:
    box, port = tls_inbox
    good = settings(port, mail_security="starttls", mail_ca_file=str(tls.ca_path),
                    mail_username="billing", mail_password=PASSWORD)
    h = tenant(engine)
    nov = close(h, good)
    # Without the CA the server's certificate is not trusted: nothing is sent.
    untrusted = replace(good, mail_ca_file="")
    assert mail.send_due(h.maker, untrusted, CLOSED_AT).retrying == [nov.id]
    assert "CERTIFICATE_VERIFY_FAILED" in (outbox(h)[0].last_error or "")
    later = CLOSED_AT + dt.timedelta(minutes=10)
    assert mail.send_due(h.maker, good, later).sent == [nov.id]
    assert len(box.messages) == 1 and outbox(h)[0].attempts == 2


@pytest.mark.filterwarnings(AUTH_WARNING)
def test_a_refused_login_is_retried_and_the_password_never_logged(
        engine: Engine, tls: LoopbackTLS, tls_inbox: tuple[Inbox, int],
        caplog: pytest.LogCaptureFixture) -> None:
    box, port = tls_inbox
    wrong = settings(port, mail_security="starttls", mail_ca_file=str(tls.ca_path),
                     mail_username="billing", mail_password="not-" + PASSWORD)
    h = tenant(engine)
    close(h, wrong)
    caplog.set_level(logging.DEBUG)
    result = mail.send_due(h.maker, wrong, CLOSED_AT)
    assert result.retrying and box.messages == []
    [row] = outbox(h)
    assert row.last_error is not None and row.last_error.startswith(
        "SMTPAuthenticationError: 535")
    logged = caplog.text + "".join(str(getattr(r, "fields", "")) for r in caplog.records)
    assert PASSWORD not in logged and PASSWORD not in row.last_error
    assert "not sent, will retry" in caplog.text


def test_refused_then_accepted_is_sent_once_and_the_close_stands(
        engine: Engine, inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    box.refuse = 1
    h, s = tenant(engine), settings(port)
    nov = close(h, s)
    first = mail.send_due(h.maker, s, CLOSED_AT)
    assert first.retrying == [nov.id] and box.messages == []
    [row] = outbox(h)
    assert row.last_error == "SMTPDataError: 451 4.3.0 Try again later"
    assert row.next_attempt_at == CLOSED_AT + dt.timedelta(minutes=10)
    # Not due before its retry time.
    assert mail.send_due(h.maker, s, CLOSED_AT + dt.timedelta(minutes=9)).retrying == []
    second = mail.send_due(h.maker, s, CLOSED_AT + dt.timedelta(minutes=10))
    assert second.sent == [nov.id] and len(box.messages) == 1
    with h.maker() as session:
        stored = session.get(BillingClose, nov.id)
        assert stored is not None
        assert (stored.state, stored.content_hash) == ("closed", nov.content_hash)


def test_a_server_that_is_down_never_fails_the_close(engine: Engine,
                                                     inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    down = settings(free_port())  # nothing listens there: connection refused
    h = tenant(engine)
    nov = close(h, down)
    result = mail.send_due(h.maker, down, CLOSED_AT)
    assert result.retrying == [nov.id]
    assert "ConnectionRefusedError" in (outbox(h)[0].last_error or "")
    # Backoff doubles: 10 minutes after the first failure, 20 after the second.
    mail.send_due(h.maker, down, CLOSED_AT + dt.timedelta(minutes=10))
    assert outbox(h)[0].next_attempt_at == CLOSED_AT + dt.timedelta(minutes=30)
    # The server is back (same settings but its port): sent once.
    up = replace(down, mail_port=port)
    assert mail.send_due(h.maker, up, CLOSED_AT + dt.timedelta(minutes=30)).sent == [nov.id]
    assert len(box.messages) == 1 and outbox(h)[0].attempts == 3


def test_given_up_after_max_attempts(engine: Engine) -> None:
    down = settings(free_port(), mail_max_attempts=2)
    h = tenant(engine)
    nov = close(h, down)
    mail.send_due(h.maker, down, CLOSED_AT)
    assert mail.send_due(h.maker, down, CLOSED_AT + dt.timedelta(hours=1)).failed == [nov.id]
    assert outbox(h)[0].state == "failed"
    assert mail.send_due(h.maker, down, CLOSED_AT + dt.timedelta(days=9)).failed == []


def test_nothing_queued_without_mail_settings(engine: Engine) -> None:
    h = tenant(engine)
    close(h, BillingSettings())
    assert outbox(h) == []


def test_the_scheduler_pass_closes_then_sends(engine: Engine,
                                              inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    h, s = tenant(engine), settings(port)
    scheduler.run_due(h.maker, s, clock=lambda: CLOSED_AT)
    with h.maker() as session:
        closed = session.scalars(select(BillingClose.month).where(
            BillingClose.tenant_id == h.tenant_id, BillingClose.state == "closed")).all()
    assert "2026-11" in closed
    assert len(box.messages) == len(closed) and all(r.state == "sent" for r in outbox(h))


def test_bad_settings_are_refused_before_any_attempt(engine: Engine) -> None:
    h = tenant(engine)
    bad = settings(25, mail_security="ssl")
    close(h, bad)
    with pytest.raises(mail.MailSettingsError, match="mail_security"):
        mail.send_due(h.maker, bad, CLOSED_AT)
    scheduler.send_reports(h.maker, bad, clock=lambda: CLOSED_AT)  # logged, not raised
    assert outbox(h)[0].attempts == 0
