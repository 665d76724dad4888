"""gunicorn's response with its headers and first body bytes in one send
(connector.workers.OneSendResponse): the same bytes on the wire as gunicorn's own, in
fewer sends."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from connector import workers


class RecordingSocket:
    def __init__(self) -> None:
        self.sends: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))


def request(method: str = "GET", version: tuple[int, int] = (1, 1)) -> Any:
    return SimpleNamespace(method=method, version=version, should_close=lambda: False,
                           headers=[])


def answer(cls: type, status: str, headers: list[tuple[str, str]], body: list[bytes],
           method: str = "GET") -> RecordingSocket:
    sock = RecordingSocket()
    resp = cls(request(method), sock, Config())
    resp.start_response(status, headers)
    for chunk in body:
        resp.write(chunk)
    resp.close()
    return sock


def wire(sock: RecordingSocket) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", b"".join(sock.sends))


BODY = b'{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ann"}'
CASES = {
    "one body with its length": ("201 Created", [("Content-Type", "application/scim+json"),
                                                 ("Content-Length", str(len(BODY)))], [BODY]),
    "a body in two parts": ("200 OK", [("Content-Length", str(len(BODY) * 2))], [BODY, BODY]),
    "chunked": ("200 OK", [("Content-Type", "text/csv")], [b"a,b\r\n", b"1,2\r\n"]),
    "no body": ("204 No Content", [], []),
    "an empty first write": ("200 OK", [("Content-Length", str(len(BODY)))], [b"", BODY]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_bytes_as_gunicorn_in_fewer_sends(case: str) -> None:
    status, headers, body = CASES[case]
    theirs = answer(wsgi.Response, status, list(headers), body)
    ours = answer(workers.OneSendResponse, status, list(headers), body)
    assert wire(ours) == wire(theirs)
    if body:
        # gunicorn: the headers, then each part; here the headers ride with the first.
        assert len(ours.sends) == len(theirs.sends) - 1
        assert ours.sends[0].startswith(b"HTTP/1.1 ") and ours.sends[0].endswith(
            body[0] if case != "chunked" else body[0] + b"\r\n")
    else:
        assert len(ours.sends) == len(theirs.sends)


def test_a_head_answer_sends_its_headers_alone() -> None:
    headers = [("Content-Length", str(len(BODY)))]
    theirs = answer(wsgi.Response, "200 OK", list(headers), [BODY], method="HEAD")
    ours = answer(workers.OneSendResponse, "200 OK", list(headers), [BODY], method="HEAD")
    assert wire(ours) == wire(theirs) and len(ours.sends) == 1
    assert BODY not in ours.sends[0]


def test_a_failed_send_is_the_callers_error() -> None:
    class Gone(RecordingSocket):
        def sendall(self, data: bytes) -> None:
            raise BrokenPipeError

    resp = workers.OneSendResponse(request(), Gone(), Config())
    resp.start_response("200 OK", [("Content-Length", "3")])
    with pytest.raises(BrokenPipeError):
        resp.write(b"abc")


def test_workers_build_one_send_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wsgi, "Response", wsgi.Response)  # restored after the test
    workers.use_one_send_responses()
    cfg = Config()
    req = next(RequestParser(cfg, iter([b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"]),
                             ("127.0.0.1", 1)))
    resp, _ = wsgi.create(req, RecordingSocket(), ("127.0.0.1", 1), ("127.0.0.1", 8080), cfg)
    assert isinstance(resp, workers.OneSendResponse)
    for cls in (workers.ThreadWorker, workers.SyncWorker, workers.GeventWorker):
        assert issubclass(cls, workers.OneSend)
