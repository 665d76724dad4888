"""The admin API's OpenAPI contract, for tests: the operations it declares and a check that
a real response is what its operation declares (status, content type, headers, body).

Bodies are validated with jsonschema's Draft 2020-12 validator (the dialect of OpenAPI 3.1
schemas) against the spec itself as one resource, so `$ref`s resolve as a client's would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from connector.api import OPENAPI_FILE, PREFIX
from tests.scim.factories import group, patch, user
from tests.support.clients import ScimClient

SPEC: dict[str, Any] = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
METHODS = ("get", "put", "post", "delete", "patch")
_BASE = "urn:connector:openapi"
_REGISTRY: Registry[Any] = Registry().with_resource(
    _BASE, Resource.from_contents(SPEC, default_specification=DRAFT202012))


def operations(spec: dict[str, Any] = SPEC) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path template, operation) for every operation of the spec."""
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")


def find_operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The path template and operation that `METHOD /api/v1/...` calls."""
    relative = path.split("?", 1)[0].removeprefix(PREFIX)
    found = [(t, op) for m, t, op in operations() if m == method.upper()
             and _template_regex(t).match(relative)]
    assert len(found) == 1, f"{method} {path} matches {len(found)} operations of the spec"
    return found[0]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = _REGISTRY.resolver().lookup(_BASE + node["$ref"]).contents
    return node


def check_response(method: str, path: str, response: Any) -> None:
    """Assert that a test client's response is one its operation declares, exactly."""
    template, operation = find_operation(method, path)
    label = f"{method} {template} -> {response.status_code}"
    status = str(response.status_code)
    assert status in operation["responses"], f"{label}: status not declared"
    declared = _resolve(operation["responses"][status])
    for name, header in declared.get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers, f"{label}: header {name} missing"
    content = declared.get("content")
    if not content:
        assert not response.get_data(), f"{label}: a body where none is declared"
        return
    assert response.mimetype in content, f"{label}: {response.mimetype} not declared"
    if response.mimetype not in ("application/json", "application/problem+json"):
        return
    where = ("paths", template, method.lower(), "responses", status)
    if "$ref" in operation["responses"][status]:
        where = tuple(operation["responses"][status]["$ref"][2:].split("/"))
    schema = {"$ref": _BASE + _pointer(*where, "content", response.mimetype, "schema")}
    validator = Draft202012Validator(schema, registry=_REGISTRY,
                                     format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(response.get_json())]
    assert not errors, f"{label}: body breaks the spec:\n" + "\n".join(errors)


# -- a small directory to call the API on ------------------------------------------------


def seed_directory(scim: ScimClient) -> dict[str, Any]:
    """Through SCIM, as an identity provider would: three users (one disabled by the IdP,
    so on the deleted-users list, one deleted outright) and a group with two members."""
    ids = [scim.post("/Users", user(f"seed{n}@example.com")).json["id"] for n in range(4)]
    group_id = scim.post("/Groups", group("Seed group", ids[:2])).json["id"]
    disabled = scim.patch(f"/Users/{ids[2]}", patch({"op": "replace", "path": "active",
                                                      "value": False}))
    assert disabled.status_code == 200, disabled.json
    assert scim.delete(f"/Users/{ids[3]}").status_code == 204
    return {"users": ids[:2], "disabled": ids[2], "deleted": ids[3], "group": group_id}
