"""A webhook receiver on loopback: a real HTTP server in a thread that records every
message it is sent and answers as the test tells it (2xx by default; 500s, Retry-After,
slow answers, redirects, a verification by standardwebhooks' own `Webhook.verify`);
over HTTPS when given a `LoopbackTLS` (tests/fakes/tls.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from standardwebhooks import Webhook

from tests.fakes.tls import LoopbackTLS


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The feed events the message carried (none for a ping)."""
        payload = self.payload
        if payload["type"] == "batch":
            return list(payload["data"]["events"])
        if payload["type"] == "webhook.ping":
            return []
        return [payload["data"]]


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0  # seconds before answering


class Receiver:
    """Records what arrives (only messages it answered 2xx in `accepted`). A message
    answered at once is recorded before the answer is sent; a slow answer after it is
    written (the sender may have given up by then: it is sent again)."""

    def __init__(self, tls: LoopbackTLS | None = None) -> None:
        """`tls`: serve HTTPS with its certificate (for 127.0.0.1), else plain HTTP."""
        self.tls = tls
        self.received: list[Received] = []
        self.accepted: list[Received] = []
        self.answer: Callable[[Received], Answer] = lambda _r: Answer()
        self.lock = threading.RLock()
        self.arrived = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: with Nagle on, the body waits for the
            # client's delayed ACK (40 ms a message), as no production server does.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender stopped mid-message (killed between its headers and its
                    # body): as a real server, drop the connection; it never had an answer.
                    self.close_connection = True
                    return
                got = Received({k.lower(): v for k, v in self.headers.items()}, body,
                               time.time())
                answer = receiver.answer(got)
                if answer.delay:
                    time.sleep(answer.delay)
                else:  # recorded before the answer leaves: a sender that has the answer
                    receiver.record(got, answer)  # finds the message recorded
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    return  # the sender gave up (timeout): it did not get the answer
                if answer.delay:
                    receiver.record(got, answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:  # the handshake happens at accept; a failed one is dropped
            self.server.socket = tls.server_context().wrap_socket(self.server.socket,
                                                                  server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def record(self, got: Received, answer: Answer) -> None:
        with self.arrived:
            self.received.append(got)
            if 200 <= answer.status < 300:
                self.accepted.append(got)
            self.arrived.notify_all()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_port}/hook"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def events(self) -> list[dict[str, Any]]:
        """Every event accepted, in arrival order (repeats included)."""
        with self.lock:
            return [e for r in self.accepted for e in r.events]

    def wait_for(self, test: Callable[[Receiver], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not test(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(left)
        return True


def verify(received: Received, secret: str) -> Any:
    """The payload, verified by the standardwebhooks package itself."""
    return Webhook(secret).verify(received.body, received.headers)
