"""The admin API's problem titles (RFC 9457 §3.1.3): one per problem type, every word
capitalised as HTTP's reason phrases are. The same `not-found` type said "Not found" for
an unknown tenant and "Not Found" for an unknown URL; `unsupported-media-type`,
`invalid-request`, `state-conflict` and `not-due` had two titles each too."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from werkzeug.exceptions import default_exceptions

from connector.api import _HTTP_SLUGS
from tests.api.test_api import problem
from tests.support.clients import ApiClient

ROOT = Path(__file__).resolve().parents[2]
# Where admin API problems are made: the connector's own routes and plumbing, and the
# packages' routes nested in the API. (The reporting API and SCIM have their own formats.)
SOURCES = [*(ROOT / "connector").rglob("*.py"), ROOT / "azure_sync" / "views.py",
           ROOT / "billing" / "views.py"]


def http_cased(title: str) -> bool:
    """Every word, and every part of a hyphenated one, begins with a capital or a digit
    ("Not Found", "Too Many Failed Sign-Ins", "Malformed JSON")."""
    return all(part[:1].isupper() or part[:1].isdigit()
               for word in title.split() for part in word.split("-"))


def problems_in_source() -> list[tuple[str, int, str, str]]:
    """(where, status, title, slug) of every `Problem(status, "title", detail, "slug")`
    whose status, title and slug are written out."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "Problem" and len(node.args) >= 4):
                status, title, _detail, slug = node.args[:4]
                if all(isinstance(a, ast.Constant) for a in (status, title, slug)):
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    found.append((where, status.value, title.value, slug.value))  # type: ignore[attr-defined]
    return found


def test_each_problem_type_has_one_title_in_http_casing() -> None:
    found = problems_in_source()
    assert len(found) >= 20  # the scan finds them (a rename of Problem would empty it)
    titles: dict[str, set[str]] = defaultdict(set)
    for where, _status, title, slug in found:
        assert http_cased(title), f"{where}: {title!r}"
        titles[slug].add(title)
    # werkzeug's errors (an unknown URL, a wrong method…) under the same types: their
    # titles are HTTP's reason phrases, so a type shared with one has that phrase.
    for code, slug in _HTTP_SLUGS.items():
        titles[slug].add(default_exceptions[code]().name)
    assert {slug: t for slug, t in titles.items() if len(t) > 1} == {}


def test_not_found_is_said_the_same_for_an_unknown_url_and_an_unknown_tenant(
        partner: ApiClient) -> None:
    unknown_url = problem(partner.get("/no-such-endpoint"), 404, "not-found")
    unknown_tenant = problem(partner.get("/tenants/no-such-tenant"), 404, "not-found")
    assert unknown_url["title"] == unknown_tenant["title"] == "Not Found"


def test_unsupported_media_type_is_said_as_http_says_it(partner: ApiClient) -> None:
    body = problem(partner.post("/tenants", data="name=x",
                                headers={"Content-Type": "text/plain"}),
                   415, "unsupported-media-type")
    assert body["title"] == "Unsupported Media Type"
