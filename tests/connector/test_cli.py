"""The `connector` command, run as a user would run it, against both databases."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, inspect, text

from tests.support.clients import insert_admin_with_clear_totp
from tests.support.databases import PG_ADMIN_DSN, PG_URL_TEMPLATE

# Each command runs in a new interpreter, as a user runs it (1-3 s each).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def connector(database_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONNECTOR_DATABASE__URL": database_url,
           "CONNECTOR_CONFIG": str(cwd / "none.toml")}
    return subprocess.run([sys.executable, "-m", "connector.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def test_tenant_create_list_rotate(database_url: str, engine: object, tmp_path: Path) -> None:
    made = connector(database_url, "tenant", "create", "Acme", "--json", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    out = json.loads(made.stdout)
    assert set(out) == {"id", "name", "scim_base_url", "scim_token"}
    assert out["name"] == "Acme" and out["scim_base_url"].endswith("/scim/v2")
    assert len(out["scim_token"]) >= 43  # 256 bits, url-safe base64

    listed = connector(database_url, "tenant", "list", "--json", cwd=tmp_path)
    assert [t["id"] for t in json.loads(listed.stdout)] == [out["id"]]

    rotated = connector(database_url, "tenant", "rotate-token", out["id"], "--json",
                        cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["scim_token"] != out["scim_token"]


def test_tenant_list_searches_and_filters_as_the_tenants_page(
        database_url: str, engine: object, tmp_path: Path) -> None:
    """A hosting partner's thousands of tenants: --search as the Tenants page's search
    (part of the name, any case, accents optional, or an exact id) and --state."""
    made = {name: json.loads(connector(database_url, "tenant", "create", name, "--json",
                                       cwd=tmp_path).stdout)["id"]
            for name in ("Ärzte Nord", "Globex", "Nordwind Ärztehaus")}
    assert connector(database_url, "tenant", "close", made["Globex"],
                     cwd=tmp_path).returncode == 0

    def names(*args: str) -> list[str]:
        listed = connector(database_url, "tenant", "list", "--json", *args, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        return [t["name"] for t in json.loads(listed.stdout)]

    assert names("--search", "ARZTE") == ["Ärzte Nord", "Nordwind Ärztehaus"]
    assert names("--search", made["Globex"]) == ["Globex"]
    assert names("--state", "closed") == ["Globex"]
    assert names("--state", "open", "--search", "nord") == ["Ärzte Nord",
                                                           "Nordwind Ärztehaus"]
    nothing = connector(database_url, "tenant", "list", "--search", "Initech", cwd=tmp_path)
    assert nothing.returncode == 0 and "No tenant matches" in nothing.stdout
    wrong = connector(database_url, "tenant", "list", "--state", "paused", cwd=tmp_path)
    assert wrong.returncode == 2 and "choose from 'open', 'closed'" in wrong.stderr


def test_rotate_unknown_tenant_says_what_to_do(database_url: str, engine: object,
                                              tmp_path: Path) -> None:
    result = connector(database_url, "tenant", "rotate-token", "nope", cwd=tmp_path)
    assert result.returncode == 1
    assert "connector tenant list" in result.stderr


def test_bootstrap_creates_one_tenant_once(database_url: str, engine: object,
                                          tmp_path: Path) -> None:
    first = connector(database_url, "bootstrap", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "SCIM token" in first.stdout and "/scim/v2" in first.stdout
    assert "admin@localhost" in first.stdout and "/admin/" in first.stdout
    second = connector(database_url, "bootstrap", cwd=tmp_path)
    assert "rotate-token" in second.stdout and "scim_" not in second.stdout
    assert "password      : " in first.stdout and "password      : " not in second.stdout
    assert "Sign in as admin@localhost (partner admin)" in second.stdout
    # The commands it suggests run as printed, from where bootstrap ran.
    import shlex

    env = {**os.environ, "CONNECTOR_DATABASE__URL": database_url,
           "CONNECTOR_CONFIG": str(tmp_path / "none.toml")}
    suggested = [line.strip("| ").strip() for line in second.stdout.splitlines()
                 if "rotate-token" in line or "reset-password" in line]
    assert len(suggested) == 2, second.stdout
    for line in suggested:
        ran = subprocess.run(shlex.split(line), env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=60, check=False)
        assert ran.returncode == 0, (line, ran.stderr)
    assert "admin@localhost" in line and "one-time password" in ran.stdout


@pytest.mark.parametrize("given", ["environment", "option"])
def test_serve_bootstrap_shows_what_it_made_last_on_the_port_it_was_given(
        database_url: str, engine: object, tmp_path: Path, given: str) -> None:
    """`make run`: `connector serve --bootstrap` with the port from the environment (as
    `make run PORT=…` sets it), or from `--port`, serves there, and its last lines, once
    it listens, are the credentials and addresses in a frame, naming that port."""
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "CONNECTOR_DATABASE__URL": database_url,
           "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
           "CONNECTOR_AZURE_SYNC__ENCRYPTION_KEY_FILE": str(tmp_path / "entra.key")}
    if given == "environment":
        env["CONNECTOR_SERVER__PORT"] = str(port)
    option = ["--port", str(port)] if given == "option" else []
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "connector.cli", "serve",
                                   "--bootstrap", *option], env=env, cwd=tmp_path, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C stops." not in log.read_text():  # the frame's last line
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(2)  # the worker's start: its schedulers, its database check
        text = log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as ok:
            assert ok.status == 200
        before, frame = text[:text.index("+-")], text[text.index("+-"):]
        assert "Listening at" in before and "Booting worker" in before
        after = frame[frame.rindex("-+") + 2:].strip().splitlines()
        # Nothing but (at most) gunicorn's control-socket line follows the frame.
        assert all("gunicorn" in line or "Control socket" in line for line in after), after
        assert "SCIM token    : scim_" in frame and "admin@localhost" in frame
        assert "password      : " in frame
        assert f"http://127.0.0.1:{port}/scim/v2" in frame
        assert f"http://127.0.0.1:{port}/admin/" in frame
        assert f"Serving on http://127.0.0.1:{port}" in frame
        # Narrow enough for a terminal (the serving line made it 180 columns wide).
        framed = frame[:frame.rindex("-+") + 2].splitlines()
        assert max(len(line) for line in framed) <= 104, framed
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_serve_prints_the_host_and_port_of_its_options_even_ipv6(
        database_url: str, engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], worker_class: str) -> None:
    """`connector serve --host H --port P --bootstrap` prints the addresses it serves at,
    not [server] host/port; an IPv6 host in brackets, in the URLs and in gunicorn's bind
    (`::1:P` is no URL, and gunicorn read it as no port). Run in this process up to where
    gunicorn would start (its `run`, or the gevent path's exec), so no server is left."""
    import socket
    from types import SimpleNamespace

    import gunicorn.app.base

    from connector import cli, db, gunicorn_hooks

    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    for name, value in {"CONNECTOR_DATABASE__URL": database_url,
                        "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
                        "CONNECTOR_SERVER__HOST": "127.0.0.1",
                        "CONNECTOR_SERVER__PORT": "8080",
                        "CONNECTOR_SERVER__SCHEDULERS": "external",  # no worker process
                        "CONNECTOR_AZURE_SYNC__ENCRYPTION_KEY_FILE": str(tmp_path / "k"),
                        gunicorn_hooks.ENV_WELCOME: "",  # serve sets it: undone after
                        }.items():
        monkeypatch.setenv(name, value)  # and serve's own changes undone after
    started: dict[str, Any] = {}

    def run(server: Any) -> None:  # gunicorn's arbiter: what its workers print, once up
        started["bind"] = server.cfg.bind
        for age in range(1, server.cfg.workers + 1):
            server.cfg.post_worker_init(SimpleNamespace(age=age, cfg=server.cfg))

    def execve(_path: str, argv: list[str], env: dict[str, str]) -> None:  # the gevent path
        started["bind"] = [argv[n + 1] for n, arg in enumerate(argv) if arg == "--bind"]
        welcome = Path(env[gunicorn_hooks.ENV_WELCOME])
        print(welcome.read_text())
        welcome.unlink()

    monkeypatch.setattr(gunicorn.app.base.BaseApplication, "run", run)
    monkeypatch.setattr(os, "execve", execve)
    engines: list[Any] = []  # a command's engines live as long as its process: not here
    make_engine = db.make_engine
    monkeypatch.setattr(db, "make_engine", lambda *a, **k: engines.append(
        make_engine(*a, **k)) or engines[-1])
    try:
        cli.main(["serve", "--host", "::1", "--port", str(port), "--bootstrap",
                  "--worker-class", worker_class])
    finally:
        for made in engines:
            made.dispose()
    out = capsys.readouterr().out
    assert started["bind"] == [f"[::1]:{port}"]
    assert f"SCIM base URL : http://[::1]:{port}/scim/v2" in out, out
    assert f"Admin UI      : http://[::1]:{port}/admin/" in out
    assert f"Serving on http://[::1]:{port} (SCIM: http://[::1]:{port}/scim/v2)" in out
    assert ":8080" not in out


def test_admin_create_prints_a_one_time_password_that_signs_in(
        database_url: str, engine: object, tmp_path: Path) -> None:
    from sqlalchemy import Engine

    from connector import admins
    from connector.db import make_sessionmaker

    tenant = json.loads(connector(database_url, "tenant", "create", "Acme", "--json",
                                  cwd=tmp_path).stdout)
    made = connector(database_url, "admin", "create", "Ops@Acme.io", "--tenant", tenant["id"],
                     "--json", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    out = json.loads(made.stdout)
    assert out["role"] == "tenant" and out["tenant_id"] == tenant["id"]
    assert out["sign_in_url"].endswith("/admin/")
    assert isinstance(engine, Engine)
    with make_sessionmaker(engine)() as s:
        account = admins.verify_login(s, "ops@acme.io", out["one_time_password"])
        assert account.must_change_password
    again = connector(database_url, "admin", "create", "ops@acme.io", "--partner", cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
    nowhere = connector(database_url, "admin", "create", "x@y.io", "--tenant", "nope",
                        cwd=tmp_path)
    assert nowhere.returncode == 1 and "connector tenant list" in nowhere.stderr
    neither = connector(database_url, "admin", "create", "x@y.io", cwd=tmp_path)
    assert neither.returncode == 2 and "--partner" in neither.stderr
    with make_sessionmaker(engine)() as s:  # a personal API token, made before the reset
        _, clear = admins.create_token(s, out["id"], "laptop", dt.datetime.now(dt.UTC))
        s.commit()
        assert admins.authenticate_token(s, clear, dt.datetime.now(dt.UTC))
    reset = connector(database_url, "admin", "reset-password", "OPS@acme.io", "--json",
                      cwd=tmp_path)
    new_password = json.loads(reset.stdout)["one_time_password"]
    assert new_password != out["one_time_password"]
    with make_sessionmaker(engine)() as s:
        admins.verify_login(s, "ops@acme.io", new_password)
        # "Signs the account out everywhere": its API tokens too (issue 17, item 21).
        with pytest.raises(admins.BadCredentials):
            admins.authenticate_token(s, clear, dt.datetime.now(dt.UTC))
    listed = connector(database_url, "admin", "list", cwd=tmp_path)
    assert "ops@acme.io  tenant" in listed.stdout.lower()
    # A lost phone: the CLI turns two-factor sign-in off (the last partner admin's way in).
    with make_sessionmaker(engine)() as s:
        account = admins.find_admin(s, "ops@acme.io")
        assert account is not None
        account.totp_secret, epoch = "JBSWY3DPEHPK3PXP", account.session_epoch
        s.commit()
    off = connector(database_url, "admin", "reset-two-factor", "ops@acme.io", cwd=tmp_path)
    assert off.returncode == 0, off.stderr
    assert "is off now" in off.stdout
    with make_sessionmaker(engine)() as s:
        account = admins.find_admin(s, "ops@acme.io")
        assert account is not None and account.totp_secret is None
        assert account.session_epoch == epoch + 1
    unknown = connector(database_url, "admin", "reset-two-factor", "no@acme.io", cwd=tmp_path)
    assert unknown.returncode == 1 and "connector admin list" in unknown.stderr


# What a `connector` command that only lists tenants has no use for: the web app and its
# server, the webhook dispatcher's HTTP stack, billing's invoices and exports, Entra's msal.
UNNEEDED = ("flask", "werkzeug", "jinja2", "gevent", "gunicorn", "requests", "urllib3",
            "msal", "cryptography", "openpyxl", "prometheus_client", "zxcvbn", "segno",
            "billing.close", "billing.exports", "connector.webhooks.dispatcher",
            "azure_sync.service")
LIST_AND_REPORT = """
import hashlib, json, sys
real, hashed = hashlib.scrypt, []
hashlib.scrypt = lambda *a, **k: hashed.append(1) or real(*a, **k)
from connector import cli
code = cli.main(["tenant", "list"])
print(json.dumps({"code": code, "hashed": len(hashed), "modules": sorted(sys.modules)}))
"""


def test_a_command_loads_only_what_it_uses(database_url: str, engine: object,
                                           tmp_path: Path) -> None:
    """Every `connector` command builds the whole parser, of every package: a command
    that never serves, bills, sends a webhook or talks to Entra imports none of those
    (each `connector` command took 1.2 s of CPU before, 0.75 s after), and hashes no
    password (one scrypt hash is 0.3 s; it was made at import)."""
    env = {**os.environ, "CONNECTOR_DATABASE__URL": database_url,
           "CONNECTOR_CONFIG": str(tmp_path / "none.toml")}
    ran = subprocess.run([sys.executable, "-c", LIST_AND_REPORT], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.splitlines()[-1])
    assert report["code"] == 0 and "No tenants yet" in ran.stdout
    assert report["hashed"] == 0
    assert [name for name in UNNEEDED if name in report["modules"]] == []


def test_migrate_is_idempotent(database_url: str, engine: object, tmp_path: Path) -> None:
    for _ in range(2):
        result = connector(database_url, "migrate", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout


def test_migrate_seals_two_factor_secrets_left_in_clear_once_there_is_a_key(
        database_url: str, engine: Any, tmp_path: Path) -> None:
    """Rows from before revision 0029 hold the base32 secret in clear; a migration has no
    key to seal them, so `connector migrate` does it after migrating, and says so when
    there is no key yet (the secrets keep working in clear meanwhile)."""
    from connector import sealed
    from connector.config import AzureSyncSettings

    insert_admin_with_clear_totp(engine)
    keyless = connector(database_url, "migrate", cwd=tmp_path)
    assert keyless.returncode == 0, keyless.stderr
    assert "two-factor secrets stay stored in clear" in keyless.stderr
    assert "encryption_key" in keyless.stderr
    (tmp_path / "var").mkdir()
    key = sealed.new_key()
    (tmp_path / "var" / "secrets.key").write_text(key + "\n")  # the default key file
    keyed = connector(database_url, "migrate", cwd=tmp_path)
    assert keyed.returncode == 0 and "warning" not in keyed.stderr, keyed.stderr
    with engine.connect() as c:
        stored = c.execute(text("SELECT totp_secret FROM admin_accounts")).scalar()
    assert stored and "JBSWY3DPEHPK3PXP" not in stored
    assert sealed.unseal(AzureSyncSettings(encryption_key=key), stored, "", "") \
        == "JBSWY3DPEHPK3PXP"


@pytest.fixture
def unmigrated_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of the same kind as `database_url` that no one has migrated."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}"
        return
    name = f"connector_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL_TEMPLATE.format(db=name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_tenant_list_reads_the_database_as_it_is(unmigrated_url: str, tmp_path: Path
                                                 ) -> None:
    listed = connector(unmigrated_url, "tenant", "list", cwd=tmp_path)
    assert listed.returncode == 1, listed.stdout
    assert "has no connector schema yet" in listed.stderr
    assert "run `connector migrate`" in listed.stderr
    if unmigrated_url.startswith("sqlite"):
        assert not Path(unmigrated_url.removeprefix("sqlite:///")).exists()
    else:
        engine = create_engine(unmigrated_url)
        try:
            assert inspect(engine).get_table_names() == []
        finally:
            engine.dispose()

    assert connector(unmigrated_url, "migrate", cwd=tmp_path).returncode == 0
    listed = connector(unmigrated_url, "tenant", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "No tenants yet" in listed.stdout


def test_tenant_list_on_an_older_schema_says_to_migrate(unmigrated_url: str,
                                                        tmp_path: Path) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    from connector import migrate

    config = migrate.alembic_config()
    head = ScriptDirectory.from_config(config).get_revision("head")
    assert head is not None and isinstance(head.down_revision, str)
    engine = create_engine(unmigrated_url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, head.down_revision)
    finally:
        engine.dispose()
    listed = connector(unmigrated_url, "tenant", "list", cwd=tmp_path)
    assert listed.returncode == 1, listed.stdout
    assert f"revision {head.down_revision}" in listed.stderr
    assert "run `connector migrate`" in listed.stderr


def test_tenant_rename_close_reopen_and_purge(database_url: str, engine: object,
                                              tmp_path: Path) -> None:
    made = json.loads(connector(database_url, "tenant", "create", "Acme", "--json",
                                cwd=tmp_path).stdout)
    renamed = connector(database_url, "tenant", "rename", made["id"], "Acme Holding",
                        cwd=tmp_path)
    assert renamed.returncode == 0 and "'Acme Holding'" in renamed.stdout, renamed.stderr
    closed = connector(database_url, "tenant", "close", made["id"], cwd=tmp_path)
    assert closed.returncode == 0, closed.stderr
    assert "SCIM is refused" in closed.stdout and "connector tenant reopen" in closed.stdout
    again = connector(database_url, "tenant", "close", made["id"], cwd=tmp_path)
    assert again.returncode == 1 and "closed already" in again.stderr
    listed = json.loads(connector(database_url, "tenant", "list", "--json",
                                  cwd=tmp_path).stdout)
    assert listed[0]["name"] == "Acme Holding" and listed[0]["closed_at"]
    # Within the retention period (90 days by default) nothing is purged.
    kept = connector(database_url, "tenant", "purge", cwd=tmp_path)
    assert kept.returncode == 0 and "Purged 0 tenant(s)" in kept.stdout
    reopened = connector(database_url, "tenant", "reopen", made["id"], cwd=tmp_path)
    assert reopened.returncode == 0 and "Reopened" in reopened.stdout
    connector(database_url, "tenant", "rotate-token", made["id"], cwd=tmp_path)
    # The operator at the command line is an admin (docs/events.md, `source`): these
    # were recorded as the connector's own doing ("system").
    with engine.connect() as conn:  # type: ignore[attr-defined]
        sources = conn.execute(text("SELECT kind, source FROM events WHERE tenant_id = :t "
                                    "ORDER BY id"), {"t": made["id"]}).all()
    assert [tuple(row) for row in sources] == [
        ("tenant.created", "admin"), ("tenant.renamed", "admin"), ("tenant.closed", "admin"),
        ("tenant.reopened", "admin"), ("tenant.scim_token_rotated", "admin")]
    connector(database_url, "tenant", "close", made["id"], cwd=tmp_path)
    (tmp_path / "none.toml").write_text("[admin]\nclosed_tenant_retention_days = 0\n")
    dry = connector(database_url, "tenant", "purge", "--dry-run", cwd=tmp_path)
    assert "Would purge 'Acme Holding'" in dry.stdout, dry.stderr
    purged = connector(database_url, "tenant", "purge", cwd=tmp_path)
    assert purged.returncode == 0 and "Purged 'Acme Holding'" in purged.stdout, purged.stderr
    assert json.loads(connector(database_url, "tenant", "list", "--json",
                                cwd=tmp_path).stdout) == []


# -- an operator's mistakes: a plain-words error and a non-zero exit, never a traceback ----


@pytest.fixture
def unreachable_url(database_url: str, tmp_path: Path) -> str:
    """A database of `database_url`'s kind that cannot be opened: PostgreSQL on a port
    nothing listens on (with a password, which must not be shown), SQLite at a path that
    is a directory."""
    if database_url.startswith("sqlite"):
        (tmp_path / "a-directory").mkdir()
        return f"sqlite:///{tmp_path / 'a-directory'}"
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql+psycopg://connector:s3cret@127.0.0.1:{port}/connector"


# A command that migrates first, one that only reads, and serve (whose gevent path
# migrates in a child process).
@pytest.mark.parametrize("command", [["tenant", "create", "Acme"], ["tenant", "list"],
                                     ["serve"]], ids=lambda command: "-".join(command))
def test_an_unreachable_database_is_said_in_words(unreachable_url: str, tmp_path: Path,
                                                  command: list[str]) -> None:
    result = connector(unreachable_url, *command, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "error: cannot use the database " in result.stderr
    assert "Check [database] url (CONNECTOR_DATABASE__URL)" in result.stderr
    assert "s3cret" not in result.stderr
    expected = ("Connection refused" if unreachable_url.startswith("postgresql")
                else "unable to open database file")
    assert expected in result.stderr


@pytest.mark.parametrize(("url", "command", "message"), [
    ("not a url", "migrate", "is not a database URL"),
    ("postgresql+psycopg://connector:s3cret@db:port/connector", "tenant list",
     "is not a database URL"),
    ("mysql://connector:s3cret@db/connector", "migrate", "starts with mysql://"),
    ("postgresql://connector:s3cret@db/connector", "tenant list",
     "starts with postgresql://"),
])
def test_a_database_url_the_connector_cannot_use_says_what_to_write(
        tmp_path: Path, url: str, command: str, message: str) -> None:
    result = connector(url, *command.split(), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr
    assert "postgresql+psycopg://user:password@host:5432/dbname" in result.stderr
    assert "s3cret" not in result.stderr


def test_a_settings_file_that_is_a_directory_is_said_in_words(tmp_path: Path) -> None:
    (tmp_path / "settings").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "connector.cli", "--config", str(tmp_path / "settings"),
         "tenant", "list"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        check=False)
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path / 'settings'}: cannot read the settings " \
        "file (Is a directory)\n"


def test_every_command_says_when_connector_config_names_a_missing_file(tmp_path: Path) -> None:
    """Only `serve` said it: `connector migrate` or `tenant create` with a typo in
    CONNECTOR_CONFIG used the built-in defaults (and their SQLite database) unseen."""
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    note = (f"Note: CONNECTOR_CONFIG names {tmp_path / 'none.toml'}, which does not exist: "
            "using the built-in defaults and the CONNECTOR_<SECTION>__<KEY> variables.\n")
    for args in (["migrate"], ["tenant", "create", "Acme", "--json"], ["tenant", "list"]):
        done = connector(url, *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stderr.startswith(note) and done.stderr.count("Note:") == 1, done.stderr
        assert "Note:" not in done.stdout
    json.loads(connector(url, "tenant", "list", "--json", cwd=tmp_path).stdout)  # stdout: JSON
    (tmp_path / "present.toml").write_text("")
    for config in (["--config", str(tmp_path / "present.toml")], []):
        env = {**os.environ, "CONNECTOR_DATABASE__URL": url,
               "CONNECTOR_CONFIG": str(tmp_path / ("none.toml" if config else "present.toml"))}
        done = subprocess.run([sys.executable, "-m", "connector.cli", *config, "tenant", "list"],
                              env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0 and "Note:" not in done.stderr, done.stderr


@pytest.mark.parametrize("group", ["tenant", "billing"])
def test_a_command_group_without_its_action_lists_the_actions(tmp_path: Path,
                                                              group: str) -> None:
    result = connector("sqlite:///unused.sqlite3", group, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: connector {group} "), result.stderr
    listed = {"tenant": "rotate-token", "billing": "close-due"}[group]
    assert listed in result.stderr and result.stdout == ""


def test_a_reader_that_leaves_early_gets_no_traceback(database_url: str, engine: object,
                                                      tmp_path: Path) -> None:
    """`connector tenant list --json | head -c 100` printed a BrokenPipeError traceback."""
    connector(database_url, "tenant", "create", "Acme", cwd=tmp_path)
    (tmp_path / "none.toml").write_text("")  # a settings file: no note on stderr either
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes a byte
    env = {**os.environ, "CONNECTOR_DATABASE__URL": database_url,
           "CONNECTOR_CONFIG": str(tmp_path / "none.toml")}
    try:
        done = subprocess.run([sys.executable, "-m", "connector.cli", "tenant", "list",
                               "--json"], env=env, cwd=tmp_path, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    finally:
        os.close(write)
    assert done.returncode == 1
    assert done.stderr == ""
