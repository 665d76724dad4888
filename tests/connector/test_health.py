from __future__ import annotations

from flask.testing import FlaskClient


def test_healthz_and_readyz(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ok"}


def test_unknown_page_outside_scim_is_a_plain_404(client: FlaskClient) -> None:
    assert client.get("/nope").status_code == 404
