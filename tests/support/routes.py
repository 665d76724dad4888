"""Every address of the app, for tests that try each one (tenant isolation, CSRF)."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from werkzeug.routing import Rule


def rules(app: Flask) -> list[Rule]:
    """The app's URL rules, in order of their path."""
    return sorted(app.url_map.iter_rules(), key=lambda r: r.rule)


def path_of(rule: Rule, values: dict[str, Any]) -> str:
    """The rule's path with each <argument> taken from `values`."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: str(values[m.group(1)]), rule.rule)
