"""`connector sync run` and `connector sync restart` against the fakes: what a person at
a terminal (or a script reading --json) learns of a round, kept items included."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest

from azure_sync.service import register
from connector import cli
from connector.events import WriteContext
from connector.models import SyncRun
from connector.status import Source
from tests.azure_sync.harness import Sync


@pytest.fixture
def environment(sync: Sync, database_url: str, fake_tls: Any, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> None:
    settings = sync.service.settings
    for key, value in {
            "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
            "CONNECTOR_DATABASE__URL": database_url,
            "CONNECTOR_AZURE_SYNC__ENCRYPTION_KEY": settings.encryption_key,
            "CONNECTOR_AZURE_SYNC__CA_BUNDLE": str(fake_tls.ca_path),
            "CONNECTOR_AZURE_SYNC__ALLOW_PRIVATE_HOSTS": "true",
            "CONNECTOR_AZURE_SYNC__GRAPH_SCOPE": settings.graph_scope}.items():
        monkeypatch.setenv(key, value)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().out


@pytest.mark.usefixtures("environment")
def test_sync_run_prints_the_items_it_could_not_apply(
        sync: Sync, capsys: pytest.CaptureFixture[str]) -> None:
    x = sync.entra.add_user("x@contoso.example")
    sync.entra.seed_users(3)
    code, out = run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id, "--json")
    first = json.loads(out)
    assert code == 0 and first["status"] == "succeeded" and first["kept"] == []
    with sync.entra.lock:  # a duplicate name, as a directory mid-change may show
        twin = sync.entra.add_user("tmp@contoso.example")
        sync.entra.update_user(twin, userPrincipalName="X@contoso.example")
    code, out = run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id, "--json")
    answer = json.loads(out)
    assert code == 0 and answer["counts"]["failed"] == 1
    [kept] = answer["kept"]
    assert (kept["objectId"], kept["code"], kept["userName"]) == (twin, "name_taken",
                                                                   "X@contoso.example")
    assert x in kept["reason"]
    [failed] = answer["failed"]  # from the provisioning log, by the run's id
    assert (failed["objectId"], failed["code"], failed["result"]) == (twin, "name_taken",
                                                                      "failure")
    assert failed["sourceRef"] == f"sync-run:{answer['run_id']}"
    code, out = run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id)
    assert code == 0
    assert "1 object(s) could not be applied and are kept" in out
    assert f"user {twin} X@contoso.example: " in out and "[name_taken]" in out


@pytest.mark.usefixtures("environment")
def test_sync_run_prints_the_rounds_failed_items_from_the_provisioning_log(
        sync: Sync, capsys: pytest.CaptureFixture[str]) -> None:
    sync.entra.add_user("x@contoso.example")
    assert run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id)[0] == 0
    with sync.entra.lock:
        twin = sync.entra.add_user("tmp@contoso.example")
        sync.entra.update_user(twin, userPrincipalName="X@contoso.example")
    code, out = run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id)
    assert code == 0
    assert "1 item(s) failed in this round (provisioning log):" in out
    assert f" {twin} X@contoso.example: " in out and "[name_taken]" in out


@pytest.mark.usefixtures("environment")
def test_sync_restart_runs_a_full_round_with_progress(
        sync: Sync, capsys: pytest.CaptureFixture[str]) -> None:
    sync.entra.seed_users(5)
    assert sync.run().status == "succeeded"
    assert sync.run().status == "succeeded"  # an incremental round: the cursor is set
    code, out = run_cli(capsys, "sync", "restart", "--tenant", sync.tenant_id)
    assert code == 0, out
    assert "Provisioning restarted" in out and "succeeded" in out
    with sync.session() as s:
        runs = s.query(SyncRun).filter(SyncRun.tenant_id == sync.tenant_id).order_by(
            SyncRun.id).all()
        assert [(r.kind, r.trigger) for r in runs][-1] == ("full", "restart")
        assert runs[-1].counts.get("seen") == 5


@pytest.mark.usefixtures("environment")
def test_sync_status_says_a_failed_rounds_error_in_plain_words(
        sync: Sync, capsys: pytest.CaptureFixture[str]) -> None:
    """A round stored with a raw Python error (as rounds were before the plain words):
    `connector sync status` says what could not be reached; --json keeps the raw text
    apart, for whoever must dig."""
    assert sync.run().status == "succeeded"
    raw = ("HTTPSConnectionPool(host='login.microsoftonline.com', port=443): Max retries "
           "exceeded (Caused by NewConnectionError('Failed to establish a new connection: "
           "[Errno 111] Connection refused'))")
    with sync.session() as s:
        run = s.query(SyncRun).filter_by(tenant_id=sync.tenant_id).one()
        run.status, run.error = "failed", raw
        s.commit()
    code, out = run_cli(capsys, "sync", "status")
    assert code == 0 and "last round" in out and "failed" in out
    assert "login.microsoftonline.com" in out and "HTTPSConnectionPool" not in out
    code, out = run_cli(capsys, "sync", "status", "--json")
    [row] = json.loads(out)
    assert "HTTPSConnectionPool" not in row["last_run"]["error"]
    assert row["last_run"]["error_detail"] == raw


@pytest.mark.usefixtures("environment")
def test_sync_run_says_a_wrong_client_secret_in_plain_words(
        sync: Sync, capsys: pytest.CaptureFixture[str]) -> None:
    """Entra's AADSTS7000215 becomes what it means and what to do; its own text (with
    its trace and correlation ids) is the detail, apart."""
    sync.register(secret="not-the-secret")
    code, out = run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id, "--json")
    answer = json.loads(out)
    assert code == 1 and answer["status"] == "failed"
    plain, _, detail = answer["error"].partition("\n\nDetail: ")
    assert plain == (f"Entra ID refused to sign in app {sync.app.client_id} (AADSTS7000215): "
                     "the client secret is wrong. Enter the secret's Value (not its Secret "
                     "ID), or create a new client secret for the app (Certificates & "
                     "secrets) and register it again.")
    assert detail.startswith("AADSTS7000215: Invalid client secret provided.")
    assert "Trace ID" in detail and "Trace ID" not in plain
    code, out = run_cli(capsys, "sync", "status", "--json")
    [row] = json.loads(out)
    assert row["last_run"]["error"] == plain and row["last_run"]["error_detail"] == detail


@pytest.mark.usefixtures("environment")
def test_sync_run_says_an_unknown_client_id_in_plain_words(
        sync: Sync, capsys: pytest.CaptureFixture[str]) -> None:
    with sync.session() as s:
        register(s, sync.service.settings, WriteContext(
            sync.tenant_id, Source.ADMIN, "test", "test", dt.datetime.now(dt.UTC)),
            directory_id=sync.app.tenant_id, client_id="00000000-0000-0000-0000-00000000dead",
            secret=sync.app.client_secret)
        s.commit()
    code, out = run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id)
    assert code == 1
    assert (f"(AADSTS700016): the directory {sync.app.tenant_id} has no application with "
            "client id 00000000-0000-0000-0000-00000000dead.") in out


@pytest.mark.usefixtures("environment")
def test_sync_run_says_when_graph_made_the_round_start_over(
        sync: Sync, capsys: pytest.CaptureFixture[str]) -> None:
    """An expired deltaLink (410 syncStateNotFound) turns the round into a full one: the
    terminal says so, and which run it replaced, rather than showing a full round's
    counts under an incremental round's name."""
    sync.entra.seed_users(3)
    code, out = run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id, "--json")
    first = json.loads(out)
    assert (code, first["kind"], first["trigger"]) == (0, "full", "manual")
    assert "replaced" not in first
    sync.graph.resync()  # every delta token issued so far answers 410
    code, out = run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id, "--json")
    answer = json.loads(out)
    assert (code, answer["status"], answer["kind"], answer["trigger"]) == (
        0, "succeeded", "full", "resync")
    assert answer["replaced"]["run_id"] == first["run_id"] + 1
    assert "410 syncStateNotFound" in answer["replaced"]["reason"]
    assert answer["counts"]["seen"] == 3 and not answer["counts"].get("created")
    sync.graph.resync(400, "resyncRequired")
    code, out = run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id)
    assert code == 0
    assert "(full): succeeded" in out
    assert "Graph no longer had the delta state, so run " in out
    assert "400 resyncRequired" in out


