"""Slow clients hold nothing that others need.

A client may send its request slowly, by accident (a poor link) or on purpose
(slowloris: one header line every few seconds; a body a byte at a time). Two things
must not wait for it:

- **A database connection.** The SCIM endpoint checks the bearer token (a query) before
  it reads the body. Under gevent a slow body then held a pooled connection for as long
  as it trickled in, and sixteen such POSTs with a valid token took every connection of
  the pool: SCIM stopped for every tenant. `BodyFirst` reads the whole body (at most the
  body limit, plus one byte so the app can still refuse a larger one with 413) before
  the app runs, so no request touches the database until its body is in memory.
- **Time without end.** The body must arrive within `server.body_timeout_seconds`;
  otherwise the request is answered 408 in its surface's format and the connection is
  closed. The deadline is enforced by a timer that shuts the socket's reading side down
  (a blocked read then returns at once), under threads and under gevent alike (gevent's
  patched `threading.Timer` is a greenlet).

Request headers get the same treatment in the worker classes (connector/workers.py):
`server.header_timeout_seconds` to send them, or the connection is closed. Under gevent
gunicorn already bounds the header read by its keep-alive timeout.

A thread waiting for a slow body is still a thread: with the gthread worker, as many
slow clients as threads stop other requests until the deadline (4 threads, 30 s by
default). The gevent worker waits for them in greenlets, which cost nothing to others.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

TIMED_OUT = "connector.body_timed_out"  # set in the environ: the app answers 408
_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CHUNK = 65_536


class Watchdog:
    """Shut `sock`'s reading side down after `seconds`, unless cancelled first."""

    def __init__(self, sock: socket.socket | None, seconds: float) -> None:
        self.fired = False
        self._sock = sock
        self._timer: threading.Timer | None = None
        if sock is not None and seconds > 0:
            self._timer = threading.Timer(seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        _stop_reading(self._sock)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class BodyFirst:
    """WSGI middleware: the request's body, read in full within the deadline, before
    the application runs (see the module's docstring)."""

    def __init__(self, app: WSGIApplication, limit: int, timeout_s: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse
                 ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") in _WITH_BODY and _has_body(environ):
            self._buffer(environ)
        return self.app(environ, start_response)

    def _buffer(self, environ: WSGIEnvironment) -> None:
        stream: Any = environ.get("wsgi.input")
        if stream is None:
            return
        length = _content_length(environ)
        wanted = self.limit + 1 if length is None else min(length, self.limit + 1)
        watchdog = Watchdog(environ.get("gunicorn.socket"), self.timeout_s)
        parts: list[bytes] = []
        got = 0
        try:
            while got < wanted:
                part = stream.read(min(_CHUNK, wanted - got))
                if not part:
                    break
                parts.append(part)
                got += len(part)
        except (OSError, ValueError):
            # gunicorn raises on a body cut short (the watchdog, or the client gone).
            if not watchdog.fired:
                raise
        finally:
            watchdog.cancel()
        if watchdog.fired:
            environ[TIMED_OUT] = True
            parts = []
        elif got > self.limit or (length is not None and length > self.limit):
            # Refused with 413 unread: the rest is not waited for nor drained (the
            # connection closes after the answer).
            _stop_reading(environ.get("gunicorn.socket"))
        body = b"".join(parts)
        environ["wsgi.input"] = io.BytesIO(body)
        # The app sees the body as it would a Content-Length one: werkzeug then refuses
        # one over the limit with 413 (it read limit + 1 bytes of a larger one).
        environ["CONTENT_LENGTH"] = str(len(body) if length is None or watchdog.fired
                                        else length if length > self.limit else len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = True


def _stop_reading(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):  # closed meanwhile
            sock.shutdown(socket.SHUT_RD)


def _content_length(environ: WSGIEnvironment) -> int | None:
    try:
        value = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return value if value >= 0 else None


def _has_body(environ: WSGIEnvironment) -> bool:
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    return bool(_content_length(environ))
