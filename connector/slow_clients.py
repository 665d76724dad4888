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
  closed. The deadline is enforced by a watchdog that shuts the socket's reading side
  down (a blocked read then returns at once): one deadline thread per process under
  threads, a timer of the event loop under gevent (`Deadlines`, `GeventDeadlines`).

Request headers get the same treatment in the worker classes (connector/workers.py):
`server.header_timeout_seconds` to send them, or the connection is closed. Under gevent
gunicorn already bounds the header read by its keep-alive timeout.

A thread waiting for a slow body is still a thread: with the gthread worker, as many
slow clients as threads stop other requests until the deadline (4 threads, 30 s by
default). The gevent worker waits for them in greenlets, which cost nothing to others.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

TIMED_OUT = "connector.body_timed_out"  # set in the environ: the app answers 408
# Set in the environ: a chunked body read up to the limit and no further, its size unknown.
CUT_AT_LIMIT = "connector.body_cut_at_limit"
_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CHUNK = 65_536


class Watchdog:
    """Shut `sock`'s reading side down after `seconds`, unless cancelled first.

    Armed on every request (its headers on the gthread and sync workers, its body on
    every worker), so it must cost next to nothing: it is one entry in the process's
    `Deadlines` (a heap, one thread), not a thread of its own (`threading.Timer` cost
    ~160 µs per request here; bench/watchdog_bench.py).
    """

    __slots__ = ("_sock", "cancelled", "fired", "timer")

    def __init__(self, sock: socket.socket | None, seconds: float) -> None:
        self.fired = False
        self.cancelled = False
        self._sock = sock
        self.timer: Any = None  # under gevent, its event loop's timer
        if sock is not None and seconds > 0:
            (_deadlines or deadlines()).arm(self, seconds)
        else:
            self.cancelled = True

    def fire(self) -> None:
        if self.cancelled:
            return
        self.fired = True
        if self.timer is not None:
            self.timer.close()
        _stop_reading(self._sock)

    def cancel(self) -> None:
        self.cancelled = True  # the deadline thread skips it (and drops it in time)
        if self.timer is not None:
            self.timer.close()


class Deadlines:
    """Every watchdog of a process, in a heap ordered by deadline, and one daemon thread
    that fires the due ones. Arming costs a lock and a push (a few microseconds); the
    thread is woken only when the new deadline is the earliest. Cancelled watchdogs stay
    in the heap until their deadline passes, or until they are more than half of it
    (then it is rebuilt without them), so the heap holds about requests-per-second ×
    timeout entries at most.

    Created on first use in each process (see `deadlines`): after a fork, and after
    gevent's monkey patching in its worker, where the lock, the condition and the
    thread must be gevent's (a real lock held across the loop stalls every greenlet).
    """

    COMPACT_AT = 1024

    def __init__(self) -> None:
        # (deadline, sequence, watchdog): compared in C, the sequence breaks ties.
        self._heap: list[tuple[float, int, Watchdog]] = []
        self._sequence = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._run, name="connector-deadlines",
                                        daemon=True)
        self._thread.start()

    def arm(self, watchdog: Watchdog, seconds: float) -> None:
        entry = (time.monotonic() + seconds, next(self._sequence), watchdog)
        heap = self._heap
        with self._cond:
            if len(heap) >= self.COMPACT_AT and len(heap) & (self.COMPACT_AT - 1) == 0:
                self._compact()
            heapq.heappush(heap, entry)
            if heap[0] is entry:  # earlier than what the thread waits for
                self._cond.notify()

    def _compact(self) -> None:
        live = [entry for entry in self._heap if not entry[2].cancelled]
        if len(live) * 2 < len(self._heap):
            heapq.heapify(live)
            self._heap[:] = live

    def _run(self) -> None:
        heap = self._heap
        while True:
            due: list[Watchdog] = []
            with self._cond:
                while not heap:
                    self._cond.wait()
                now = time.monotonic()
                while heap and (heap[0][2].cancelled or heap[0][0] <= now):
                    watchdog = heapq.heappop(heap)[2]
                    if not watchdog.cancelled:
                        due.append(watchdog)
                if not due and heap:
                    self._cond.wait(heap[0][0] - now)
            for watchdog in due:
                watchdog.fire()


class GeventDeadlines:
    """Under gevent, a timer of the event loop per watchdog (a few microseconds to
    start and stop, no thread; the header read is bounded by gunicorn's own timeout)."""

    def __init__(self) -> None:
        from gevent import get_hub

        self._loop = get_hub().loop

    def arm(self, watchdog: Watchdog, seconds: float) -> None:
        watchdog.timer = timer = self._loop.timer(seconds)
        timer.start(watchdog.fire)


_deadlines: Deadlines | GeventDeadlines | None = None
_deadlines_lock = threading.Lock()


def deadlines() -> Deadlines | GeventDeadlines:
    """This process's deadlines, made on first use in it: a forked child makes its own
    (its parent's thread is not in it), and a gevent worker, patched by then, uses its
    event loop."""
    global _deadlines
    with _deadlines_lock:
        if _deadlines is None:
            from connector.serving import gevent_patched

            _deadlines = GeventDeadlines() if gevent_patched() else Deadlines()
        return _deadlines


def _forget_deadlines() -> None:
    global _deadlines, _deadlines_lock
    _deadlines, _deadlines_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_deadlines)


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
            environ[CUT_AT_LIMIT] = length is None  # its size is not known
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
