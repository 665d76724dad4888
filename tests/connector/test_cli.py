"""The `connector` command, run as a user would run it, against both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    second = connector(database_url, "bootstrap", cwd=tmp_path)
    assert "rotate-token" in second.stdout and "scim_" not in second.stdout


def test_migrate_is_idempotent(database_url: str, engine: object, tmp_path: Path) -> None:
    for _ in range(2):
        result = connector(database_url, "migrate", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
