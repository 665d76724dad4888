"""Logs are JSON lines and never carry a token, whatever a client sends."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
from collections.abc import Iterator

from flask.testing import FlaskClient
from sqlalchemy import Engine

from connector.app import create_app
from connector.config import Settings
from connector.logs import JsonFormatter, PlainFormatter, redact
from tests.scim.factories import user
from tests.support.clients import SCIM, ScimClient, make_tenant


def _logging_client(settings: Settings, engine: Engine) -> FlaskClient:
    """A test client of an app that writes its access log."""
    loud = dataclasses.replace(settings, logging=dataclasses.replace(settings.logging,
                                                                     access_log=True))
    return create_app(loud, engine=engine).test_client()


@contextlib.contextmanager
def _captured(formatter: logging.Formatter, level: int) -> Iterator[io.StringIO]:
    """What the root logger writes meanwhile, formatted by `formatter`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    before = root.level
    root.setLevel(level)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(before)


def test_redact_hides_tokens_and_secrets() -> None:
    text = "Bearer abc.def scim_XYZ123 token=t0k secret=s3c password=pw"
    out = redact(text)
    for secret in ("abc.def", "XYZ123", "t0k", "s3c", "=pw"):
        assert secret not in out


def test_redact_knows_every_secret_the_connector_issues() -> None:
    """Admin API tokens, reporting keys and webhook signing secrets were written out in
    full wherever one slipped into a message (a token pasted into an address)."""
    text = ("/api/v1/tenants/cadm_Adm1n-t0k /reporting/v1/rk_Rep0rt-k3y "
            "whsec_S1gn1ng.s3cret network_queue")
    out = redact(text)
    for secret in ("Adm1n-t0k", "Rep0rt-k3y", "S1gn1ng.s3cret"):
        assert secret not in out
    assert "network_queue" in out  # a word that merely contains a prefix stays


def test_plain_logs_keep_one_record_on_one_line(settings: Settings, engine: Engine) -> None:
    """With `logging.json = false`, a path with an encoded line break (or a userName
    with one) wrote a second line that looked like the service's own."""
    client = _logging_client(settings, engine)
    with _captured(PlainFormatter(), logging.INFO) as stream:
        client.get("/scim/v2/Users/x%0D%0AINFO    connector.access: request method=GET")
        logging.getLogger("connector.test").info("a\nWARNING fake: \x1b[2Jline")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("INFO    connector.access: request method=GET path=/scim/v2/")
    assert "x\\r\\nINFO" in lines[0]
    assert lines[1] == "INFO    connector.test: a\\nWARNING fake: \\x1b[2Jline"


def test_requests_leave_no_token_in_the_logs(settings: Settings, engine: Engine) -> None:
    client = _logging_client(settings, engine)
    scim = ScimClient(client, make_tenant(engine)[1], "")
    wrong = "scim_" + "w" * 43
    with _captured(JsonFormatter(), logging.DEBUG) as stream:
        scim.post("/Users", user("log@example.com"))
        scim.get(f"/Users?filter=userName eq \"{scim.token}\"")
        scim.get(f"/Users?token={scim.token}")
        client.get(f"{SCIM}/Users", headers={"Authorization": f"Bearer {wrong}"})
        client.get(f"{SCIM}/Users/{scim.token}", headers={"Authorization": f"Bearer {scim.token}"})
    lines = stream.getvalue().splitlines()
    assert lines, "the requests were not logged at all"
    for line in lines:
        json.loads(line)
        assert scim.token not in line and scim.token.removeprefix("scim_") not in line
        assert wrong.removeprefix("scim_") not in line
