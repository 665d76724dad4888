"""docs/operations.md, the Grafana dashboard and the alert rules kept true to what
/metrics exposes: every metric documented, nothing documented or queried that does not
exist, the rules checked and unit-tested by promtool where it is installed."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from flask import Flask

from connector.config import MetricsSettings, Settings
from tests.support.metrics import TOKEN

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NAME = re.compile(r"\bconnector_[a-z_]+")
SERIES_SUFFIXES = ("_bucket", "_count", "_sum")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, metrics=MetricsSettings(token=TOKEN))


def exposition(app: Flask) -> str:
    response = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def exposed(app: Flask) -> set[str]:
    """The metric names as Prometheus shows them (counters with _total)."""
    return {line.split()[2] for line in exposition(app).splitlines()
            if line.startswith("# HELP ")}


def queried(text: str, known: set[str]) -> set[str]:
    """The metric names a text uses, a histogram's series named by the histogram."""
    names = set()
    for name in NAME.findall(text):
        for suffix in SERIES_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in known:
                name = name[: -len(suffix)]
        names.add(name)
    return names


def test_every_metric_is_documented_and_nothing_else(app: Flask) -> None:
    names = exposed(app)
    assert len(names) >= 20
    documented = set(re.findall(r"^\| `(connector_[a-z_]+)` \|", (DOCS / "operations.md")
                                .read_text(), re.M))
    assert documented == names


def test_the_dashboard_and_the_alerts_query_only_what_exists(app: Flask) -> None:
    names = exposed(app)
    dashboard = json.loads((DOCS / "grafana" / "connector-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    rules = yaml.safe_load((DOCS / "prometheus" / "alerts.yml").read_text())
    alerts = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for expr in exprs + alerts:
        assert queried(expr, names) <= names, expr
    documented = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    table = set(re.findall(r"^\| `(Connector[A-Za-z]+)` \|", (DOCS / "operations.md")
                           .read_text(), re.M))
    assert documented == table


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is in Debian's "
                                    "`prometheus` package, not installed here")


@needs_promtool
def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    folder = DOCS / "prometheus"
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run([PROMTOOL, *args], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_finds_nothing_to_lint_in_a_scrape(app: Flask) -> None:
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition(app),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == ""
