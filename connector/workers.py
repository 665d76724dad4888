"""gunicorn's worker classes as `connector serve` runs them: the same, except that a
request line over gunicorn's own limit is answered in JSON.

The application answers a URL over 4 KB itself, in the format of the surface it names
(connector/serving.py, MAX_URL_BYTES), and `connector serve` raises gunicorn's limit to
8,190 bytes, the largest it keeps bounded, so that such URLs reach it. A longer request
line never reaches the application: gunicorn refuses it while parsing, where its default
answer is an HTML page a SCIM client cannot read. Here it is a SCIM Error (414), since the
line was not read far enough to know which surface it was for; nothing else changes.

The gthread and sync workers also bound the time a client may take to send its request
headers (`server.header_timeout_seconds`, connector/slow_clients.py): a slowloris
client is cut off instead of holding a thread for as long as it trickles.

The gevent worker quits once when Ctrl-C stops the server (`QuitOnce`), without a
traceback.

`GeventWorker` is imported on first use only (PEP 562): importing gevent's worker in a
process that is not going to be patched would be wasted, and the gthread and sync
workers never need it.
"""

from __future__ import annotations

import json
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.errors import LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker as _ThreadWorker
from gunicorn.workers.sync import SyncWorker as _SyncWorker

from connector import slow_clients

SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
CLASSES = {"gthread": "connector.workers.ThreadWorker", "sync": "connector.workers.SyncWorker",
           "gevent": "connector.workers.GeventWorker"}


def too_long_answer() -> bytes:
    body = json.dumps({
        "schemas": [SCIM_ERROR], "status": "414",
        "detail": "The URL is longer than this server reads (8,190 bytes). Send a long "
                  "filter in the body of a search (SCIM: POST /Users/.search, "
                  "/Groups/.search or /.search) instead of the query string."}).encode()
    head = (f"HTTP/1.1 414 URI Too Long\r\nConnection: close\r\n"
            f"Content-Type: application/scim+json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class JsonRefusals:
    """A request line too long for gunicorn gets a SCIM Error, not gunicorn's HTML."""

    log: Any

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if not isinstance(exc, LimitRequestLine):
            super().handle_error(req, client, addr, exc)  # type: ignore[misc]
            return
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        try:
            util.write_nonblock(client, too_long_answer())
        except Exception:  # noqa: BLE001 - the client may be gone: nothing to answer
            self.log.debug("Failed to send error message.")


class _HeadersWithBody:
    """Stands in for the client's socket while a response's first body bytes are
    written: gunicorn sends the headers, then the body; the headers are held until the
    body comes and go out with it, in one send. Anything after that passes straight
    through, and headers with no body are sent when the write ends."""

    __slots__ = ("sock", "held", "joined")

    def __init__(self, sock: Any) -> None:
        self.sock, self.held, self.joined = sock, b"", False

    def sendall(self, data: bytes) -> None:
        if self.joined:
            self.sock.sendall(data)
        elif not self.held:
            self.held = bytes(data)
        else:
            self.joined = True
            self.sock.sendall(self.held + data)
            self.held = b""

    def flush(self) -> None:
        if self.held:
            self.sock.sendall(self.held)
            self.held = b""


class OneSendResponse(wsgi.Response):
    """gunicorn's response, with its headers and first body bytes in one send instead of
    two: a SCIM or API answer is one body, and the second send (a system call, and under
    gevent a pass through its socket wrapper) cost 5-14 % of a write's CPU in the
    worker (docs/benchmarks.md, "SCIM writes: CPU per request")."""

    sock: Any

    def write(self, arg: bytes) -> None:
        if self.headers_sent:
            super().write(arg)
            return
        sock, held = self.sock, _HeadersWithBody(self.sock)
        self.sock = held
        try:
            super().write(arg)
        finally:
            self.sock = sock
            held.flush()


def use_one_send_responses() -> None:
    """Have gunicorn build OneSendResponse for every request of this process: its
    workers build responses through `gunicorn.http.wsgi.create`, which takes the module's
    `Response`. Called by each worker class when its process starts."""
    wsgi.Response = OneSendResponse


class OneSend:
    def init_process(self) -> None:
        use_one_send_responses()
        super().init_process()  # type: ignore[misc]


def _header_timeout(worker: Any) -> float:
    settings = getattr(worker.wsgi, "config", {}).get("SETTINGS")
    return float(settings.server.header_timeout_seconds) if settings is not None else 0.0


class ThreadWorker(OneSend, JsonRefusals, _ThreadWorker):
    def handle(self, conn: Any) -> Any:
        # Until handle_request starts, the thread is reading the request's headers.
        conn.connector_headers_due = slow_clients.Watchdog(conn.sock, _header_timeout(self))
        try:
            return super().handle(conn)
        finally:
            conn.connector_headers_due.cancel()

    def handle_request(self, req: Any, conn: Any) -> Any:
        conn.connector_headers_due.cancel()
        return super().handle_request(req, conn)


class SyncWorker(OneSend, JsonRefusals, _SyncWorker):
    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        self.connector_headers_due = slow_clients.Watchdog(client, _header_timeout(self))
        try:
            super().handle(listener, client, addr)
        finally:
            self.connector_headers_due.cancel()

    def handle_request(self, listener: Any, req: Any, client: Any, addr: Any) -> Any:
        self.connector_headers_due.cancel()
        return super().handle_request(listener, req, client, addr)


class QuitOnce:
    """The gevent worker quits on the first SIGINT or SIGQUIT and ignores the rest.

    Ctrl-C reaches the whole process group: the worker gets SIGINT from the terminal and
    then SIGQUIT from the master stopping it. gunicorn's gevent worker quits in a new
    greenlet for each (sys.exit there); the second ran while the interpreter was already
    shutting down, and gevent printed its SystemExit as a traceback under the server's
    last lines."""

    def handle_quit(self, sig: Any, frame: Any) -> None:
        if getattr(self, "connector_quitting", False):
            return
        self.connector_quitting = True
        super().handle_quit(sig, frame)  # type: ignore[misc]


def __getattr__(name: str) -> Any:
    if name == "GeventWorker":
        from gunicorn.workers.ggevent import GeventWorker as _GeventWorker

        worker = type("GeventWorker", (QuitOnce, OneSend, JsonRefusals, _GeventWorker),
                      {"__module__": __name__})
        globals()[name] = worker
        return worker
    raise AttributeError(name)
