"""A forward proxy on loopback that tunnels HTTPS with CONNECT (RFC 9110 §9.3.6).

What a site's outbound proxy does for the connector: `CONNECT host:port HTTP/1.1`, a
`200 Connection established`, then bytes copied both ways until either side closes. It
records every CONNECT target (`connects`), and refuses other methods with 405 and
targets it cannot reach with 502, as real proxies do. TLS stays end to end: the proxy
sees no plaintext.
"""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading
from types import TracebackType
from typing import Self

from tests.fakes.tls import LOOPBACK


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(65537).decode("latin-1").strip()
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass  # headers: nothing in them matters here
        method, _, rest = line.partition(" ")
        target = rest.rpartition(" ")[0]
        if method != "CONNECT":
            self._answer(405, "Method Not Allowed")
            return
        host, _, port = target.rpartition(":")
        with self.server.lock:
            self.server.connects.append(target)
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except (OSError, ValueError):
            self._answer(502, "Bad Gateway")
            return
        with upstream:
            self._answer(200, "Connection established")
            self._pipe(self.connection, upstream)

    def _answer(self, status: int, reason: str) -> None:
        self.wfile.write(f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n\r\n".encode())
        self.wfile.flush()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        sockets = [client, upstream]
        while not self.server.stopping.is_set():
            readable, _, _ = select.select(sockets, [], [], 0.2)
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                (upstream if sock is client else client).sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = True  # server_close() waits for the tunnels (they end on stop)

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.connects: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()


class ConnectProxy:
    """`with ConnectProxy() as proxy:` serves on `proxy.url` until the block ends."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-proxy")

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    @property
    def connects(self) -> list[str]:
        with self._server.lock:
            return list(self._server.connects)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        with contextlib.suppress(OSError):
            self._server.server_close()
        self._thread.join(timeout=10)
