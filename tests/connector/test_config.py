"""Settings: defaults, TOML, environment overrides, and config.example.toml in step."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from connector.config import ConfigError, describe_settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_lists_every_setting_with_its_default() -> None:
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    declared = {(s, k): d for s, k, d, _ in describe_settings()}
    in_example = {(s, k): v for s, table in example.items() for k, v in table.items()}
    assert in_example == declared


def test_example_config_documents_every_setting() -> None:
    text = (ROOT / "config.example.toml").read_text()
    for section, key, _default, doc in describe_settings():
        assert doc, f"{section}.{key} has no doc"
        assert doc.split()[0] in text, f"{section}.{key}'s doc is missing from the example"


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(environ={"CONNECTOR_CONFIG": str(tmp_path / "missing.toml")})
    assert settings.server.port == 8080
    assert settings.database.url.startswith("sqlite:///")


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 9000\n[database]\nurl = "sqlite:///x.db"\n')
    settings = load_settings(path, environ={"CONNECTOR_DATABASE__URL": "sqlite:///y.db",
                                            "CONNECTOR_LOGGING__JSON": "false"})
    assert settings.server.port == 9000
    assert settings.database.url == "sqlite:///y.db"
    assert settings.logging.json is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONNECTOR_SERVER__PORT": "eighty"}, "server.port"),
        ({"CONNECTOR_NOPE__X": "1"}, "unknown section"),
        ({"CONNECTOR_SERVER__NOPE": "1"}, "unknown setting"),
        ({"CONNECTOR_LOGGING__JSON": "maybe"}, "logging.json"),
    ],
)
def test_bad_values_say_which_key(tmp_path: Path, env: dict[str, str], message: str) -> None:
    env = {"CONNECTOR_CONFIG": str(tmp_path / "missing.toml"), **env}
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=env)


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="c.toml"):
        load_settings(path, environ={})
