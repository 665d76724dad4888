"""The container image's recipe kept in step with the code, without building it.

Building and running the image is tests/container/smoke.sh (`make image-smoke`): it needs
podman and a minute or more, so it stays out of `make test`. These checks catch, in
milliseconds, what would make that image quietly wrong: a package the image leaves out, a
setting name that no longer exists, a build context that ships local state.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from connector.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = (ROOT / "Containerfile").read_text(encoding="utf-8")
SETTING_NAME = re.compile(r"\bCONNECTOR_[A-Z_]+__[A-Z_]+\b")


def _ignore_patterns(name: str) -> list[str]:
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _as_environment(settings: object, name: str) -> str:
    section, _, key = name.removeprefix("CONNECTOR_").lower().partition("__")
    value = getattr(getattr(settings, section, None), key, "1")
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_every_installed_package_is_copied_into_the_image() -> None:
    """`pip install .` in the image installs only what the Containerfile copied: a new
    top-level package must be copied too, or the image imports fail at run time."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "tool"]["setuptools"]["packages"]["find"]
    top_level = {d.name for d in ROOT.iterdir() if (d / "__init__.py").exists()
                 and any(fnmatch.fnmatch(d.name, pattern) for pattern in find["include"])}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", CONTAINERFILE, re.MULTILINE))
    assert top_level == copied


def test_setting_names_in_the_image_and_its_docs_are_real_settings() -> None:
    """Every CONNECTOR_SECTION__KEY the Containerfile sets or docs/container.md tells an
    operator to set is one the connector reads (an unknown one fails at start)."""
    text = CONTAINERFILE + (ROOT / "docs" / "container.md").read_text(encoding="utf-8")
    names = set(SETTING_NAME.findall(text))
    assert "CONNECTOR_DATABASE__URL" in names
    defaults = load_settings(ROOT / "config.example.toml", environ={})
    # Each given its default, spelt as the environment spells it; a name that is no
    # setting gets "1", and load_settings refuses it.
    environ = {name: _as_environment(defaults, name) for name in names}
    load_settings(ROOT / "config.example.toml", environ=environ)


def test_the_image_serves_on_every_address_of_the_container() -> None:
    """serve's default, 127.0.0.1, is unreachable from outside a container."""
    environ = dict(re.findall(r"(CONNECTOR_\w+)=(\S+)", CONTAINERFILE))
    assert load_settings(ROOT / "config.example.toml", environ=environ).server.host == "0.0.0.0"


def test_the_build_context_leaves_local_state_out() -> None:
    """podman reads .containerignore, Docker .dockerignore: the same list, keeping the
    venv, databases and key file, bench results and the git history out."""
    patterns = _ignore_patterns(".containerignore")
    assert patterns == _ignore_patterns(".dockerignore")
    for kept_out in (".venv", "var/", "bench/results/", ".git", "config.toml"):
        assert kept_out in patterns


def test_the_image_runs_as_a_user_and_checks_readiness() -> None:
    assert re.search(r"^USER 10001:10001$", CONTAINERFILE, re.MULTILINE)
    assert "/readyz" in CONTAINERFILE.split("HEALTHCHECK", 1)[1]
    assert re.search(r'^ENTRYPOINT \["connector"\]\nCMD \["serve"\]$', CONTAINERFILE,
                     re.MULTILINE)
