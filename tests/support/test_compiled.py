"""What the suite compiles once (tests/support/compiled.py) is what each app would
compile for itself."""

from __future__ import annotations

import re

from flask import Flask, url_for
from sqlalchemy import Engine

from connector.app import create_app
from connector.config import Settings
from tests.support.compiled import TEMPLATES, fresh_builder, kept_builder


def code_of(builder: object) -> tuple[object, ...]:
    code = builder.__code__  # type: ignore[attr-defined]
    return (code.co_code, code.co_consts, code.co_names, code.co_varnames,
            builder.__defaults__)  # type: ignore[attr-defined]


def test_every_rule_of_two_apps_gets_the_builder_werkzeug_compiles(app: Flask) -> None:
    other = Flask(app.import_name)  # rules with the same text in another map, a default
    other.add_url_rule("/tenants/<tenant_id>/users", "users", lambda tenant_id: "")
    other.add_url_rule("/a/<int:n>", "a", lambda n: "", defaults={"n": 3})
    rules = [*app.url_map.iter_rules(), *other.url_map.iter_rules()]
    assert len(rules) > 100
    for rule in rules:
        for append_unknown in (False, True):
            assert code_of(kept_builder(rule, append_unknown)) == \
                code_of(fresh_builder(rule, append_unknown)), rule.rule
    with app.test_request_context():
        assert url_for("web.user", tenant_id="t 1", user_id="u2", q="x") == \
            "/admin/tenants/t%201/users/u2?q=x"
    with other.test_request_context():
        assert url_for("a") == "/a/3"


def test_a_template_renders_the_same_from_the_kept_bytecode(
        app: Flask, settings: Settings, engine: Engine) -> None:
    first = app.test_client().get("/admin/sign-in").get_data(as_text=True)
    assert TEMPLATES.codes and app.jinja_env.bytecode_cache is TEMPLATES
    second = create_app(settings, engine=engine).test_client().get("/admin/sign-in")
    assert CSRF.sub("", second.get_data(as_text=True)) == CSRF.sub("", first)


CSRF = re.compile(r'name="csrf_token" value="[^"]+"')
