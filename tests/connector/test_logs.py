"""Logs are JSON lines and never carry a token, whatever a client sends."""

from __future__ import annotations

import dataclasses
import io
import json
import logging

from sqlalchemy import Engine

from connector.app import create_app
from connector.config import Settings
from connector.logs import JsonFormatter, PlainFormatter, redact
from tests.scim.factories import user
from tests.support.clients import SCIM, ScimClient, make_tenant


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
    loud = dataclasses.replace(settings, logging=dataclasses.replace(settings.logging,
                                                                     access_log=True))
    client = create_app(loud, engine=engine).test_client()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PlainFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        client.get("/scim/v2/Users/x%0D%0AINFO    connector.access: request method=GET")
        logging.getLogger("connector.test").info("a\nWARNING fake: \x1b[2Jline")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("INFO    connector.access: request method=GET path=/scim/v2/")
    assert "x\\r\\nINFO" in lines[0]
    assert lines[1] == "INFO    connector.test: a\\nWARNING fake: \\x1b[2Jline"


def test_requests_leave_no_token_in_the_logs(settings: Settings, engine: Engine) -> None:
    loud = dataclasses.replace(settings, logging=dataclasses.replace(settings.logging,
                                                                     access_log=True))
    client = create_app(loud, engine=engine).test_client()
    scim = ScimClient(client, make_tenant(engine)[1], "")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    wrong = "scim_" + "w" * 43
    try:
        scim.post("/Users", user("log@example.com"))
        scim.get(f"/Users?filter=userName eq \"{scim.token}\"")
        scim.get(f"/Users?token={scim.token}")
        client.get(f"{SCIM}/Users", headers={"Authorization": f"Bearer {wrong}"})
        client.get(f"{SCIM}/Users/{scim.token}", headers={"Authorization": f"Bearer {scim.token}"})
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert lines, "the requests were not logged at all"
    for line in lines:
        json.loads(line)
        assert scim.token not in line and scim.token.removeprefix("scim_") not in line
        assert wrong.removeprefix("scim_") not in line
