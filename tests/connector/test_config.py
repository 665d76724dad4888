"""Settings: defaults, TOML, environment overrides, and config.example.toml in step; the
settings and commands the docs name kept true to the code."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path
from typing import get_args

import pytest

from connector import cli, config, serving
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


# The pages an operator, an admin or a webhook consumer reads: every setting they name
# must be one the connector reads (an unknown one fails at start, naming the variable),
# and a default they state in parentheses after it must be the code's.
DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             ROOT / "config.example.toml"]
BRACKETED = re.compile(r"`\[(\w+)\] (\w+)`(?: \(([^)]*)\))?")  # `[server] port` (8080)
DOTTED = re.compile(r"`(\w+)\.(\w+)`(?: \(([^)]*)\))?")  # `admin.session_hours` (12)
ENVIRONMENT = re.compile(r"\bCONNECTOR_([A-Z_]+?)__([A-Z_]+)\b")
# A stated default: "(30)", "(default 60)", "(15 minutes)", "(200 ms)", "(20 %)".
STATED = re.compile(r"^(?:default )?(\d[\d,]*(?:\.\d+)?)(?: ?(ms|s|%|minutes?|hours?|days?))?"
                    r"(?:$|[;,]| by default)")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "minute": 60, "minutes": 60, "hour": 3600,
                "hours": 3600, "day": 86400, "days": 86400}


def _doc_text(page: Path) -> str:
    return re.sub(r"\s+", " ", page.read_text(encoding="utf-8"))  # names broken over lines


def _other_dotted_names() -> set[str]:
    """Dotted names in the docs that are not settings: event types and the audit log's
    actions (string literals in the packages)."""
    from connector import feed

    literals: set[str] = set(feed.PUBLIC_TYPES.values())
    for package in ("connector", "scim", "azure_sync", "billing"):
        for source in (ROOT / package).rglob("*.py"):
            literals.update(re.findall(r'"(\w+\.\w+)"', source.read_text(encoding="utf-8")))
    return literals


def _stated_default(stated: str, key: str) -> float | None:
    found = STATED.match(stated.strip())
    if found is None:
        return None
    value, unit = float(found[1].replace(",", "")), found[2]
    if unit in UNIT_SECONDS:
        base = next((u for u in ("ms", "seconds", "minutes", "hours", "days")
                     if key.endswith("_" + u)), None)
        if base is not None:
            return value * UNIT_SECONDS[unit] / UNIT_SECONDS["s" if base == "seconds" else base]
    return value


def test_every_setting_the_docs_name_exists_with_the_default_they_state() -> None:
    declared = {(s, k): d for s, k, d, _ in describe_settings()}
    sections = {section for section, _ in declared}
    others = _other_dotted_names()
    wrong = []
    for page in DOC_PAGES:
        text, name = _doc_text(page), page.relative_to(ROOT)
        named = [(m[1], m[2], m[3]) for m in BRACKETED.finditer(text)
                 if (m[1], m[2]) != ("section", "key")]
        named += [(m[1], m[2], m[3]) for m in DOTTED.finditer(text) if m[1] in sections
                  and f"{m[1]}.{m[2]}" not in others and m[2] not in ("py", "md")]
        named += [(m[1].lower(), m[2].lower(), None) for m in ENVIRONMENT.finditer(text)
                  if m[1] != "SECTION"]
        for section, key, stated in named:
            if (section, key) not in declared:
                wrong.append(f"{name}: {section}.{key} is no setting")
                continue
            default = declared[(section, key)]
            said = _stated_default(stated or "", key)
            if said is not None and isinstance(default, int | float) and said != default:
                wrong.append(f"{name}: {section}.{key} ({stated}), but its default is "
                             f"{default}")
    assert not wrong, "\n".join(wrong)


def test_the_webhooks_settings_table_states_the_defaults() -> None:
    text = (ROOT / "docs" / "webhooks.md").read_text(encoding="utf-8")
    table = text.split("## Settings (`[webhooks]`)", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", table, re.MULTILINE))
    declared = {k: d for s, k, d, _ in describe_settings() if s == "webhooks"}
    assert set(rows) == set(declared)
    for key, stated in rows.items():
        assert stated == (str(declared[key]).lower() if isinstance(declared[key], bool)
                          else f'"{declared[key]}"' if isinstance(declared[key], str)
                          else str(declared[key])), key


def _commands() -> dict[str, set[str]]:
    """Every command `connector` runs ("serve", "tenant create"…), with its options."""
    def actions(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(found[0].choices) if found else {}

    commands = {}
    for name, parser in actions(cli._parser()).items():
        for path, leaf in (actions(parser) and {f"{name} {a}": p for a, p in
                                                  actions(parser).items()} or {name: parser}
                           ).items():
            commands[path] = {o for a in leaf._actions for o in a.option_strings}
    return commands


def test_the_readme_lists_every_command_with_options_it_takes() -> None:
    """README.md's Commands table: each `connector` command is in it, and each option it
    shows is one the command takes (`connector sync restart` and `connector webhooks`
    were missing from it)."""
    commands = _commands()
    text = (ROOT / "README.md").read_text(encoding="utf-8").split("## Commands", 1)[1]
    listed: set[str] = set()
    wrong = []
    for row in re.findall(r"^\| (`connector .*?) \| ", text, re.MULTILINE):
        row = row.replace("\\|", "|")  # a | inside a table cell
        group = row.split()[1].strip("`")
        for span in re.findall(r"`([^`]+)`", row):
            words = span.removeprefix("connector ").split()
            if words[0] == group and group not in commands:
                words = words[1:]  # "tenant reopen ID" after "connector tenant close ID"
            path = group if group in commands else f"{group} {words[0]}"
            if path not in commands:
                wrong.append(f"{span}: no command {path!r}")
                continue
            listed.add(path)
            options = {w.split("=")[0].strip("[]()|…") for w in re.split(r"[\s|]", span)
                       if w.lstrip("[(").startswith("--")}
            wrong += [f"{span}: {path} has no {o}" for o in options - commands[path]]
    assert not wrong, "\n".join(wrong)
    assert set(commands) - listed == set()


@pytest.mark.parametrize(("package", "page"), [("billing", "billing.md"),
                                               ("azure_sync", "entra-sync.md")])
def test_the_module_maps_name_every_module(package: str, page: str) -> None:
    """README points at these pages for the packages' module maps; five modules of
    billing/ and three of azure_sync/ were missing from them."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    missing = [module.name for module in sorted((ROOT / package).glob("*.py"))
               if module.name != "__init__.py" and f"{module.name}`" not in text]
    assert not missing, f"docs/{page} does not name {missing}"
