"""Each fault knob of the fake Graph gives the HTTP answer its docstring promises."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.fakes.directory import Directory
from tests.fakes.entra_token import FakeTokenEndpoint
from tests.fakes.fixtures import FakeApp, GraphCaller
from tests.fakes.graph import FakeGraph, http_date

USERS_DELTA = "/v1.0/users/delta?$select=displayName,accountEnabled"


@pytest.fixture
def directory(fake_graph: FakeGraph, fake_app: FakeApp) -> Directory:
    directory = fake_graph.directory(fake_app.tenant_id)
    for i in range(5):
        directory.add_user(f"user{i}@contoso.example")
    return directory


def test_throttling_answers_429_with_retry_after_then_recovers(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    fake_graph.throttle(retry_after="0.5")
    throttled = fake_graph_caller.get(USERS_DELTA)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "0.5"
    error = throttled.json()["error"]
    assert error["code"] == "TooManyRequests"
    assert error["innerError"]["request-id"] == throttled.headers["request-id"]
    assert fake_graph_caller.get(USERS_DELTA).status_code == 200


def test_retry_after_can_be_an_http_date(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    fake_graph.throttle(retry_after=http_date(when))
    header = fake_graph_caller.get(USERS_DELTA).headers["Retry-After"]
    assert email.utils.parsedate_to_datetime(header) == when.replace(microsecond=0)


@pytest.mark.parametrize(("status", "retry_after", "code"), [
    (503, "3", "serviceNotAvailable"), (503, None, "serviceNotAvailable"),
    (504, None, "GatewayTimeout"), (500, None, "generalException")])
def test_server_errors_with_or_without_retry_after(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller,
        status: int, retry_after: str | None, code: str) -> None:
    fake_graph.fail(status, retry_after=retry_after)
    response = fake_graph_caller.get(USERS_DELTA)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert response.headers.get("Retry-After") == retry_after


def test_a_fault_can_wait_for_its_turn_and_repeat(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    fake_graph.knobs.page_size = 1
    fake_graph.fail(503, count=2, after=2, path="/v1.0/users/delta")
    first = fake_graph_caller.get(USERS_DELTA).json()
    second = fake_graph_caller.get(first["@odata.nextLink"]).json()
    statuses = [fake_graph_caller.get(second["@odata.nextLink"]).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert fake_graph.faults.pending == 0


def test_an_access_token_expires_after_n_requests(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    fake_graph.expire_token_after(2)
    statuses = [fake_graph_caller.get(USERS_DELTA).status_code for _ in range(4)]
    assert statuses == [200, 200, 401, 401]  # the token stays expired...
    fake_graph_caller.refresh_token()  # ...until the client gets a new one
    assert fake_graph_caller.get(USERS_DELTA).status_code == 200


def test_resync_invalidates_every_issued_token(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    fake_graph.knobs.page_size = 2
    first = fake_graph_caller.get(USERS_DELTA).json()
    delta_link = fake_graph_caller.walk(USERS_DELTA).delta_link
    fake_graph.resync()
    for link in (first["@odata.nextLink"], delta_link):
        gone = fake_graph_caller.get(link)
        assert gone.status_code == 410
        assert gone.json()["error"]["code"] == "syncStateNotFound"
        location = gone.headers["Location"]
        assert location.endswith("$deltatoken=")
        assert "$select=displayName,accountEnabled" in location
    restart = fake_graph_caller.walk(gone.headers["Location"])  # a fresh full round
    assert len(restart.items) == 5
    assert fake_graph_caller.get(restart.delta_link).status_code == 200


@pytest.mark.parametrize("code", ["resyncRequired", "ResyncRequired"])
def test_resync_of_one_link_with_a_400(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller,
        code: str) -> None:
    old = fake_graph_caller.walk(USERS_DELTA).delta_link
    other = fake_graph_caller.walk(USERS_DELTA).delta_link
    fake_graph.resync(400, code, link=old)
    refused = fake_graph_caller.get(old)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == code
    assert "Location" not in refused.headers
    assert fake_graph_caller.get(other).status_code == 200


def test_delta_tokens_expire_after_seven_simulated_days(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    delta_link = fake_graph_caller.walk(USERS_DELTA).delta_link
    fake_graph.clock.advance(days=6)
    fake_graph_caller.refresh_token()
    assert fake_graph_caller.get(delta_link).status_code == 200
    fake_graph.clock.advance(days=1, seconds=1)
    fake_graph_caller.refresh_token()
    expired = fake_graph_caller.get(delta_link)
    assert (expired.status_code, expired.json()["error"]["code"]) == (410, "syncStateNotFound")
    fake_graph.knobs.expired_token_status = 400
    fake_graph.knobs.expired_token_code = "resyncRequired"
    assert fake_graph_caller.get(delta_link).json()["error"]["code"] == "resyncRequired"


def test_unknown_tokens_are_a_plain_400(
        directory: Directory, fake_graph_caller: GraphCaller) -> None:
    for query in ("$skiptoken=nonsense", "$deltatoken=nonsense"):
        response = fake_graph_caller.get(f"/v1.0/users/delta?{query}")
        assert (response.status_code, response.json()["error"]["code"]) == (
            400, "Request_BadRequest")


def test_empty_pages_between_pages(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    fake_graph.knobs.page_size = 2
    fake_graph.knobs.empty_pages_between = 2
    walk = fake_graph_caller.walk(USERS_DELTA)
    assert [len(page["value"]) for page in walk.pages] == [2, 0, 0, 2, 0, 0, 1]
    assert len({item["id"] for item in walk.items}) == 5


def test_replaying_the_same_object_within_a_round(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    fake_graph.knobs.page_size = 2
    fake_graph.knobs.replay_last_object = True
    walk = fake_graph_caller.walk(USERS_DELTA)
    ids = [item["id"] for item in walk.items]
    assert len(ids) == 7 and len(set(ids)) == 5
    assert walk.pages[1]["value"][0] == walk.pages[0]["value"][-1]


def test_an_endless_next_link_loop(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    fake_graph.knobs.page_size = 2
    fake_graph.knobs.loop_next_link = True
    first = fake_graph_caller.get(USERS_DELTA).json()
    link = first["@odata.nextLink"]
    for _ in range(3):
        page = fake_graph_caller.get(link).json()
        assert page["@odata.nextLink"] == link and page["value"] == first["value"]


def test_a_next_link_to_another_host(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    fake_graph.knobs.page_size = 2
    fake_graph.knobs.next_link_host = "graph.evil.example"
    link = fake_graph_caller.get(USERS_DELTA).json()["@odata.nextLink"]
    assert urlsplit(link).netloc == "graph.evil.example"


@pytest.mark.parametrize("mode", ["truncate", "garbage", "html"])
def test_corrupt_bodies_are_200s_that_do_not_parse(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller,
        mode: str) -> None:
    fake_graph.corrupt(mode=mode)
    response = fake_graph_caller.get(USERS_DELTA)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    assert fake_graph_caller.get(USERS_DELTA).json()["value"]


def test_a_hanging_request_trips_the_client_timeout(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    fake_graph.hang(seconds=30)
    with pytest.raises(requests.exceptions.ReadTimeout):
        fake_graph_caller.get(USERS_DELTA, timeout=0.05)
    # The client gives up after 50 ms, perhaps before the fake's handler thread has read the
    # request; the next request must not overtake it and take the hang itself.
    deadline = time.monotonic() + 10
    while fake_graph.faults.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_graph.faults.pending == 0
    assert fake_graph_caller.get(USERS_DELTA).status_code == 200


def test_latency_slows_every_request(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    fake_graph.knobs.latency = 0.02
    started = time.perf_counter()
    fake_graph_caller.get(USERS_DELTA)
    assert time.perf_counter() - started >= 0.02


def test_concurrent_rounds_while_the_directory_changes(
        fake_entra: FakeTokenEndpoint, fake_graph: FakeGraph, directory: Directory,
        fake_graph_caller: GraphCaller) -> None:
    fake_graph.knobs.page_size = 3
    seen: list[int] = []

    def walk_rounds() -> None:
        with fake_graph.tls.session() as session:
            caller = GraphCaller(session, fake_graph.url, fake_graph_caller.token)
            for _ in range(5):
                seen.append(len(caller.walk(USERS_DELTA).items))

    threads = [threading.Thread(target=walk_rounds) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(50):
        directory.add_user(f"extra{i}@contoso.example")
    for thread in threads:
        thread.join()
    assert len(seen) == 20 and all(5 <= n <= 55 for n in seen)
    assert fake_graph.errors == [] and fake_entra.errors == []
