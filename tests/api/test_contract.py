"""openapi.json is the one source of the admin API's request rules: bodies are checked
against it at run time, and a body that breaks it is refused naming every member."""

from __future__ import annotations

import pytest
from flask import Flask

from connector.api import PREFIX
from connector.api.contract import body_validator, explain, kinds, member, spec_path
from tests.api.contract import SPEC
from tests.conftest import ApiClient, ScimClient


def test_every_operation_with_a_body_has_its_validator(app: Flask) -> None:
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX + "/"):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS", "GET"}:
            operation = SPEC["paths"][spec_path(rule.rule)][method.lower()]
            if "requestBody" in operation:
                assert body_validator(rule.rule, method) is not None, (method, rule.rule)
                checked += 1
            else:
                assert body_validator(rule.rule, method) is None
    assert checked >= 17


def test_a_body_breaking_the_contract_names_every_member(partner: ApiClient,
                                                         scim: ScimClient) -> None:
    answer = partner.post(f"/tenants/{scim.tenant_id}/users", {
        "userName": "", "guest": "yes", "modules": ["Hybrid", 7], "nickName": "x"})
    assert answer.status_code == 400 and answer.json["type"].endswith(":invalid-request")
    errors = {e["member"]: e["detail"] for e in answer.json["errors"]}
    assert errors == {
        "": "Unknown member(s): nickName; allowed: active, admin, displayName, email, "
            "externalCompanyGuest, familyName, givenName, guest, modules, userName.",
        "guest": "guest must be true or false.",
        "modules[1]": "modules[1] must be text.",
        "userName": "userName needs at least 1 character(s).",
    }
    for detail in errors.values():
        assert detail in answer.json["detail"]
    # Nothing of it was applied.
    assert partner.get(f"/tenants/{scim.tenant_id}/users").json["total"] == 0


def test_a_rule_written_only_in_the_contract_is_enforced(partner: ApiClient,
                                                         scim: ScimClient) -> None:
    """thresholdPercent's range exists only in openapi.json: the handler no longer has
    its own copy, and the contract still holds."""
    answer = partner.put(f"/tenants/{scim.tenant_id}/entra", {
        "directoryId": "d", "clientId": "c", "clientSecret": "s", "thresholdPercent": 150,
        "scopeGroupMode": "everyone"})
    assert answer.status_code == 400
    assert [e["member"] for e in answer.json["errors"]] == ["scopeGroupMode",
                                                           "thresholdPercent"]
    assert answer.json["errors"][1]["detail"] == "thresholdPercent must be at most 100."
    assert "one of \"direct\", \"transitive\"" in answer.json["errors"][0]["detail"]


def test_a_body_that_is_not_an_object(partner: ApiClient, scim: ScimClient) -> None:
    answer = partner.put(f"/tenants/{scim.tenant_id}/users/x/status", ["active"])
    assert answer.status_code == 400
    assert answer.json["detail"] == "The body must be an object."


@pytest.mark.parametrize(("path", "words"), [
    ([], ""), (["a"], "a"), (["activity", 0, "type"], "activity[0].type"),
    ([2], "[2]")])
def test_members_are_named_as_a_client_would(path: list[object], words: str) -> None:
    assert member(path) == words


def test_kinds_in_words() -> None:
    assert kinds({"type": ["string", "null"]}) == "text or null"
    assert kinds({"type": "array", "items": {"type": "string"}}) == "a list of text"
    assert kinds({"type": "array", "items": {"type": "integer"}}) == "a list of whole number"
    assert kinds({"enum": ["a", None]}) == 'one of "a", null'


def test_every_validation_error_has_plain_words() -> None:
    """No schema error of the spec falls through to jsonschema's own message."""
    validator = body_validator("/api/v1/tenants/<tenant_id>/activity", "POST")
    assert validator is not None
    body = {"activity": [{"userId": 1, "type": "sleep", "occurredAt": "now"}] * 1001}
    words = [explain(e)[1] for e in validator.iter_errors(body)]
    assert "activity may have at most 1000 items." in words
    assert "activity[0].userId must be text." in words
    assert any(w.startswith("activity[0].type must be one of") for w in words)
    assert all(": " not in w or w.startswith("Unknown") or w.startswith("Missing")
               for w in words), words
