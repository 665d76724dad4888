"""Hostile requests against a live `connector serve` (issue 17, items 17 and 18), for
every worker class, on SQLite and PostgreSQL: a 20-digit startIndex, a 100,000-character
userName, a value too large for an index row and URLs over 4 KB each get an answer in the
surface's error format, and the worker goes on answering on the same keep-alive
connection and on new ones, with nothing but warnings in its log."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine

from connector import limits, serving
from tests.support.clients import make_tenant
from tests.support.served import served

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"

pytestmark = pytest.mark.slow  # gunicorn servers in subprocesses
CLASS_NAMES = {"gthread": "ThreadWorker", "sync": "SyncWorker", "gevent": "GeventWorker"}


def scim_error(response: requests.Response, status: int, scim_type: str | None = None
               ) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/scim+json")
    body = response.json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status)
    if scim_type:
        assert body.get("scimType") == scim_type
    return dict(body)


@pytest.mark.parametrize("worker_class", serving.WORKER_CLASSES)
def test_hostile_requests_get_answers_and_the_worker_keeps_serving(
        database_url: str, engine: Engine, tmp_path: Path, worker_class: str) -> None:
    _tenant_id, token = make_tenant(engine, f"Hostile {worker_class}")
    with served(database_url, tmp_path, "--worker-class", worker_class,
                log_name=f"serve-{worker_class}.log") as base:
        scim = base + "/scim/v2"
        client = requests.Session()  # one keep-alive connection where the class keeps one
        client.headers.update({"Authorization": f"Bearer {token}",
                               "Content-Type": "application/scim+json"})

        far = client.get(scim + "/Users", params={"startIndex": "9" * 20})
        assert far.status_code == 200 and far.json()["Resources"] == []
        huge = client.post(scim + "/Users", json={"schemas": [USER], "userName": "a" * 100_000})
        assert "'userName'" in scim_error(huge, 400, "invalidValue")["detail"]
        # 2,048 characters of 3 bytes each: over an index row's size on PostgreSQL.
        wide = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(limits.URL))
        mail = client.post(scim + "/Users", json={"schemas": [USER], "userName": "w@x.io",
                                                  "emails": [{"value": wide}]})
        assert "'emails.value'" in scim_error(mail, 400, "invalidValue")["detail"]

        # URLs over 4 KB: the SCIM error JSON, pointing long filters to POST /.search.
        # (1,000 'é' are 6,000 bytes in a URL, and a filter the search takes.)
        long_filter = f'userName eq "{"é" * 1000}"'
        too_long = client.get(scim + "/Users", params={"filter": long_filter})
        assert ".search" in scim_error(too_long, 414)["detail"]
        scim_error(client.get(scim + "/Groups/" + "g" * 8000), 414)
        problem = client.get(base + "/api/v1/tenants/" + "t" * 6000)
        assert problem.status_code == 414
        assert problem.headers["Content-Type"] == "application/problem+json"
        # Over gunicorn's own limit (8,190 bytes): refused before the app, in JSON too.
        beyond = requests.get(scim + "/Users?filter=" + "x" * 20_000, timeout=10)
        assert "POST /Users/.search" in scim_error(beyond, 414)["detail"]
        searched = client.post(scim + "/Users/.search", json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": long_filter})
        assert searched.status_code == 200 and searched.json()["totalResults"] == 0

        # The last request, on the same connection and on a new one.
        for answer in (client.get(scim + "/Users", params={"count": "-1"}),
                       requests.get(scim + "/Users?count=-1", timeout=10,
                                    headers={"Authorization": f"Bearer {token}"})):
            assert answer.status_code == 200, answer.text[:500]
            assert answer.json()["itemsPerPage"] == 0
        made = client.post(scim + "/Users", json={"schemas": [USER], "userName": "ok@x.io"})
        assert made.status_code == 201, made.text[:500]
    log = (tmp_path / f"serve-{worker_class}.log").read_text()
    assert "Traceback" not in log and "WORKER TIMEOUT" not in log
    started = int(re.search(r"with (\d+) \w+ worker\(s\)", log).group(1))  # type: ignore[union-attr]
    assert log.count("Booting worker") == started  # no worker died and was replaced
    assert f"Using worker: connector.workers.{CLASS_NAMES[worker_class]}" in log
