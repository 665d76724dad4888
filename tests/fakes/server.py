"""The HTTPS plumbing the fakes share: a threaded server on 127.0.0.1 and its lifecycle.

A fake is a `LoopbackService` that turns a `Request` into a `Response` in `handle()`, with
no sockets in sight; this module does the I/O. Connections are HTTP/1.1 keep-alive (a
delta round of 5,000 pages must not pay a TLS handshake per page), every response has a
Content-Length, and `stop()` ends every connection and thread it started, so nothing is
left for a ResourceWarning.
"""

from __future__ import annotations

import contextlib
import email.message
import json
import socket
import socketserver
import sys
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.tls import LOOPBACK, LoopbackTLS


@dataclass(frozen=True)
class Request:
    """One HTTP request as a fake sees it; query names keep their case, values decoded."""

    method: str
    path: str
    query: dict[str, str]
    headers: email.message.Message
    body: bytes
    raw_target: str

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def param(self, name: str) -> str | None:
        """A query parameter by case-insensitive name (`$skipToken` == `$skiptoken`)."""
        wanted = name.lower()
        return next((v for k, v in self.query.items() if k.lower() == wanted), None)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering; a stop() cuts it short

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None,
             content_type: str = "application/json; charset=utf-8") -> Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(status, body, {"Content-Type": content_type, **(headers or {})})


class LoopbackService:
    """Start/stop of a fake's HTTPS server; subclasses implement `handle()`."""

    def __init__(self, tls: LoopbackTLS) -> None:
        self.tls = tls
        self.errors: list[Exception] = []  # fixtures assert this stays empty
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def respond(self, request: Request) -> Response:
        """`handle()`, but a bug in the fake becomes a bare 500 and an entry in `errors`."""
        try:
            return self.handle(request)
        except Exception as exc:
            traceback.print_exc()
            self.errors.append(exc)
            return Response.json(500, {"error": "the fake crashed; see `errors`"})

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The base URL: `https://127.0.0.1:{port}`, no trailing slash."""
        return f"https://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._server = _Server(self, self.tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
            name=f"{type(self).__name__}:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.stopping.set()
        server.shutdown()
        server.drop_connections()
        server.server_close()  # joins the handler threads
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    handshake_timeout = 10.0

    def __init__(self, service: LoopbackService, tls: LoopbackTLS) -> None:
        self.service = service
        self.stopping = threading.Event()
        self._context = tls.server_context()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((LOOPBACK, 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve a host name (getfqdn) we don't need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = LOOPBACK, self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, not in accept().
        request.settimeout(self.handshake_timeout)
        # Headers and body go out in separate writes; without this, Nagle's algorithm and
        # the client's delayed ACK add 40 ms to every response.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = self._context.wrap_socket(request, server_side=True)
        except OSError:
            return
        try:
            with self._connections_lock:
                self._connections.add(conn)
                stopped = self.stopping.is_set()
            if not stopped:
                _Handler(conn, client_address, self)
        finally:
            with self._connections_lock:
                self._connections.discard(conn)
            conn.close()

    def drop_connections(self) -> None:
        """Wake handler threads idling on keep-alive connections so they can be joined."""
        with self._connections_lock:
            for conn in self._connections:
                # The plain socket's shutdown: SSLSocket's would race the reader thread.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client hung up or timed out: that's the client's business
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30.0
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the fakes keep their own request logs

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        target = urlsplit(self.path)
        request = Request(self.command, target.path, dict(parse_qsl(target.query,
                          keep_blank_values=True)), self.headers, body, self.path)
        response = self.server.service.respond(request)
        if response.delay and self.server.stopping.wait(response.delay):
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)
