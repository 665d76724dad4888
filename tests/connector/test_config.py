"""Settings: defaults, TOML, environment overrides, and config.example.toml in step."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import get_args

import pytest

from connector import config, serving
from connector.config import ConfigError, Settings, describe_settings, load_settings

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


@pytest.mark.parametrize(("content", "message"), [
    (None, r"c\.toml: cannot read the settings file \(Is a directory\)"),
    (b"\xff\xfe[server]\n", r"c\.toml: not a TOML settings file \(not UTF-8 text\)"),
])
def test_an_unreadable_file_is_reported(tmp_path: Path, content: bytes | None,
                                        message: str) -> None:
    """A directory or a binary file where the settings file should be: a ConfigError (the
    command says it in one line), not an OSError or UnicodeDecodeError (a traceback)."""
    path = tmp_path / "c.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={"CONNECTOR_CONFIG": str(path)})


def test_an_unknown_key_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    """Not the settings file (which may not exist): the operator fixes the variable."""
    path = tmp_path / "c.toml"
    path.write_text("[server]\nport = 9000\n")
    env = {"CONNECTOR_CONFIG": str(path), "CONNECTOR_SERVER__PROT": "1"}
    with pytest.raises(ConfigError, match=r"^CONNECTOR_SERVER__PROT: unknown setting\(s\) "
                       r"\['prot'\] in \[server\]\. Its settings are host, port, "):
        load_settings(environ=env)
    env = {"CONNECTOR_CONFIG": str(path), "CONNECTOR_SERVERS__PORT": "1"}
    with pytest.raises(ConfigError, match=r"^CONNECTOR_SERVERS__PORT: unknown section\(s\) "
                       r"\['servers'\]\. The sections are server, database, "):
        load_settings(environ=env)
    path.write_text("[server]\nprot = 1\n[servers]\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: unknown section"):
        load_settings(environ={"CONNECTOR_CONFIG": str(path)})
    path.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: unknown setting"):
        load_settings(environ={"CONNECTOR_CONFIG": str(path)})


# Every setting that takes one of a closed set of values, with a typo of one of them.
CLOSED_SETTINGS = [
    ("server", "worker_class", "gevnet"),
    ("server", "schedulers", "workers"),
    ("admin", "secure_cookies", "allways"),
    ("billing", "mail_security", "ssl"),
    ("logging", "level", "verbose"),
]


def test_every_closed_setting_is_tested() -> None:
    closed = {(section, key) for section, key, _typo in CLOSED_SETTINGS}
    literal = {(section, key) for section, cls in config._SECTION_TYPES.items()
               for key in config._choices(cls)}
    assert closed == literal


@pytest.mark.parametrize(("section", "key", "typo"), CLOSED_SETTINGS)
def test_a_typo_in_the_file_fails_naming_the_key(tmp_path: Path, section: str, key: str,
                                                 typo: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[{section}]\n{key} = "{typo}"\n')
    with pytest.raises(ConfigError, match=rf"^{section}\.{key} must be one of .*; got '{typo}'$"):
        load_settings(path, environ={})


@pytest.mark.parametrize(("section", "key", "typo"), CLOSED_SETTINGS)
def test_a_typo_in_the_environment_fails_naming_the_key(tmp_path: Path, section: str,
                                                        key: str, typo: str) -> None:
    env = {"CONNECTOR_CONFIG": str(tmp_path / "missing.toml"),
           f"CONNECTOR_{section.upper()}__{key.upper()}": typo}
    with pytest.raises(ConfigError, match=rf"^{section}\.{key} must be one of .*; got '{typo}'$"):
        load_settings(environ=env)


def test_the_message_lists_the_choices(tmp_path: Path) -> None:
    env = {"CONNECTOR_CONFIG": str(tmp_path / "missing.toml"),
           "CONNECTOR_SERVER__WORKER_CLASS": "gevnet"}
    with pytest.raises(ConfigError) as raised:
        load_settings(environ=env)
    assert str(raised.value) == ("server.worker_class must be one of gthread, gevent, sync; "
                                 "got 'gevnet'")


def test_a_closed_setting_that_is_not_a_string_fails(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[admin]\nsecure_cookies = true\n")
    with pytest.raises(ConfigError, match=r"^admin\.secure_cookies must be one of .*; got True$"):
        load_settings(path, environ={})


@pytest.mark.parametrize(("section", "key", "_typo"), CLOSED_SETTINGS)
def test_each_choice_is_accepted(tmp_path: Path, section: str, key: str, _typo: str) -> None:
    cls = config._SECTION_TYPES[section]
    for choice in config._choices(cls)[key]:
        settings = load_settings(environ={"CONNECTOR_CONFIG": str(tmp_path / "missing.toml")},
                                 overrides={section: {key: choice}})
        assert getattr(getattr(settings, section), key) == choice


def test_the_defaults_are_among_the_choices() -> None:
    for section, cls in config._SECTION_TYPES.items():
        defaults = getattr(Settings(), section)
        for key, choices in config._choices(cls).items():
            assert getattr(defaults, key) in choices, f"{section}.{key}"


def test_the_log_level_takes_any_case(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[logging]\nlevel = "debug"\n')
    assert load_settings(path, environ={}).logging.level == "DEBUG"
    env = {"CONNECTOR_CONFIG": str(path), "CONNECTOR_LOGGING__LEVEL": "Warning"}
    assert load_settings(environ=env).logging.level == "WARNING"


def test_other_choices_are_exact(tmp_path: Path) -> None:
    env = {"CONNECTOR_CONFIG": str(tmp_path / "missing.toml"),
           "CONNECTOR_BILLING__MAIL_SECURITY": "TLS"}
    with pytest.raises(ConfigError, match=r"^billing\.mail_security must be one of"):
        load_settings(environ=env)


def test_the_serve_command_offers_the_settings_worker_classes() -> None:
    assert get_args(config.WorkerClass) == serving.WORKER_CLASSES
