"""Compile what every app compiles alike once per test process, not once per app.

Every test that uses the `app` fixture gets an app of its own. Building one cost ~0.1 s
of CPU, nine tenths of it werkzeug generating and compiling two Python functions per URL
rule (`Rule._compile_builder`, ~140 rules); and each app's Jinja environment compiled
every template it rendered again (~20 ms a template). Both results are the same for every
app, so the suite keeps them:

- a URL builder depends only on the rule's text and parsed parts, its defaults and
  whether unknown arguments are appended; it reads the rule itself through its bound
  `self` when called. The first one compiled for those inputs is handed to every later
  rule with the same inputs. `test_compiled.py` checks that each kept builder is the
  code werkzeug would compile, so a werkzeug release that changes what builders depend
  on fails there, not somewhere confusing.
- templates go through Jinja's own bytecode cache (`Flask.jinja_options`), which keys
  them by name and checks the source's checksum.

Production is untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from flask import Flask
from jinja2.bccache import Bucket, BytecodeCache
from werkzeug.routing.rules import Rule

Builder = Callable[..., tuple[str, str]]
_compile_builder = Rule._compile_builder
_builders: dict[Hashable, Builder] = {}


def builder_key(rule: Rule, append_unknown: bool) -> Hashable:
    """Everything `Rule._compile_builder` reads from the rule (werkzeug 3.1)."""
    defaults = rule.defaults or {}
    constants = tuple((name, rule._converters[name].to_url(defaults[name]))
                      for dynamic, name in rule._trace if dynamic and name in defaults)
    return (rule.rule, append_unknown, tuple(rule._trace), tuple(map(str, defaults)),
            constants)


def kept_builder(self: Rule, append_unknown: bool = True) -> Builder:
    key = builder_key(self, append_unknown)
    found = _builders.get(key)
    if found is None:
        found = _builders[key] = _compile_builder(self, append_unknown)
    return found


def fresh_builder(rule: Rule, append_unknown: bool) -> Builder:
    """The builder werkzeug itself compiles for the rule, for the check."""
    return _compile_builder(rule, append_unknown)


class KeptTemplates(BytecodeCache):
    """Jinja bytecode kept in memory for the test process."""

    def __init__(self) -> None:
        self.codes: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        if bucket.key in self.codes:
            bucket.bytecode_from_string(self.codes[bucket.key])

    def dump_bytecode(self, bucket: Bucket) -> None:
        self.codes[bucket.key] = bucket.bytecode_to_string()


TEMPLATES = KeptTemplates()


def pytest_configure(config: Any) -> None:
    Rule._compile_builder = kept_builder  # type: ignore[method-assign]
    Flask.jinja_options = {**Flask.jinja_options, "bytecode_cache": TEMPLATES}
