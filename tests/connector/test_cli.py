"""The `connector` command, run as a user would run it, against both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "password" not in second.stdout.split("Admin UI")[-1].split("reset-password")[0]


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
    reset = connector(database_url, "admin", "reset-password", "OPS@acme.io", "--json",
                      cwd=tmp_path)
    new_password = json.loads(reset.stdout)["one_time_password"]
    assert new_password != out["one_time_password"]
    with make_sessionmaker(engine)() as s:
        admins.verify_login(s, "ops@acme.io", new_password)
    listed = connector(database_url, "admin", "list", cwd=tmp_path)
    assert "ops@acme.io  tenant" in listed.stdout.lower()


def test_migrate_is_idempotent(database_url: str, engine: object, tmp_path: Path) -> None:
    for _ in range(2):
        result = connector(database_url, "migrate", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
