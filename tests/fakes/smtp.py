"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives: the fake every
e-mail test sends to (billing's monthly report, the notifications)."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.fakes.tls import LOOPBACK


@dataclass
class Inbox:
    """What the loopback server received; `refuse` answers DATA with 451 that often."""

    refuse: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            self.refuse -= 1
            return "451 4.3.0 Try again later"
        self.messages.append(email.message_from_bytes(
            envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_server(box: Inbox, **options: Any) -> Iterator[int]:
    """Serve `box` on a free loopback port (yielded) until the block ends."""
    controller = Controller(box, hostname=LOOPBACK, port=free_port(), **options)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()
