"""`connector webhooks list|create|ping|replay|disable|enable` against both databases and
a real receiver on loopback (in-process: the same entry point a user runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from connector import cli, sealed
from connector.db import make_sessionmaker
from connector.models import AuditEntry
from tests.fakes.receiver import Receiver, verify
from tests.support.clients import make_tenant


@pytest.fixture
def run(database_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CONNECTOR_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("CONNECTOR_DATABASE__URL", database_url)
    monkeypatch.setenv("CONNECTOR_AZURE_SYNC__ENCRYPTION_KEY", sealed.new_key())
    monkeypatch.setenv("CONNECTOR_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")

    def command(*args: str) -> tuple[int, str, str]:
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return command


def test_create_list_ping_disable_enable_replay(run, engine: Engine,  # type: ignore[no-untyped-def]
                                                receiver: Receiver) -> None:
    tenant_id, _ = make_tenant(engine)
    code, out, err = run("webhooks", "create", receiver.url, "--tenant", tenant_id,
                         "--type", "user.created", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["secret"].startswith("whsec_") and made["eventTypes"] == ["user.created"]
    code, out, _ = run("webhooks", "list", "--json")
    assert [e["id"] for e in json.loads(out)] == [made["id"]]
    code, out, _ = run("webhooks", "list")
    assert made["id"] in out and "user.created" in out

    code, out, err = run("webhooks", "ping", made["id"])
    assert code == 0, err
    assert "answered 200" in out
    verify(receiver.accepted[0], made["secret"])

    code, out, _ = run("webhooks", "disable", made["id"])
    assert code == 0 and "disabled" in out
    code, out, _ = run("webhooks", "enable", made["id"])
    assert code == 0 and "enabled" in out
    code, out, _ = run("webhooks", "replay", made["id"])
    assert code == 0 and "start of the feed" in out
    code, _, err = run("webhooks", "replay", made["id"], "--after", "garbage")
    assert code == 1 and "cursor" in err
    with make_sessionmaker(engine)() as s:
        actions = list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions == ["webhook.created", "webhook.pinged", "webhook.disabled",
                       "webhook.enabled", "webhook.replayed"]


def test_errors_are_plain(run, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("webhooks", "create", "ftp://example.com/")
    assert code == 1 and "https://" in err
    code, _, err = run("webhooks", "ping", "no-such-endpoint")
    assert code == 1 and "not found" in err


@pytest.mark.parametrize("command", [["create", "https://receiver.example/hook"], ["list"]],
                         ids=lambda command: command[0])
def test_an_unknown_tenant_says_where_the_ids_are(run, command: list[str]) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("webhooks", *command, "--tenant", "no-such-tenant")
    assert code == 1 and out == ""
    assert "No tenant with id no-such-tenant; `connector tenant list` shows them." in err
