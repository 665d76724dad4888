"""The provisioning log: SCIM writes and failed requests logged from the one write path,
no secret in it, nothing logged for a change that did not happen, retention pruning."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from connector import clock, provlog
from connector.config import ProvisioningLogSettings
from connector.db import make_sessionmaker
from connector.events import WriteContext
from connector.models import ProvisioningEntry, User
from connector.status import Source
from tests.scim.factories import group, patch, user
from tests.support.clients import ScimClient


def entries(engine: Engine, tenant_id: str) -> list[ProvisioningEntry]:
    with make_sessionmaker(engine)() as s:
        return list(s.scalars(select(ProvisioningEntry).where(
            ProvisioningEntry.tenant_id == tenant_id).order_by(ProvisioningEntry.id)))


def test_scim_create_update_disable_delete_are_logged(scim: ScimClient, engine: Engine
                                                       ) -> None:
    scim.headers["User-Agent"] = "Okta SCIM/1.0"
    created = scim.post("/Users", user("ann@example.com", externalId="okta-1",
                                       password="Hunter2!secret"))
    assert created.status_code == 201
    uid = created.json["id"]
    body = user("ann@example.com", externalId="okta-1", displayName="Ann B.")
    assert scim.put(f"/Users/{uid}", body).status_code == 200
    assert scim.patch(f"/Users/{uid}", patch(
        {"op": "replace", "path": "active", "value": False})).status_code == 200
    assert scim.delete(f"/Users/{uid}").status_code == 204

    log = entries(engine, scim.tenant_id)
    assert [(e.operation, e.result) for e in log] == [
        ("create", "success"), ("update", "success"), ("disable", "success"),
        ("delete", "success")]
    for e in log:
        assert (e.source, e.user_id, e.object_id, e.name) == (
            "scim", uid, "okta-1", "ann@example.com")
        assert e.client == "scim-token:Okta SCIM/1.0"
        assert e.source_ref and e.source_ref != "-"
        assert e.object_type == "user"
    assert log[0].changes["userName"] == [None, "ann@example.com"]
    assert log[1].changes["displayName"][1] == "Ann B."
    assert log[2].changes["active"] == [True, False]
    assert log[3].changes["userName"] == ["ann@example.com", None]
    assert len({e.source_ref for e in log}) == 4  # one request id each
    dumped = json.dumps([e.changes for e in log])
    assert "Hunter2" not in dumped and "password" not in dumped


def test_profile_attributes_changed_are_listed_old_to_new(scim: ScimClient, engine: Engine
                                                          ) -> None:
    uid = scim.post("/Users", user("bo@example.com")).json["id"]
    r = scim.patch(f"/Users/{uid}", patch(
        {"op": "replace", "path": "name.givenName", "value": "Bob"}))
    assert r.status_code == 200
    last = entries(engine, scim.tenant_id)[-1]
    assert last.operation == "update"
    assert last.changes["name"][0]["givenName"] == "Given"
    assert last.changes["name"][1]["givenName"] == "Bob"


def test_a_password_change_logs_no_secret(scim: ScimClient, engine: Engine) -> None:
    uid = scim.post("/Users", user("cy@example.com")).json["id"]
    r = scim.patch(f"/Users/{uid}", patch(
        {"op": "replace", "path": "password", "value": "N3w-Pa55word"}))
    assert r.status_code in (200, 204)
    for e in entries(engine, scim.tenant_id):
        assert "N3w-Pa55word" not in json.dumps(e.changes)
        assert not any("password" in k.casefold() for k in (e.changes or {}))


def test_group_and_memberships_are_logged_under_the_member(scim: ScimClient, engine: Engine
                                                           ) -> None:
    uid = scim.post("/Users", user("di@example.com", externalId="x-di")).json["id"]
    gid = scim.post("/Groups", group("Sales", members=[uid])).json["id"]
    assert scim.patch(f"/Groups/{gid}", patch(
        {"op": "remove", "path": f'members[value eq "{uid}"]'})).status_code in (200, 204)
    log = entries(engine, scim.tenant_id)
    ops = [(e.operation, e.object_type, e.user_id) for e in log]
    assert ("create", "group", gid) in ops
    adds = [e for e in log if e.operation == "membership_add"]
    removes = [e for e in log if e.operation == "membership_remove"]
    assert [(e.user_id, e.name, e.object_id) for e in adds] == [(uid, "di@example.com",
                                                                 "x-di")]
    assert adds[0].changes["group"] == [None, "Sales"]
    assert [e.user_id for e in removes] == [uid]


def test_a_failed_write_changes_nothing_and_logs_one_failure(scim: ScimClient,
                                                             engine: Engine) -> None:
    first = scim.post("/Users", user("eve@example.com")).json["id"]
    other = scim.post("/Users", user("fay@example.com")).json["id"]
    before = entries(engine, scim.tenant_id)
    r = scim.put(f"/Users/{other}", user("EVE@example.com"))  # the name is taken
    assert r.status_code == 409
    with make_sessionmaker(engine)() as s:
        assert s.get(User, (scim.tenant_id, other)).user_name == "fay@example.com"
        assert s.get(User, (scim.tenant_id, first)).version == 1
    new = entries(engine, scim.tenant_id)[len(before):]
    assert len(new) == 1
    failure = new[0]
    assert (failure.operation, failure.result, failure.code) == ("update", "failure",
                                                                 "uniqueness")
    assert failure.user_id == other
    assert failure.request["method"] == "PUT"
    assert failure.request["path"] == f"/scim/v2/Users/{other}"
    assert failure.request["status"] == 409
    assert failure.request["scimType"] == "uniqueness"
    assert "EVE@example.com" in failure.reason


def test_failed_reads_and_bad_bodies_are_logged_unauthenticated_ones_are_not(
        scim: ScimClient, engine: Engine, client: object) -> None:
    assert scim.get("/Users/nope").status_code == 404
    assert scim.post("/Users", {"schemas": []}).status_code == 400
    bad_token = ScimClient(scim.client, "wrong", scim.tenant_id)
    assert bad_token.get("/Users").status_code == 401
    log = entries(engine, scim.tenant_id)
    assert [(e.operation, e.code, e.request["status"]) for e in log] == [
        ("request", "not_found", 404), ("create", log[1].code, 400)]
    assert log[1].result == "failure" and log[1].code  # snake_case, stable
    assert log[1].code == log[1].code.lower()


def test_the_log_can_be_turned_off(scim: ScimClient, engine: Engine) -> None:
    provlog.configure(ProvisioningLogSettings(enabled=False))
    try:
        assert scim.post("/Users", user()).status_code == 201
        assert scim.get("/Users/nope").status_code == 404
    finally:
        provlog.configure(ProvisioningLogSettings())
    assert entries(engine, scim.tenant_id) == []


def test_admin_changes_are_not_logged(scim: ScimClient, engine: Engine) -> None:
    from connector.directory import Directory
    from connector.models import Tenant

    uid = scim.post("/Users", user()).json["id"]
    with make_sessionmaker(engine)() as s:
        tenant = s.get(Tenant, scim.tenant_id)
        row = s.get(User, (scim.tenant_id, uid))
        ctx = WriteContext(scim.tenant_id, Source.ADMIN, "admin@x", "c1", clock.now())
        Directory(s, tenant, ctx).set_user_flags(row, guest=True)
        s.commit()
    assert [e.operation for e in entries(engine, scim.tenant_id)] == ["create"]


def test_record_writes_an_entry_for_the_sync(session: Session, scim: ScimClient,
                                             engine: Engine) -> None:
    ctx = WriteContext(scim.tenant_id, Source.ENTRA_SYNC, "entra-sync", "sync-run:7",
                       clock.now())
    provlog.record(session, ctx, operation="create", result="failure", code="name_taken",
                   reason="userPrincipalName a@x is used by another user.",
                   object_id="obj-1", name="a@x",
                   changes={"userName": [None, "a@x"], "clientSecret": ["s", "t"]})
    session.commit()
    (e,) = entries(engine, scim.tenant_id)
    assert (e.source, e.source_ref, e.result, e.code) == ("entra", "sync-run:7", "failure",
                                                          "name_taken")
    assert e.changes == {"userName": [None, "a@x"]}
    assert [f.id for f in provlog.run_failures(session, scim.tenant_id, 7)] == [e.id]
    with pytest.raises(ValueError):
        provlog.entry(ctx, operation="explode", result="failure", code="x", reason="x")


@pytest.fixture
def old_entries(scim: ScimClient, engine: Engine) -> Iterator[int]:
    now = clock.now()
    maker = make_sessionmaker(engine)
    with maker() as s:
        rows = []
        for i in range(23):
            ctx = WriteContext(scim.tenant_id, Source.SCIM, "scim-token", f"r{i}",
                               now - dt.timedelta(days=40 if i < 17 else 1))
            rows.append(provlog.entry(ctx, operation="update", result="success",
                                      code="update", reason="Updated."))
        provlog.record_many(s, rows)
        s.commit()
    yield 17


def test_prune_removes_old_entries_in_batches(old_entries: int, engine: Engine,
                                              scim: ScimClient) -> None:
    from tests.support.statements import counting

    maker = make_sessionmaker(engine, writes=True)
    with counting(engine) as issued:
        removed = provlog.prune(maker, clock.now(), 30, 5)
    assert removed == old_entries
    deletes = [s for s in issued if s.lstrip().upper().startswith("DELETE")]
    assert len(deletes) == 4  # 5 + 5 + 5 + 2
    with maker() as s:
        assert s.scalar(select(func.count()).select_from(ProvisioningEntry)) == 6


def test_the_prune_command_and_the_scheduler_job(old_entries: int, engine: Engine,
                                                 database_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from connector import cli

    monkeypatch.setenv("CONNECTOR_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("CONNECTOR_DATABASE__URL", database_url)
    monkeypatch.setenv("CONNECTOR_PROVISIONING_LOG__PRUNE_BATCH", "4")
    assert cli.main(["provlog", "prune", "--days", "60"]) == 0
    assert "Pruned 0 provisioning log entries older than 60 days." in capsys.readouterr().out
    assert cli.main(["provlog", "prune"]) == 0
    assert f"Pruned {old_entries} " in capsys.readouterr().out
    provlog.configure(ProvisioningLogSettings())

    scheduler = BackgroundScheduler(timezone=dt.UTC)
    settings = ProvisioningLogSettings(prune_interval_minutes=15)
    provlog.add_prune_job(scheduler, make_sessionmaker(engine, writes=True), settings)
    job = scheduler.get_job("provlog:prune")
    assert job is not None and job.trigger.interval == dt.timedelta(minutes=15)


def test_a_failed_bulk_operation_is_logged_and_the_others_apply(scim: ScimClient,
                                                                engine: Engine) -> None:
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": [
                {"method": "POST", "path": "/Users", "bulkId": "a",
                 "data": user("gil@example.com")},
                {"method": "POST", "path": "/Users", "bulkId": "b",
                 "data": user("GIL@example.com")}]}
    r = scim.post("/Bulk", body)
    assert [op["status"] for op in r.json["Operations"]] == ["201", "409"]
    log = entries(engine, scim.tenant_id)
    assert [(e.operation, e.result) for e in log] == [("create", "success"),
                                                      ("create", "failure")]
    assert log[1].code == "uniqueness"
    assert log[1].request == {"method": "Bulk POST", "path": "/Users", "status": 409,
                              "scimType": "uniqueness", "detail": log[1].reason}
    assert log[0].source_ref == log[1].source_ref  # one request


def test_a_secret_nested_in_a_profile_attribute_is_left_out(scim: ScimClient, engine: Engine
                                                            ) -> None:
    uid = scim.post("/Users", user("hal@example.com")).json["id"]
    ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    r = scim.patch(f"/Users/{uid}", patch(
        {"op": "replace", "path": f"{ext}:department", "value": "Ops"}))
    assert r.status_code == 200
    changes = entries(engine, scim.tenant_id)[-1].changes
    assert changes[ext][1]["department"] == "Ops"
    assert provlog.profile_changes({"x": {"apiToken": "a", "k": 1}},
                                   {"x": {"apiToken": "b", "k": 2}}) == {
        "x": [{"k": 1}, {"k": 2}]}
