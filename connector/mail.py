"""SMTP delivery shared by every outbox that sends e-mail (billing's monthly report,
the notifications): one connection routine over the `[billing]` SMTP settings, the
retry schedule, and how a failed send is described.

Errors: `MailSettingsError` (unusable settings; nothing is attempted); every SMTP, TLS
and socket error of a send (`smtplib.SMTPException`, `OSError`) is raised to the caller,
which counts it as a failed attempt. The password is never logged nor put in an error.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from connector.config import BillingSettings

SECURITY = ("none", "starttls", "tls")
# A sender's claim on a message: long enough for the slowest send (a few timeouts).
CLAIM_LEASE = dt.timedelta(minutes=15)
MAX_BACKOFF = dt.timedelta(days=1)


def claim(maker: sessionmaker[Session], outbox: Any, row_id: int, attempts: int,
          now: dt.datetime) -> bool:
    """Take a pending message of an outbox table (`id`, `state`, `attempts`,
    `next_attempt_at`) for this sender: one UPDATE that only the process that read
    `attempts` wins, which also holds it for CLAIM_LEASE should the sender die."""
    with maker() as s:
        claimed = s.execute(
            update(outbox)
            .where(outbox.id == row_id, outbox.state == "pending", outbox.attempts == attempts)
            .values(attempts=attempts + 1, next_attempt_at=now + CLAIM_LEASE))
        s.commit()
        return claimed.rowcount == 1  # type: ignore[attr-defined]


class MailSettingsError(Exception):
    """The SMTP settings cannot be used; the message names the setting."""


def configured(settings: BillingSettings) -> bool:
    """Whether an SMTP server is set at all."""
    return bool(settings.mail_host.strip())


def check_settings(settings: BillingSettings) -> None:
    if settings.mail_security not in SECURITY:
        raise MailSettingsError(f"billing.mail_security must be one of {', '.join(SECURITY)}"
                                f", not {settings.mail_security!r}.")
    if not settings.mail_from.strip():
        raise MailSettingsError("billing.mail_from is empty: e-mail needs a From address.")
    if settings.mail_username and settings.mail_security == "none":
        raise MailSettingsError("billing.mail_username is set with mail_security = none: "
                                "the password would cross the network in clear.")


def backoff(retry_minutes: int, attempts: int) -> dt.timedelta:
    """The wait after the `attempts`-th failure: retry_minutes, doubled each time, at
    most a day."""
    wait = dt.timedelta(minutes=retry_minutes) * 2 ** min(max(attempts, 1) - 1, 16)
    return min(wait, MAX_BACKOFF)


def describe(exc: BaseException) -> str:
    """A failed send in one line, for the outbox row and the log."""
    # smtplib's errors carry the server's reply, never what the client sent.
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(
            exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"{type(exc).__name__}: {exc.smtp_code} {reply}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip(" >") or "connector.invalid"


def deliver(settings: BillingSettings, message: EmailMessage) -> dict[str, object]:
    """Send over SMTP as configured; the recipients the server refused (when it took
    the message for the others). Raises smtplib/socket errors."""
    with connect(settings) as smtp:
        refused = smtp.send_message(message)
    return dict(refused)


def connect(settings: BillingSettings) -> smtplib.SMTP:
    """An SMTP connection, upgraded and authenticated as the settings say."""
    context = ssl.create_default_context(cafile=settings.mail_ca_file or None)
    host, port, timeout = settings.mail_host, settings.mail_port, settings.mail_timeout_seconds
    smtp: smtplib.SMTP
    if settings.mail_security == "tls":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    try:
        if settings.mail_security == "starttls":
            smtp.starttls(context=context)  # raises SMTPNotSupportedError if refused
        if settings.mail_username:
            _login(smtp, settings.mail_username, settings.mail_password)
    except BaseException:
        smtp.close()
        raise
    return smtp


def _login(smtp: smtplib.SMTP, username: str, password: str) -> None:
    # One mechanism, PLAIN when offered (inside TLS): smtplib's `login` tries every
    # mechanism in turn after a refusal, which some servers answer by hanging up.
    smtp.ehlo_or_helo_if_needed()
    if "PLAIN" not in smtp.esmtp_features.get("auth", "").upper().split():
        smtp.login(username, password)
        return
    smtp.user, smtp.password = username, password
    smtp.auth("PLAIN", smtp.auth_plain)
