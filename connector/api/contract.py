"""The admin API's contract (`openapi.json`) as the one source of its request rules.

Every request body is checked against its operation's `requestBody` schema before the
handler reads it: which members exist, which are required, their types, lengths, ranges
and enumerations are written once, in the spec that clients read. Handlers and admin
actions keep only what a schema cannot say (a name unique in the tenant, a module in its
catalogue, a time zone this machine knows). A body that breaks the contract is a 400
problem that names every member that is wrong and what it must be.

Why jsonschema (Draft 2020-12, the dialect of OpenAPI 3.1) at run time, chosen by the
measured cost per validated body (docs/benchmarks.md, "Measurements behind the code"):
openapi-core validates a whole request (path, query, headers, security, body) but costs
more than the request itself; fastjsonschema is the fastest but knows drafts 04-07 only
and stops at the first error; jsonschema costs a small share of a write request (reads
have no body), names every error, and is the validator the tests check responses with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache
from typing import Any

from flask import request
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from connector.api import OPENAPI_FILE, PREFIX
from connector.http import Problem, read_json

_BASE = "urn:connector:openapi"
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
MAX_LISTED = 10  # errors named in the detail text (all are in `errors`)


@cache
def _spec() -> dict[str, Any]:
    return json.loads(OPENAPI_FILE.read_bytes())


@cache
def _registry() -> Registry[Any]:
    return Registry().with_resource(
        _BASE, Resource.from_contents(_spec(), default_specification=DRAFT202012))


def spec_path(rule: str) -> str:
    """The spec's path template for a Flask URL rule under the API's prefix:
    `/api/v1/tenants/<tenant_id>/entra/runs/<int:run_id>` → `/tenants/{tenant_id}/…`."""
    return _CONVERTER.sub(r"{\1}", rule.removeprefix(PREFIX))


@cache
def body_validator(rule: str, method: str) -> Draft202012Validator | None:
    """The validator of an operation's JSON request body; None if it takes none."""
    operation = _spec()["paths"].get(spec_path(rule), {}).get(method.lower(), {})
    content = operation.get("requestBody", {}).get("content", {})
    schema = (content.get("application/json") or {}).get("schema")
    if schema is None:
        return None
    if "$ref" in schema:  # resolved once here, not on every request
        schema = _registry().resolver().lookup(_BASE + schema["$ref"]).contents
    return Draft202012Validator(schema, registry=_registry())


def request_body() -> dict[str, Any]:
    """The request's JSON body, checked against its operation in the contract."""
    body = read_json()
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    validator = body_validator(rule, request.method)
    if validator is None:
        raise LookupError(f"{request.method} {rule} takes no body in openapi.json")
    errors = sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.path])
    if errors:
        explained = [explain(e) for e in errors]
        raise Problem(400, "Invalid Request", " ".join(d for _m, d in explained[:MAX_LISTED]),
                      "invalid-request",
                      errors=[{"member": m, "detail": d} for m, d in explained])
    return body


# -- errors in plain words -----------------------------------------------------------------


def member(path: Iterable[Any]) -> str:
    """A location in the body as a client names it: `scopeGroups[2]`, `activity[0].type`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def explain(error: ValidationError) -> tuple[str, str]:
    """(member, what is wrong with it and what it must be) for one schema error."""
    where = member(error.absolute_path)
    name = where or "The body"
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    rule, limit = error.validator, error.validator_value
    if rule == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        inside = f" in {where}" if where else ""
        return where, (f"Unknown member(s){inside}: {', '.join(unknown)}; allowed: "
                       f"{', '.join(allowed)}.")
    if rule == "required" and isinstance(error.instance, dict) and isinstance(limit, list):
        missing = [m for m in limit if m not in error.instance]
        inside = f" in {where}" if where else ""
        return where, f"Missing member(s){inside}: {', '.join(missing)}."
    if rule in ("type", "enum", "const"):
        return where, f"{name} must be {kinds(schema)}."
    words = {
        "minLength": f"{name} needs at least {limit} character(s).",
        "maxLength": f"{name} may have at most {limit} characters.",
        "minimum": f"{name} must be at least {limit}.",
        "maximum": f"{name} must be at most {limit}.",
        "minItems": f"{name} needs at least {limit} item(s).",
        "maxItems": f"{name} may have at most {limit} items.",
        "pattern": f"{name} must match {limit}.",
    }
    return where, words.get(str(rule), f"{name}: {error.message}.")


_TYPE_WORDS = {"string": "text", "boolean": "true or false", "integer": "a whole number",
               "number": "a number", "object": "an object", "array": "a list", "null": "null"}


def kinds(schema: dict[str, Any]) -> str:
    """What a schema accepts, in words: `text or null`, `a list of text`, `one of a, b`."""
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    types = schema.get("type", [])
    words = []
    for kind in [types] if isinstance(types, str) else types:
        word = _TYPE_WORDS.get(kind, kind)
        items = schema.get("items")
        if kind == "array" and isinstance(items, dict) and "type" in items:
            word += " of " + kinds(items).removeprefix("a ").removeprefix("an ")
        words.append(word)
    return " or ".join(words) or "a value the contract describes"
