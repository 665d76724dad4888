"""The Entra sync admin API (/api/v1/tenants/{id}/entra) against the fakes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from azure_sync import lease, secrets
from connector import clock, events
from connector.app import create_app
from connector.config import Settings, load_settings
from connector.db import make_sessionmaker
from connector.models import Event, Tenant
from tests.api.contract import check_response
from tests.azure_sync.harness import request_taker
from tests.conftest import ApiClient, make_admin, make_tenant
from tests.fakes.fixtures import FakeApp
from tests.fakes.graph import FakeGraph


@pytest.fixture
def sync_app(database_url: str, engine: Engine, fake_tls: Any, tmp_path: Path
             ) -> Iterator[Flask]:
    """The app, and a worker taking its "Run now" requests (server.schedulers is
    "worker", the default)."""
    settings = sync_settings(database_url, fake_tls, tmp_path)
    with request_taker(settings, engine):
        yield create_app(settings, engine=engine)


def sync_settings(database_url: str, fake_tls: Any, tmp_path: Path, **server: Any
                  ) -> Settings:
    return load_settings(
        environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml")},
        overrides={"database": {"url": database_url}, "logging": {"access_log": False},
                   "azure_sync": {"encryption_key": secrets.new_key(),
                                  "ca_bundle": str(fake_tls.ca_path),
                                  "allow_private_hosts": True,  # the fakes' loopback
                                  "graph_scope": "https://graph.microsoft.com/.default"},
                   "server": server})


@pytest.fixture
def api(sync_app: Flask, engine: Engine) -> ApiClient:
    admin_id, token = make_admin(engine, "partner@example.com")
    return ApiClient(sync_app.test_client(), token, admin_id, "partner@example.com")


def register(api: ApiClient, tenant_id: str, app: FakeApp, **extra: Any) -> Any:
    return api.put(f"/tenants/{tenant_id}/entra", {
        "directoryId": app.tenant_id, "clientId": app.client_id,
        "clientSecret": app.client_secret, "authorityHost": app.authority_host,
        "graphBaseUrl": app.graph_base_url, **extra})


def run_and_wait(api: ApiClient, tenant_id: str, seconds: float = 20) -> dict[str, Any]:
    """POST a round (it runs in the background) and wait for its entry in the run log."""
    before = api.get(f"/tenants/{tenant_id}/entra/runs").json["items"]
    last = before[0]["id"] if before else 0
    assert api.post(f"/tenants/{tenant_id}/entra/runs").status_code == 202
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = api.get(f"/tenants/{tenant_id}/entra/runs").json["items"]
        # The run log's entry ends before the round lets go of the tenant (it still adds
        # late memberships): wait for both, as an admin who acts next would.
        if (runs and runs[0]["id"] > last and runs[0]["status"] != "running"
                and not api.get(f"/tenants/{tenant_id}/entra").json["roundRunning"]):
            return runs[0]  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("the round did not finish")


def test_register_run_and_read_the_log(api: ApiClient, engine: Engine, fake_app: FakeApp,
                                       fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Entra-fed")
    fake_graph.directory(fake_app.tenant_id).seed_users(25)
    created = register(api, tenant_id, fake_app, intervalMinutes=15)
    assert created.status_code == 200, created.json
    body = created.json
    assert body["credential"] == "secret" and body["intervalMinutes"] == 15
    assert fake_app.client_secret not in created.get_data(as_text=True)
    assert api.get(f"/tenants/{tenant_id}/entra").json["lastRun"] is None
    run = run_and_wait(api, tenant_id)
    assert run["status"] == "succeeded" and run["counts"]["created"] == 25
    assert api.get(f"/tenants/{tenant_id}/users").json["total"] == 25
    detail = api.get(f"/tenants/{tenant_id}/entra/runs/{run['id']}").json
    assert detail["staged"] == [] and detail["kind"] == "full"
    audit = [a["action"] for a in api.get(f"/tenants/{tenant_id}/audit").json["items"]]
    assert {"entra.registration", "entra.run_requested"} <= set(audit)


def test_the_registration_says_while_a_process_holds_the_round(
        api: ApiClient, engine: Engine, fake_app: FakeApp) -> None:
    tenant_id, _ = make_tenant(engine, "Leased")
    register(api, tenant_id, fake_app)
    assert api.get(f"/tenants/{tenant_id}/entra").json["roundRunning"] is False
    maker = make_sessionmaker(engine, writes=True)
    lease.ensure_state(maker, tenant_id)
    with maker() as s:
        assert lease.take_lease(s, tenant_id, "elsewhere:1", clock.now(), 60)
        s.commit()
    assert api.get(f"/tenants/{tenant_id}/entra").json["roundRunning"] is True
    with maker() as s:
        lease.release_lease(s, tenant_id, "elsewhere:1")
        s.commit()
    assert api.get(f"/tenants/{tenant_id}/entra").json["roundRunning"] is False


def test_held_round_is_approved_or_rejected(api: ApiClient, engine: Engine,
                                            fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Held")
    directory = fake_graph.directory(fake_app.tenant_id)
    ids = [directory.add_user(f"u{i}@contoso.example") for i in range(12)]
    register(api, tenant_id, fake_app, thresholdCount=3)
    run_and_wait(api, tenant_id)
    for user_id in ids[:4]:
        directory.disable_user(user_id)
    held = run_and_wait(api, tenant_id)
    assert held["status"] == "awaiting_approval"
    assert api.get(f"/tenants/{tenant_id}/entra").json["awaitingApproval"] == held["id"]
    staged = api.get(f"/tenants/{tenant_id}/entra/runs/{held['id']}").json["staged"]
    assert {s["action"] for s in staged} == {"disable"} and len(staged) == 4
    assert api.get(f"/tenants/{tenant_id}/users?status=inactive").json["total"] == 0
    approved = api.post(f"/tenants/{tenant_id}/entra/runs/{held['id']}/approve")
    assert approved.status_code == 200 and approved.json["applied"] == {"disabled": 4}
    assert api.get(f"/tenants/{tenant_id}/users?status=inactive").json["total"] == 4
    again = api.post(f"/tenants/{tenant_id}/entra/runs/{held['id']}/approve")
    assert again.status_code == 409
    for user_id in ids[4:8]:
        directory.disable_user(user_id)
    second = run_and_wait(api, tenant_id)
    rejected = api.post(f"/tenants/{tenant_id}/entra/runs/{second['id']}/reject")
    assert rejected.status_code == 200 and rejected.json["dropped"] == 4
    assert api.get(f"/tenants/{tenant_id}/users?status=inactive").json["total"] == 4
    # The event feed tells the host product each round's end, and each decision.
    feed = api.get(f"/tenants/{tenant_id}/events",
                   query_string={"type": "sync.round_held,sync.round_completed"}).json
    assert [(e["type"], e["data"]["runId"], e["data"]["outcome"], e["source"])
            for e in feed["data"]][1:] == [
        ("sync.round_held", held["id"], "held", "entra_sync"),
        ("sync.round_completed", held["id"], "approved", "admin"),
        ("sync.round_held", second["id"], "held", "entra_sync"),
        ("sync.round_completed", second["id"], "rejected", "admin")]


def test_preview_changes_nothing_and_sync_user_applies_one(
        api: ApiClient, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Preview")
    directory = fake_graph.directory(fake_app.tenant_id)
    ann = directory.add_user("ann@contoso.example")
    directory.seed_users(5)
    register(api, tenant_id, fake_app)
    preview = api.post(f"/tenants/{tenant_id}/entra/preview")
    assert preview.status_code == 200, preview.json
    assert preview.json["counts"]["created"] == 6
    assert api.get(f"/tenants/{tenant_id}/users").json["total"] == 0
    one = api.post(f"/tenants/{tenant_id}/entra/sync-user", {"user": "ann@contoso.example"})
    assert one.status_code == 200 and one.json["counts"]["created"] == 1
    directory.disable_user(ann)
    off = api.post(f"/tenants/{tenant_id}/entra/sync-user", {"user": ann})
    assert off.json["counts"].get("disabled") == 1  # applied at once, not held
    missing = api.post(f"/tenants/{tenant_id}/entra/sync-user", {"user": "nobody@x.example"})
    assert missing.status_code == 404


def test_a_preview_against_a_throttling_graph_answers_at_once_in_words(
        api: ApiClient, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    """An admin waits on a preview and on "sync this user now": Graph's Retry-After of
    five minutes is an answer at once that says so, not a request held for five minutes
    (a round would wait it out)."""
    tenant_id, _ = make_tenant(engine, "Throttled")
    fake_graph.directory(fake_app.tenant_id).seed_users(3)
    register(api, tenant_id, fake_app)
    fake_graph.fail(429, count=10, retry_after="300")
    # The first hears the Retry-After; the second finds the app's pause it left.
    for path, body, said in (
            ("preview", None, "Graph asked to wait 300 s"),
            ("sync-user", {"user": "user0@contoso.example"}, "throttled by Graph for 30")):
        answer = api.post(f"/tenants/{tenant_id}/entra/{path}", body)
        assert answer.status_code == 502, answer.json
        assert said in answer.json["detail"], answer.json
        assert "try again in a few minutes" in answer.json["detail"], answer.json
    assert fake_graph.counters["status:429"] == 1  # the second sent no request


def test_registration_is_validated_and_can_be_removed(api: ApiClient, engine: Engine,
                                                      fake_app: FakeApp,
                                                      client: FlaskClient) -> None:
    tenant_id, _ = make_tenant(engine, "Validate")
    assert api.put(f"/tenants/{tenant_id}/entra", {
        "directoryId": "d", "clientId": "c"}).status_code == 400  # no credential
    assert register(api, tenant_id, fake_app, authorityHost="http://insecure").status_code == 400
    assert register(api, tenant_id, fake_app, intervalMinutes=0).status_code == 400
    assert api.get(f"/tenants/{tenant_id}/entra").status_code == 404
    assert register(api, tenant_id, fake_app).status_code == 200
    assert api.delete(f"/tenants/{tenant_id}/entra").status_code == 204
    assert api.get(f"/tenants/{tenant_id}/entra").status_code == 404


def test_a_tenant_admin_cannot_reach_another_tenants_registration(
        sync_app: Flask, engine: Engine, api: ApiClient, fake_app: FakeApp) -> None:
    mine, _ = make_tenant(engine, "Mine")
    theirs, _ = make_tenant(engine, "Theirs")
    register(api, theirs, fake_app)
    admin_id, token = make_admin(engine, "ta@example.com", "tenant", mine)
    tenant_admin = ApiClient(sync_app.test_client(), token, admin_id, "ta@example.com")
    for call in (lambda: tenant_admin.get(f"/tenants/{theirs}/entra"),
                 lambda: tenant_admin.post(f"/tenants/{theirs}/entra/runs"),
                 lambda: tenant_admin.get(f"/tenants/{theirs}/entra/runs")):
        assert call().status_code == 404


def test_run_now_and_removal_refuse_while_a_round_is_held_or_paused(
        api: ApiClient, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Refusals")
    directory = fake_graph.directory(fake_app.tenant_id)
    ids = [directory.add_user(f"r{i}@contoso.example") for i in range(6)]
    register(api, tenant_id, fake_app, thresholdCount=1)
    run_and_wait(api, tenant_id)
    for user_id in ids[:3]:
        directory.disable_user(user_id)
    held = run_and_wait(api, tenant_id)
    assert held["status"] == "awaiting_approval"
    refused = api.post(f"/tenants/{tenant_id}/entra/runs")
    assert refused.status_code == 409 and "awaits approval" in refused.json["detail"]
    removal = api.delete(f"/tenants/{tenant_id}/entra")
    assert removal.status_code == 409
    api.post(f"/tenants/{tenant_id}/entra/runs/{held['id']}/reject")
    api.patch(f"/tenants/{tenant_id}/settings", {"provisioningPaused": True})
    paused = api.post(f"/tenants/{tenant_id}/entra/runs")
    assert paused.status_code == 409 and "paused" in paused.json["detail"]
    assert api.delete(f"/tenants/{tenant_id}/entra").status_code == 204


def test_the_group_scope_is_set_and_read_through_the_api(
        api: ApiClient, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Scoped")
    entra = fake_graph.directory(fake_app.tenant_id)
    ann = entra.add_user("ann@contoso.example")
    entra.add_user("bob@contoso.example")
    inner = entra.create_group("Inner", members=[ann])
    scoped = entra.create_group("Scoped", members=[inner])
    created = register(api, tenant_id, fake_app, scopeGroups=[scoped.upper()],
                       scopeGroupMode="transitive")
    assert created.status_code == 200, created.json
    body = api.get(f"/tenants/{tenant_id}/entra").json
    assert (body["scopeGroups"], body["scopeGroupMode"]) == ([scoped], "transitive")
    assert body["fullRoundDue"] is False
    run = run_and_wait(api, tenant_id)
    assert run["status"] == "succeeded" and run["counts"]["created"] == 1
    for bad in ({"scopeGroups": ["Sales"]}, {"scopeGroups": "x"},
                {"scopeGroupMode": "nested"}, {"scopeGroups": [1]}):
        refused = register(api, tenant_id, fake_app, **bad)
        assert refused.status_code == 400, (bad, refused.json)
    widened = register(api, tenant_id, fake_app, scopeGroups=[])
    assert widened.json["fullRoundDue"] is True  # users outside the group were never read


def test_registering_and_removing_switch_the_feed_as_recorded_tenant_settings(
        api: ApiClient, engine: Engine, fake_app: FakeApp) -> None:
    """Which path feeds a tenant is tenant policy: registering the app and removing it
    each leave an event saying so, and the switch back to SCIM is recorded too."""
    tenant_id, _ = make_tenant(engine, "Feed")
    assert register(api, tenant_id, fake_app).status_code == 200
    assert api.delete(f"/tenants/{tenant_id}/entra").status_code == 204
    with make_sessionmaker(engine)() as s:
        rows = s.execute(select(Event.kind, Event.old_value, Event.new_value)
                         .where(Event.tenant_id == tenant_id, Event.subject_type == "tenant",
                                Event.kind != events.TENANT_CREATED)
                         .order_by(Event.id)).all()
        assert s.get(Tenant, tenant_id).entra_sync is False
    kinds = [kind for kind, _old, _new in rows]
    assert kinds == [events.TENANT_SETTINGS, events.ENTRA_REGISTRATION,
                     events.ENTRA_REGISTRATION_REMOVED, events.TENANT_SETTINGS]
    assert (rows[0].old_value, rows[0].new_value) == ({"entra_sync": False},
                                                      {"entra_sync": True})
    assert rows[2].old_value == {"directory_id": fake_app.tenant_id,
                                 "client_id": fake_app.client_id}
    assert (rows[3].old_value, rows[3].new_value) == ({"entra_sync": True},
                                                      {"entra_sync": False})


def wait_until_free(engine: Engine, tenant_id: str, seconds: float = 20) -> None:
    from connector.models import SyncState

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with make_sessionmaker(engine)() as s:
            state = s.get(SyncState, tenant_id)
            if state is not None and state.lease_owner is None:
                return
        time.sleep(0.03)
    raise AssertionError("the round kept its lease")


def wait_for_run_after(api: ApiClient, tenant_id: str, last: int,
                       seconds: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = api.get(f"/tenants/{tenant_id}/entra/runs").json["items"]
        # The run log's entry ends before the round lets go of the tenant (it still adds
        # late memberships): wait for both, as an admin who acts next would.
        if (runs and runs[0]["id"] > last and runs[0]["status"] != "running"
                and not api.get(f"/tenants/{tenant_id}/entra").json["roundRunning"]):
            return runs[0]  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("the round did not finish")


def test_restart_provisioning_runs_a_full_round_and_sweeps_under_the_threshold(
        api: ApiClient, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Restarted")
    directory = fake_graph.directory(fake_app.tenant_id)
    ids = [directory.add_user(f"u{i}@contoso.example") for i in range(12)]
    register(api, tenant_id, fake_app, thresholdCount=3)
    first = run_and_wait(api, tenant_id)
    incremental = run_and_wait(api, tenant_id)
    assert (first["kind"], incremental["kind"]) == ("full", "incremental")
    # Four users vanish without Graph telling this delta cursor (as after a long
    # outage): only a full round sees it, and four is over the threshold of 3.
    with directory.lock:
        for user_id in ids[:4]:
            directory.hard_delete_user(user_id)
    # Restart forgets the cursors and the failures. (The incremental round's process
    # lets go of the lease just after its run row says succeeded: wait for that.)
    wait_until_free(engine, tenant_id)
    # A writing session: on SQLite it queues on the process's write lock behind the
    # round's last writes (its notifications), instead of failing "database is locked"
    # when a read transaction upgrades under a concurrent writer.
    with make_sessionmaker(engine, writes=True)() as s:
        from connector.models import SyncState

        state = s.get(SyncState, tenant_id)
        assert state is not None
        state.failures, state.quarantined_until = 4, None
        s.commit()
    restarted = api.post(f"/tenants/{tenant_id}/entra/restart")
    assert restarted.status_code == 202, restarted.json
    run = wait_for_run_after(api, tenant_id, incremental["id"])
    assert (run["kind"], run["trigger"], run["status"]) == ("full", "restart",
                                                             "awaiting_approval"), run
    staged = api.get(f"/tenants/{tenant_id}/entra/runs/{run['id']}").json["staged"]
    assert {s["action"] for s in staged} <= {"sweep", "hard_delete"} and len(staged) == 4
    assert api.get(f"/tenants/{tenant_id}/entra").json["failures"] == 0
    # While it is held, a restart is refused with what to do.
    refused = api.post(f"/tenants/{tenant_id}/entra/restart")
    assert refused.status_code == 409 and "approve or reject" in refused.json["detail"]
    audit = [a["action"] for a in api.get(f"/tenants/{tenant_id}/audit").json["items"]]
    assert "entra.restarted" in audit


def test_churn_settings_and_kept_items_through_the_api(
        api: ApiClient, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Churn settings")
    directory = fake_graph.directory(fake_app.tenant_id)
    x = directory.add_user("x@contoso.example")
    body = register(api, tenant_id, fake_app).json
    assert (body["softDelete"], body["matchingAttribute"], body["keptItems"]) == (
        "disable", "userPrincipalName", 0)
    changed = register(api, tenant_id, fake_app, softDelete="remove",
                       matchingAttribute="employeeId")
    assert changed.status_code == 200
    assert (changed.json["softDelete"], changed.json["matchingAttribute"]) == (
        "remove", "employeeId")
    bad = register(api, tenant_id, fake_app, softDelete="shred")
    assert bad.status_code == 400 and bad.content_type == "application/problem+json"
    run_and_wait(api, tenant_id)
    # A new object whose name a synced user holds (Entra would refuse the duplicate;
    # a directory mid-change can show one): kept, with the holder named, and listed.
    with directory.lock:
        twin = directory.add_user("tmp@contoso.example")
        directory.update_user(twin, userPrincipalName="X@contoso.example")
    run = run_and_wait(api, tenant_id)
    assert run["counts"]["failed"] == 1 and run["counts"]["kept"] == 1, run
    kept = api.get(f"/tenants/{tenant_id}/entra/kept").json
    assert kept["total"] == 1
    item = kept["items"][0]
    assert (item["objectId"], item["code"], item["userName"]) == (
        twin, "name_taken", "X@contoso.example")
    assert x in item["reason"]
    assert api.get(f"/tenants/{tenant_id}/entra").json["keptItems"] == 1


def test_a_run_graphs_resync_replaced_is_not_shown_as_failed(
        api: ApiClient, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    """Graph's resync (410) starts the round over as a full one: normal and handled. The
    run it interrupted used to read `failed` in the run log, alarming an admin."""
    tenant_id, _ = make_tenant(engine, "Entra-fed")
    fake_graph.directory(fake_app.tenant_id).seed_users(3)
    assert register(api, tenant_id, fake_app).status_code == 200
    first = run_and_wait(api, tenant_id)
    fake_graph.resync(410, "syncStateNotFound")
    full = run_and_wait(api, tenant_id)
    assert (full["status"], full["kind"], full["trigger"]) == ("succeeded", "full", "resync")
    path = f"/tenants/{tenant_id}/entra/runs"
    runs = api.get(path)
    check_response("GET", path, runs)
    replaced, = [r for r in runs.json["items"] if first["id"] < r["id"] < full["id"]]
    assert replaced["status"] == "replaced", replaced
    assert "410 syncStateNotFound" in replaced["error"]
    assert f"Run {full['id']} replaced this one." in replaced["error"]
    detail = api.get(f"{path}/{replaced['id']}")
    check_response("GET", f"{path}/{replaced['id']}", detail)
    assert detail.json["status"] == "replaced"
    assert api.get(f"/tenants/{tenant_id}/entra").json["failures"] == 0
