"""Every form of the admin UI, submitted with 100,000-character values in every field
(issue 17): each answers a redirect with a message or a 4xx page, never a 500, and a
page it redirects to renders; and every state-changing address, without its CSRF token,
changes nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from flask import Flask
from sqlalchemy import Engine

from connector.db import make_sessionmaker
from connector.models import Base
from tests.support.clients import ScimClient
from tests.support.routes import path_of, rules
from tests.web.conftest import WebSession, seed_directory, signed_in

HUGE = "x" * 100_000
TEXT_INPUTS = {"text", "email", "search", "url", "password", "number", "date", "hidden",
               "tel", ""}


class Forms(HTMLParser):
    """The POST forms of a page: (action, [(name, kind, value)])."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, list[tuple[str, str, str]]]] = []
        self._current: list[tuple[str, str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method", "").lower() == "post":
            self._current = []
            self.forms.append((a.get("action", ""), self._current))
        elif self._current is not None and a.get("name"):
            if tag == "input":
                self._current.append((a["name"], a.get("type", "text").lower(),
                                      a.get("value", "")))
            elif tag in ("select", "textarea"):
                self._current.append((a["name"], tag, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def hostile(fields: list[tuple[str, str, str]], csrf: str, max_body: int) -> dict[str, Any]:
    """Every text field as long as the body limit allows (up to 100,000 characters each:
    a form of many fields would otherwise be a 413 and test nothing else)."""
    texts = [f for f in fields if f[0] != "csrf_token"
             and (f[1] in TEXT_INPUTS or f[1] in ("select", "textarea"))]
    size = min(len(HUGE), (max_body - 10_000) // max(len(texts), 1))
    data: dict[str, Any] = {}
    for name, kind, value in fields:
        if name == "csrf_token":
            data[name] = csrf
        elif kind in TEXT_INPUTS or kind in ("select", "textarea"):
            data.setdefault(name, []).append(HUGE[:size])
        else:  # checkboxes, radios: their own value
            data.setdefault(name, []).append(value or "on")
    return data


def test_every_form_takes_huge_values_without_a_server_error(
        app: Flask, engine: Engine, scim: ScimClient) -> None:
    web: WebSession = signed_in(app, engine, "hostile@example.com")
    seed = seed_directory(scim, users=4)
    base = f"/admin/tenants/{scim.tenant_id}"
    user_id = next(iter(seed.users.values()))
    pages = ["/admin/tenants", "/admin/account", "/admin/account/password",
             "/admin/account/notifications", f"{base}/users/{user_id}",
             f"{base}/deleted-users", f"{base}/groups/{seed.groups['Sales']}",
             f"{base}/modules", f"{base}/settings", f"{base}/billing", f"{base}/entra",
             f"{base}/entra/registration", f"{base}/entra/mappings"]
    max_body = app.config["SETTINGS"].server.max_body_bytes
    submitted = set()
    for page in pages:
        response = web.get(page)
        assert response.status_code < 500, page
        if response.status_code != 200:
            continue
        parser = Forms()
        parser.feed(response.get_data(as_text=True))
        for action, fields in parser.forms:
            if not action or action.endswith("/sign-out") or action in submitted:
                continue
            submitted.add(action)
            answer = web.post(action, hostile(fields, web.csrf, max_body), csrf=False)
            where = f"{page}: POST {action} -> {answer.status_code}"
            assert answer.status_code < 500, where
            assert "Traceback" not in answer.get_data(as_text=True), where
            if answer.status_code == 303:
                assert web.get(answer.location).status_code < 500, where
            web.get(page)  # a fresh CSRF token, as a browser would have
    assert len(submitted) >= 10, submitted  # the pages' forms were found and sent


def test_no_change_without_the_csrf_token_on_any_address(
        app: Flask, engine: Engine, scim: ScimClient) -> None:
    """Every state-changing address of the admin UI and of the admin API, called with the
    session cookie and no CSRF token, or a wrong one (a form another site posts): 403,
    and not one row of the database changes."""
    web = signed_in(app, engine, "csrf@example.com")
    seed = seed_directory(scim, users=2)
    web.page(f"/admin/tenants/{scim.tenant_id}/users")
    values = {"tenant_id": scim.tenant_id, "user_id": next(iter(seed.users.values())),
              "group_id": seed.groups["Sales"], "month": "2026-10", "module": "Hybrid",
              "run_id": 1, "endpoint_id": "x", "attempt_id": 1, "token_id": "x",
              "admin_id": "x", "key_id": "x", "entry_id": "1", "decision": "approve"}
    form = {"status": "inactive", "modules": "Hybrid", "name": "Forged", "guest": "on",
            "provisioning_paused": "true", "confirm": "yes", "url": "https://example.com/h"}
    before = _everything(engine)
    wrong = []
    for rule in rules(app):
        if not rule.rule.startswith(("/admin/", "/api/v1/")) or rule.endpoint in (
                "web.sign_in", "web.sign_in_code"):
            continue  # signing in has its own test (tests/web/test_pages.py)
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            if method not in (rule.methods or ()):
                continue
            path = path_of(rule, values)
            for token in (None, "forged" + web.csrf[6:]):
                data = dict(form, **({"csrf_token": token} if token else {}))
                headers = {"X-CSRF-Token": token} if token else {}
                answer = (web.client.open(path, method=method, json={"name": "Forged"},
                                          headers=headers)
                          if path.startswith("/api/") else
                          web.client.open(path, method=method, data=data))
                if answer.status_code != 403:
                    wrong.append(f"{method} {path} ({token}) -> {answer.status_code}")
    assert wrong == []
    assert _everything(engine) == before
    assert web.client.get("/api/v1/me").status_code == 200  # still signed in


def _everything(engine: Engine) -> list[str]:
    with make_sessionmaker(engine)() as s:
        return sorted(repr((t.name, *r)) for t in Base.metadata.sorted_tables
                      for r in s.execute(t.select()))