@pytest.mark.usefixtures("environment")
def test_sync_run_says_which_failed_items_the_rounds_end_applied(
        sync: Sync, capsys: pytest.CaptureFixture[str]) -> None:
    """Two users swapping names fail on their page and land together at the round's
    end: the terminal says so, rather than listing two failures and nothing kept."""
    a = sync.entra.add_user("a@contoso.example")
    b = sync.entra.add_user("b@contoso.example")
    assert run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id)[0] == 0
    with sync.entra.lock:
        sync.entra.update_user(a, userPrincipalName="tmp@contoso.example")
        sync.entra.update_user(b, userPrincipalName="a@contoso.example")
        sync.entra.update_user(a, userPrincipalName="b@contoso.example")
    code, out = run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id, "--json")
    answer = json.loads(out)
    assert code == 0 and answer["kept"] == [] and answer["counts"]["failed"] == 2
    assert {(f["objectId"], f["appliedLater"]) for f in answer["failed"]} == {
        (a, True), (b, True)}
    with sync.entra.lock:
        sync.entra.update_user(a, userPrincipalName="tmp@contoso.example")
        sync.entra.update_user(b, userPrincipalName="b@contoso.example")
        sync.entra.update_user(a, userPrincipalName="a@contoso.example")
    code, out = run_cli(capsys, "sync", "run", "--tenant", sync.tenant_id)
    assert code == 0
    assert ("2 item(s) failed in this round (provisioning log); 2 of them applied at the "
            "round's end:") in out
    assert out.count("[name_taken] (applied at the round's end)") == 2


@pytest.mark.usefixtures("environment")
@pytest.mark.parametrize("command", [
    ["run"], ["restart"],
    ["register", "--directory-id", "11111111-1111-1111-1111-111111111111",
     "--client-id", "22222222-2222-2222-2222-222222222222", "--secret-stdin"]],
    ids=lambda command: command[0])
def test_an_unknown_tenant_is_not_said_to_lack_a_registration(
        command: list[str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown id has no registration either; saying so would send the operator to
    register one for a tenant that does not exist."""
    monkeypatch.setattr("sys.stdin", io.StringIO("a-client-secret\n"))
    code = cli.main(["sync", *command, "--tenant", "no-such-tenant"])
    err = capsys.readouterr().err
    assert code == 1
    assert "No tenant with id no-such-tenant; `connector tenant list` shows them." in err
    assert "registration" not in err
