"""The PATCH engine (RFC 7644 §3.5.2), with the shapes Entra ID and Okta send. No database."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scim.errors import (
    InvalidFilter,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NoTarget,
    ScimError,
)
from scim.patch import MemberOp, PatchOutcome, apply_patch, parse_operations
from scim.schemas import (
    CONNECTOR_USER,
    ENTERPRISE_USER,
    GROUP,
    GROUP_TYPE,
    PATCH_OP,
    USER,
    USER_TYPE,
    Attribute,
    ResourceType,
    Schema,
)

SAMPLES = Path(__file__).parent / "samples" / "patch"
TYPES = {"User": USER_TYPE, "Group": GROUP_TYPE}


def body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def patched(resource: dict[str, Any], *operations: dict[str, Any],
            resource_type: ResourceType = USER_TYPE) -> dict[str, Any]:
    return apply_patch(resource, body(*operations), resource_type).resource


def member_ops(*operations: dict[str, Any]) -> tuple[MemberOp, ...]:
    return apply_patch(a_group(), body(*operations), GROUP_TYPE).member_ops


def a_user(**extra: Any) -> dict[str, Any]:
    """A user as the store renders it (readOnly attributes included)."""
    user: dict[str, Any] = {
        "schemas": [USER],
        "id": "u-1",
        "userName": "ann@example.com",
        "displayName": "Ann",
        "name": {"givenName": "Ann", "familyName": "Smith"},
        "active": True,
        "emails": [{"value": "ann@example.com", "type": "work", "primary": True}],
        "groups": [{"value": "g-1", "display": "Eng", "type": "direct"}],
        "meta": {"resourceType": "User", "version": 'W/"3"',
                 "created": "2024-01-01T00:00:00Z"},
    }
    user.update(extra)
    return user


def a_group(**extra: Any) -> dict[str, Any]:
    """A group as the caller passes it: without `members`."""
    group = {"schemas": [GROUP], "id": "g-1", "displayName": "Eng",
             "meta": {"resourceType": "Group", "version": 'W/"1"'}}
    group.update(extra)
    return group


def with_manager(manager: dict[str, Any]) -> dict[str, Any]:
    return a_user(schemas=[USER, ENTERPRISE_USER],
                  **{ENTERPRISE_USER: {"department": "Sales", "manager": manager}})


def emails(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return list(resource.get("emails", []))


# -- RFC 7644 §3.5.2 examples, kept as sample files ------------------------------------


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_rfc_examples(sample: Path) -> None:
    case = json.loads(sample.read_text())
    outcome = apply_patch(case["resource"], case["request"], TYPES[case["resourceType"]])
    assert outcome.resource == case["expected"]
    assert outcome.member_ops == tuple(
        MemberOp(op["action"], tuple(op["values"])) for op in case["memberOps"])


# -- the request body --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    None,
    [],
    {"Operations": [{"op": "add", "path": "title", "value": "x"}]},
    {"schemas": [USER], "Operations": [{"op": "add", "path": "title", "value": "x"}]},
    {"schemas": PATCH_OP, "Operations": [{"op": "add", "path": "title", "value": "x"}]},
    {"schemas": [PATCH_OP]},
    {"schemas": [PATCH_OP], "Operations": []},
    {"schemas": [PATCH_OP], "Operations": {"op": "add"}},
    {"schemas": [PATCH_OP], "Operations": ["add"]},
    {"schemas": [PATCH_OP], "Operations": [{"path": "title", "value": "x"}]},
    {"schemas": [PATCH_OP], "Operations": [{"op": "move", "path": "title", "value": "x"}]},
    {"schemas": [PATCH_OP], "Operations": [{"op": 1, "path": "title", "value": "x"}]},
    {"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": 7, "value": "x"}]},
], ids=repr)
def test_malformed_bodies_are_invalid_syntax(bad: Any) -> None:
    with pytest.raises(InvalidSyntax):
        apply_patch(a_user(), bad, USER_TYPE)


def test_schema_urn_and_member_names_ignore_case() -> None:
    request = {"schemas": [PATCH_OP.upper()],
               "operations": [{"OP": "replace", "Path": "title", "Value": "Boss"}]}
    assert apply_patch(a_user(), request, USER_TYPE).resource["title"] == "Boss"


@pytest.mark.parametrize("op", ["add", "Add", "ADD", "replace", "Replace", "REPLACE"])
def test_op_names_ignore_case(op: str) -> None:
    assert patched(a_user(), {"op": op, "path": "title", "value": "Boss"})["title"] == "Boss"


@pytest.mark.parametrize("op", ["add", "replace"])
def test_add_and_replace_need_a_value(op: str) -> None:
    with pytest.raises(InvalidValue, match="needs a 'value'"):
        patched(a_user(), {"op": op, "path": "title"})


def test_remove_needs_a_path() -> None:
    with pytest.raises(NoTarget):
        patched(a_user(), {"op": "remove"})
    with pytest.raises(NoTarget):
        patched(a_user(), {"op": "Remove", "path": "  ", "value": {"title": "x"}})


def test_parse_operations_lowers_op_and_strips_path() -> None:
    ops = parse_operations(body({"op": "Remove", "path": " title "},
                                {"op": "Add", "path": "", "value": {"title": "x"}}))
    assert [(o.op, o.path, o.has_value) for o in ops] == [
        ("remove", "title", False), ("add", None, True)]


def test_the_input_is_never_mutated() -> None:
    user = a_user()
    before = copy.deepcopy(user)
    request = body({"op": "add", "path": "emails",
                    "value": [{"value": "b@x.org", "primary": True}]},
                   {"op": "replace", "path": "name.givenName", "value": "Anne"})
    request_before = copy.deepcopy(request)
    outcome = apply_patch(user, request, USER_TYPE)
    assert user == before and request == request_before
    assert outcome.resource["emails"][0]["primary"] is False
    outcome.resource["emails"].clear()
    assert user == before


def test_operations_apply_in_order_and_are_all_or_nothing() -> None:
    out = patched(a_user(), {"op": "replace", "path": "title", "value": "One"},
                  {"op": "replace", "path": "title", "value": "Two"})
    assert out["title"] == "Two"
    user = a_user()
    with pytest.raises(InvalidPath):
        patched(user, {"op": "replace", "path": "title", "value": "x"},
                {"op": "replace", "path": "nope", "value": 1})
    assert "title" not in user


# -- add (RFC 7644 §3.5.2.1) -------------------------------------------------------------


def test_add_without_path_merges_and_appends_without_duplicates() -> None:
    out = patched(a_user(), {"op": "add", "value": {
        "title": "Engineer",
        "emails": [{"value": "ANN@example.com", "type": "work"},
                   {"value": "ann@home.example", "type": "home"}]}})
    assert out["title"] == "Engineer"
    # The known address is merged into (taking the client's spelling), not repeated.
    assert emails(out) == [{"value": "ANN@example.com", "type": "work", "primary": True},
                           {"value": "ann@home.example", "type": "home"}]


def test_add_to_a_multi_valued_attribute_appends() -> None:
    out = patched(a_user(), {"op": "add", "path": "phoneNumbers",
                             "value": {"value": "+1 555", "type": "work"}})
    out = patched(out, {"op": "add", "path": "phoneNumbers",
                        "value": [{"value": "+1 666", "type": "mobile"},
                                  {"value": "+1 555", "type": "work"}]})
    assert out["phoneNumbers"] == [{"value": "+1 555", "type": "work"},
                                   {"value": "+1 666", "type": "mobile"}]


def test_add_of_a_known_value_merges_into_it() -> None:
    out = patched(a_user(), {"op": "add", "path": "emails",
                             "value": [{"value": "ann@example.com", "display": "Ann"}]})
    assert emails(out) == [{"value": "ann@example.com", "type": "work", "primary": True,
                            "display": "Ann"}]


def test_add_to_a_simple_multi_valued_attribute() -> None:
    path = f"{CONNECTOR_USER}:modules"
    out = patched(a_user(), {"op": "add", "path": path, "value": ["chat", "tasks"]},
                  {"op": "add", "path": path, "value": "Chat"})
    assert out[CONNECTOR_USER] == {"modules": ["chat", "tasks"]}
    assert CONNECTOR_USER in out["schemas"]


def test_add_on_a_single_value_replaces_it() -> None:
    assert patched(a_user(), {"op": "add", "path": "displayName", "value": "A."})[
        "displayName"] == "A."


def test_add_sub_attribute_keeps_the_others() -> None:
    out = patched(a_user(), {"op": "add", "path": "name.middleName", "value": "B"})
    assert out["name"] == {"givenName": "Ann", "familyName": "Smith", "middleName": "B"}
    out = patched({"schemas": [USER], "userName": "x"},
                  {"op": "add", "path": "name.givenName", "value": "Ann"})
    assert out["name"] == {"givenName": "Ann"}


def test_add_complex_merges_sub_attributes() -> None:
    out = patched(a_user(), {"op": "add", "path": "name", "value": {"formatted": "Ann Smith"}})
    assert out["name"] == {"givenName": "Ann", "familyName": "Smith", "formatted": "Ann Smith"}


def test_add_urn_qualified_extension_attribute() -> None:
    out = patched(a_user(), {"op": "add", "path": f"{ENTERPRISE_USER}:department",
                             "value": "R&D"})
    assert out[ENTERPRISE_USER] == {"department": "R&D"}
    assert out["schemas"] == [USER, ENTERPRISE_USER]


def test_add_urn_qualified_core_attribute() -> None:
    assert patched(a_user(), {"op": "add", "path": f"{USER}:title", "value": "x"})["title"] == "x"


# -- replace (RFC 7644 §3.5.2.3) ----------------------------------------------------------


def test_replace_without_path_replaces_the_given_keys() -> None:
    out = patched(a_user(), {"op": "replace", "value": {"displayName": "A", "title": "T"}})
    assert (out["displayName"], out["title"], out["userName"]) == ("A", "T", "ann@example.com")


def test_replace_multi_valued_replaces_the_list() -> None:
    out = patched(a_user(), {"op": "replace", "path": "emails",
                             "value": [{"value": "new@example.com", "type": "home"}]})
    assert emails(out) == [{"value": "new@example.com", "type": "home"}]


def test_replace_complex_leaves_unnamed_sub_attributes() -> None:
    out = patched(a_user(), {"op": "replace", "path": "name", "value": {"familyName": "Jones"}})
    assert out["name"] == {"givenName": "Ann", "familyName": "Jones"}


def test_replace_sub_attribute() -> None:
    out = patched(a_user(), {"op": "replace", "path": "name.givenName", "value": "Anne"})
    assert out["name"] == {"givenName": "Anne", "familyName": "Smith"}


@pytest.mark.parametrize("op", ["add", "replace"])
def test_null_unsets(op: str) -> None:
    out = patched(a_user(), {"op": op, "path": "displayName", "value": None},
                  {"op": op, "value": {"emails": None, "name.givenName": None}})
    assert "displayName" not in out and "emails" not in out
    assert out["name"] == {"familyName": "Smith"}


def test_replace_with_an_empty_list_unsets() -> None:
    assert "emails" not in patched(a_user(), {"op": "replace", "path": "emails", "value": []})


def test_a_required_attribute_cannot_be_removed() -> None:
    # RFC 7644 §3.5.2.2: removing a required attribute fails with scimType "mutability".
    with pytest.raises(Mutability, match="userName"):
        patched(a_user(), {"op": "replace", "path": "userName", "value": None})
    with pytest.raises(Mutability, match="userName") as raised:
        patched(a_user(), {"op": "remove", "path": "userName"})
    assert raised.value.scim_type == "mutability" and raised.value.status == 400
    with pytest.raises(Mutability, match="displayName"):
        patched(a_group(), {"op": "remove", "path": "displayName"}, resource_type=GROUP_TYPE)


def test_unknown_attribute_is_invalid_path() -> None:
    with pytest.raises(InvalidPath, match="nope"):
        patched(a_user(), {"op": "replace", "path": "nope", "value": 1})
    with pytest.raises(InvalidPath, match="nope"):
        patched(a_user(), {"op": "replace", "value": {"nope": 1}})
    with pytest.raises(InvalidPath):
        patched(a_user(), {"op": "replace", "path": "name.nope", "value": "x"})
    with pytest.raises(InvalidPath):
        patched(a_user(), {"op": "remove", "path": "emails[type eq \"work\"].nope"})


# -- value filters -----------------------------------------------------------------------


def test_filtered_sub_attribute_updates_matching_elements_only() -> None:
    user = a_user(emails=[{"value": "a@work", "type": "work"}, {"value": "a@home", "type": "home"}])
    out = patched(user, {"op": "replace", "path": 'emails[type eq "work"].value', "value": "b@w"})
    assert emails(out) == [{"value": "b@w", "type": "work"}, {"value": "a@home", "type": "home"}]


@pytest.mark.parametrize("op", ["Add", "Replace"])
def test_create_by_patch_when_no_element_matches(op: str) -> None:
    user = a_user()
    del user["emails"]
    out = patched(user, {"op": op, "path": 'emails[type eq "work"].value', "value": "a@b"})
    assert emails(out) == [{"type": "work", "value": "a@b"}]


def test_ops_on_one_filter_build_one_element() -> None:
    user = a_user(emails=[{"value": "h@home", "type": "home", "primary": True}])
    out = patched(user,
                  {"op": "Add", "path": 'emails[type eq "work"].value', "value": "w@work"},
                  {"op": "Add", "path": 'emails[type eq "work"].primary', "value": "True"},
                  {"op": "Add", "path": 'emails[type eq "work"].display', "value": "Work"})
    assert emails(out) == [{"value": "h@home", "type": "home", "primary": False},
                           {"type": "work", "value": "w@work", "primary": True,
                            "display": "Work"}]


def test_create_by_patch_with_several_eq_conditions() -> None:
    out = patched({"schemas": [USER], "userName": "x"},
                  {"op": "add", "path": 'addresses[type eq "work" and country eq "FR"].locality',
                   "value": "Lyon"})
    assert out["addresses"] == [{"type": "work", "country": "FR", "locality": "Lyon"}]


@pytest.mark.parametrize("path", [
    'emails[type eq "work" or type eq "home"].value',
    'emails[value co "@"].value',
    'emails[not (type eq "work")].value',
    'emails[type eq "work" and type eq "home"].value',
])
def test_create_by_patch_needs_eq_conditions(path: str) -> None:
    with pytest.raises(NoTarget):
        patched({"schemas": [USER], "userName": "x"}, {"op": "replace", "path": path,
                                                        "value": "a@b"})


def test_filtered_add_without_sub_attribute_merges() -> None:
    out = patched(a_user(), {"op": "add", "path": 'emails[type eq "work"]',
                             "value": {"display": "Work mail"}})
    assert emails(out) == [{"value": "ann@example.com", "type": "work", "primary": True,
                            "display": "Work mail"}]


def test_filtered_replace_without_sub_attribute_replaces_the_element() -> None:
    out = patched(a_user(), {"op": "replace", "path": 'emails[type eq "work"]',
                             "value": {"value": "new@example.com", "type": "work"}})
    assert emails(out) == [{"value": "new@example.com", "type": "work"}]


def test_filtered_null_on_nothing_does_nothing() -> None:
    out = patched(a_user(), {"op": "replace", "path": 'emails[type eq "home"].value',
                             "value": None})
    assert emails(out) == emails(a_user())


def test_filter_compares_booleans_and_case_insensitive_strings() -> None:
    out = patched(a_user(), {"op": "replace", "path": 'emails[primary eq true].type',
                             "value": "home"},
                  {"op": "replace", "path": 'emails[TYPE eq "HOME"].display', "value": "H"})
    assert emails(out) == [{"value": "ann@example.com", "type": "home", "primary": True,
                            "display": "H"}]


def test_bad_filter_is_invalid_filter() -> None:
    with pytest.raises(InvalidFilter):
        patched(a_user(), {"op": "remove", "path": 'emails[type eq]'})


def test_sub_attribute_of_every_element() -> None:
    user = a_user(emails=[{"value": "a", "type": "work"}, {"value": "b", "type": "home"}])
    out = patched(user, {"op": "replace", "path": "emails.display", "value": "x"})
    assert [e["display"] for e in emails(out)] == ["x", "x"]
    out = patched(out, {"op": "remove", "path": "emails.display"})
    assert emails(out) == emails(user)


# -- remove (RFC 7644 §3.5.2.2) ------------------------------------------------------------


def test_remove_attribute() -> None:
    out = patched(a_user(), {"op": "remove", "path": "displayName"},
                  {"op": "remove", "path": "emails"}, {"op": "remove", "path": "name"})
    assert not {"displayName", "emails", "name"} & out.keys()


def test_remove_what_is_not_there_succeeds() -> None:
    out = patched(a_user(), {"op": "remove", "path": "title"},
                  {"op": "remove", "path": 'emails[type eq "home"]'},
                  {"op": "remove", "path": f"{ENTERPRISE_USER}:manager"},
                  {"op": "remove", "path": "phoneNumbers", "value": [{"value": "1"}]})
    assert out == a_user()


def test_remove_filtered_elements() -> None:
    user = a_user(emails=[{"value": "a", "type": "work"}, {"value": "b", "type": "home"}])
    out = patched(user, {"op": "remove", "path": 'emails[type eq "work"]'})
    assert emails(out) == [{"value": "b", "type": "home"}]
    assert "emails" not in patched(out, {"op": "remove", "path": 'emails[type eq "home"]'})


def test_remove_filtered_sub_attribute() -> None:
    user = a_user(emails=[{"value": "a", "type": "work", "display": "A"},
                          {"value": "b", "type": "home", "display": "B"}])
    out = patched(user, {"op": "remove", "path": 'emails[type eq "work"].display'})
    assert emails(out) == [{"value": "a", "type": "work"},
                           {"value": "b", "type": "home", "display": "B"}]


def test_remove_with_value_takes_out_only_those() -> None:
    user = a_user(emails=[{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "home"},
                          {"value": "c@x", "type": "other"}])
    out = patched(user, {"op": "Remove", "path": "emails",
                         "value": [{"value": "A@X"}, {"value": "c@x", "type": "home"}]})
    assert emails(out) == [{"value": "b@x", "type": "home"}, {"value": "c@x", "type": "other"}]


def test_remove_last_sub_attribute_removes_the_complex() -> None:
    out = patched(a_user(name={"givenName": "Ann"}), {"op": "remove", "path": "name.givenName"})
    assert "name" not in out


def test_remove_last_extension_attribute_drops_the_extension() -> None:
    user = a_user(schemas=[USER, ENTERPRISE_USER], **{ENTERPRISE_USER: {"department": "S"}})
    out = patched(user, {"op": "remove", "path": f"{ENTERPRISE_USER}:department"})
    assert ENTERPRISE_USER not in out and out["schemas"] == [USER]


def test_remove_a_whole_extension_by_its_urn() -> None:
    out = patched(with_manager({"value": "m"}), {"op": "remove", "path": ENTERPRISE_USER})
    assert ENTERPRISE_USER not in out and out["schemas"] == [USER]
    with pytest.raises(InvalidPath):
        patched(a_user(), {"op": "remove", "path": USER})


# -- primary (RFC 7643 §2.4) ---------------------------------------------------------------


def test_a_new_primary_value_demotes_the_others() -> None:
    out = patched(a_user(), {"op": "add", "path": "emails",
                             "value": [{"value": "b@x", "type": "home", "primary": "True"}]})
    assert [(e["value"], e["primary"]) for e in emails(out)] == [
        ("ann@example.com", False), ("b@x", True)]


def test_setting_primary_through_a_filter_demotes_the_others() -> None:
    user = a_user(emails=[{"value": "a", "type": "work", "primary": True},
                          {"value": "b", "type": "home"}])
    out = patched(user, {"op": "replace", "path": 'emails[type eq "home"].primary',
                         "value": True})
    assert [e.get("primary") for e in emails(out)] == [False, True]


def test_replacing_a_list_keeps_one_primary() -> None:
    out = patched(a_user(), {"op": "replace", "path": "emails", "value": [
        {"value": "a", "primary": True}, {"value": "b", "primary": True}]})
    assert [e["primary"] for e in emails(out)] == [True, False]


# -- Microsoft Entra ID shapes ---------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("False", False), ("True", True), ("false", False), ("TRUE", True), (False, False)])
def test_entra_booleans_as_strings(value: Any, expected: bool) -> None:
    out = patched(a_user(), {"op": "Replace", "path": "active", "value": value})
    assert out["active"] is expected


def test_entra_booleans_inside_objects_and_lists() -> None:
    out = patched(a_user(), {"op": "Add", "value": {
        "emails": [{"value": "b@x", "type": "home", "primary": "true"}],
        CONNECTOR_USER: {"admin": "True", "paidHourly": "False"},
        "active": "False"}})
    assert out["active"] is False
    assert emails(out)[-1]["primary"] is True
    assert out[CONNECTOR_USER] == {"admin": True, "paidHourly": False}


def test_strings_stay_strings_for_string_attributes() -> None:
    assert patched(a_user(), {"op": "replace", "path": "title", "value": "True"})["title"] == "True"


def test_entra_default_user_update() -> None:
    out = patched(a_user(), {"op": "Replace", "path": 'emails[type eq "work"].value',
                             "value": "updatedEmail@microsoft.com"},
                  {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"})
    assert emails(out) == [{"value": "updatedEmail@microsoft.com", "type": "work",
                            "primary": True}]
    assert out["name"]["familyName"] == "updatedFamilyName"


def test_entra_no_path_replace_with_dotted_and_urn_keys() -> None:
    out = patched(a_user(), {"op": "Replace", "value": {
        "displayName": "x", "name.givenName": "y",
        f"{ENTERPRISE_USER}:department": "Sales",
        f"{ENTERPRISE_USER}:manager": "id123",
        'emails[type eq "work"].value': "w@x",
        'phoneNumbers[type eq "mobile"].value': "+1 555"}})
    assert (out["displayName"], out["name"]["givenName"]) == ("x", "y")
    assert out[ENTERPRISE_USER] == {"department": "Sales", "manager": {"value": "id123"}}
    assert emails(out)[0]["value"] == "w@x"
    assert out["phoneNumbers"] == [{"type": "mobile", "value": "+1 555"}]


def test_entra_extension_as_one_value_key() -> None:
    out = patched(a_user(), {"op": "add", "value": {ENTERPRISE_USER: {"costCenter": "42"}}})
    assert out[ENTERPRISE_USER] == {"costCenter": "42"}
    out = patched(a_user(), {"op": "add", "path": ENTERPRISE_USER, "value": {"division": "D"}})
    assert out[ENTERPRISE_USER] == {"division": "D"}


@pytest.mark.parametrize("value", [
    "id123", {"value": "id123"}, [{"value": "id123"}], [{"$ref": None, "value": "id123"}],
    {"value": "id123", "displayName": "The Boss"}])
@pytest.mark.parametrize("op", ["Add", "Replace"])
def test_entra_manager_shapes(op: str, value: Any) -> None:
    out = patched(a_user(), {"op": op, "path": f"{ENTERPRISE_USER}:manager", "value": value})
    assert out[ENTERPRISE_USER] == {"manager": {"value": "id123"}}
    out = patched(a_user(), {"op": op, "value": {f"{ENTERPRISE_USER}:manager": value}})
    assert out[ENTERPRISE_USER] == {"manager": {"value": "id123"}}


def test_manager_is_replaced_whole() -> None:
    out = patched(with_manager({"value": "old", "displayName": "Old Boss"}),
                  {"op": "replace", "path": f"{ENTERPRISE_USER}:manager", "value": "new"})
    assert out[ENTERPRISE_USER]["manager"] == {"value": "new"}


@pytest.mark.parametrize("value", ["", None, [], {"value": ""}, [{"value": None}]])
def test_entra_empty_manager_removes_it(value: Any) -> None:
    out = patched(with_manager({"value": "old", "displayName": "Old"}),
                  {"op": "Replace", "path": f"{ENTERPRISE_USER}:manager", "value": value})
    assert out[ENTERPRISE_USER] == {"department": "Sales"}


def test_entra_remove_manager() -> None:
    out = patched(with_manager({"value": "old"}),
                  {"op": "Remove", "path": f"{ENTERPRISE_USER}:manager",
                   "value": [{"value": "old"}]})
    assert out[ENTERPRISE_USER] == {"department": "Sales"}


def test_entra_app_role_assignment() -> None:
    out = patched(a_user(), {"op": "Add", "path": "roles", "value": [
        {"primary": "False", "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}]})
    assert out["roles"] == [{"primary": False, "type": "WindowsAzureActiveDirectoryRole",
                             "value": "Admin"}]


def test_manager_value_path() -> None:
    out = patched(with_manager({"value": "old", "displayName": "Old"}),
                  {"op": "remove", "path": f"{ENTERPRISE_USER}:manager.value"})
    assert out[ENTERPRISE_USER] == {"department": "Sales"}


def test_unknown_schema_urns_are_ignored() -> None:
    other = "urn:ietf:params:scim:schemas:extension:CustomExtension:2.0:User"
    out = patched(a_user(), {"op": "Add", "path": f"{other}:costCenter", "value": "1"},
                  {"op": "Remove", "path": f"{other}:costCenter"},
                  {"op": "Replace", "value": {f"{other}:x": "1", other: {"x": 1}, "title": "T"}})
    assert out == {**a_user(), "title": "T"}


# -- Okta shapes -----------------------------------------------------------------------------


def test_okta_deactivate() -> None:
    assert patched(a_user(), {"op": "replace", "value": {"active": False}})["active"] is False


def test_okta_replace_echoing_id() -> None:
    out = patched(a_user(), {"op": "replace", "value": {"id": "u-1", "displayName": "Ann S"}})
    assert out["displayName"] == "Ann S" and out["id"] == "u-1"


def test_okta_group_rename_and_members() -> None:
    request = body({"op": "replace", "value": {"id": "g-1", "displayName": "Eng 2"}},
                   {"op": "add", "path": "members",
                    "value": [{"value": "u-2", "display": "bob@example.com"}]},
                   {"op": "remove", "path": 'members[value eq "u-3"]'})
    outcome = apply_patch(a_group(), request, GROUP_TYPE)
    assert outcome == PatchOutcome(a_group(displayName="Eng 2"), (
        MemberOp("add", ({"value": "u-2"},)), MemberOp("remove", ({"value": "u-3"},))))


# -- mutability -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["id", "meta", "meta.version", "groups", 'groups[value eq "g-1"]',
                                  f"{ENTERPRISE_USER}:manager.displayName"])
@pytest.mark.parametrize("op", ["add", "replace", "remove"])
def test_read_only_paths_are_refused(op: str, path: str) -> None:
    with pytest.raises(Mutability, match="readOnly"):
        patched(a_user(), {"op": op, "path": path, "value": "x"})


def test_read_only_values_repeated_unchanged_are_ignored() -> None:
    user = a_user()
    out = patched(user, {"op": "Replace", "value": {
        "schemas": [USER, ENTERPRISE_USER], "id": "u-1", "meta": {"resourceType": "User"},
        "groups": user["groups"], "title": "T"}})
    assert out == {**user, "title": "T"}


@pytest.mark.parametrize("value", [{"id": "other"}, {"meta": {"version": "x"}},
                                   {"groups": []}])
def test_read_only_values_changed_are_refused(value: dict[str, Any]) -> None:
    with pytest.raises(Mutability):
        patched(a_user(), {"op": "replace", "value": value})


def test_schemas_in_a_value_must_be_urns() -> None:
    with pytest.raises(InvalidValue):
        patched(a_user(), {"op": "replace", "value": {"schemas": "nope"}})


# A core schema id, so the attributes live at the top level like a User's.
IMMUTABLE_TYPE = ResourceType("Thing", "/Things", "", Schema(USER, "Thing", "", (
    Attribute("badge", mutability="immutable"),
    Attribute("card", "complex", sub_attributes=(Attribute("serial", mutability="immutable"),
                                                 Attribute("label"))),
)))


def test_immutable_may_be_set_once() -> None:
    out = patched({}, {"op": "add", "path": "badge", "value": "B1"},
                  {"op": "add", "path": "card.serial", "value": "S1"},
                  resource_type=IMMUTABLE_TYPE)
    assert out == {"badge": "B1", "card": {"serial": "S1"}}
    same = patched(out, {"op": "replace", "path": "badge", "value": "B1"},
                   {"op": "replace", "path": "card.label", "value": "L"},
                   resource_type=IMMUTABLE_TYPE)
    assert same == {"badge": "B1", "card": {"serial": "S1", "label": "L"}}
    for op in ({"op": "replace", "path": "badge", "value": "B2"},
               {"op": "remove", "path": "badge"},
               {"op": "replace", "path": "card.serial", "value": "S2"},
               {"op": "replace", "path": "card", "value": {"serial": "S2"}}):
        with pytest.raises(Mutability, match="immutable"):
            patched(out, op, resource_type=IMMUTABLE_TYPE)


def test_read_only_sub_attributes_in_values_are_dropped() -> None:
    out = patched(a_user(), {"op": "add", "path": f"{ENTERPRISE_USER}:manager",
                             "value": {"value": "m", "displayName": "Boss"}})
    assert out[ENTERPRISE_USER]["manager"] == {"value": "m"}


# -- value shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("path, value", [
    ("displayName", {"value": "x"}),
    ("displayName", ["a", "b"]),
    ("displayName", ["a"]),
    ("active", {"x": 1}),
    ("name", "Ann"),
    ("name", [{"givenName": "a"}, {"givenName": "b"}]),
    ("name.givenName", ["a"]),
    ("emails", [["a"]]),
    ("emails", [{"value": "a", "nope": 1}]),
    ('emails[type eq "work"].value', {"v": 1}),
    ('emails[type eq "work"]', [{"value": "a"}, {"value": "b"}]),
    (f"{ENTERPRISE_USER}:manager", [{"value": "a"}, {"value": "b"}]),
    (f"{ENTERPRISE_USER}:manager", {"value": ["a"]}),
    (f"{CONNECTOR_USER}:modules", [{"a": 1}]),
])
def test_plainly_wrong_shapes_are_invalid_value(path: str, value: Any) -> None:
    with pytest.raises(InvalidValue):
        patched(a_user(), {"op": "replace", "path": path, "value": value})


@pytest.mark.parametrize("value", ["x", ["x"], 1, None])
def test_a_no_path_value_must_be_an_object(value: Any) -> None:
    with pytest.raises(InvalidValue):
        patched(a_user(), {"op": "add", "value": value})


def test_multi_valued_element_given_as_bare_value() -> None:
    out = patched(a_user(), {"op": "add", "path": "roles", "value": "admin"})
    assert out["roles"] == [{"value": "admin"}]


# -- group members --------------------------------------------------------------------------------


def test_members_never_enter_the_resource() -> None:
    request = body({"op": "add", "path": "members", "value": [{"value": "a"}]},
                   {"op": "replace", "value": {"members": [{"value": "b"}], "displayName": "N"}})
    outcome = apply_patch(a_group(), request, GROUP_TYPE)
    assert outcome.resource == a_group(displayName="N")
    assert outcome.member_ops == (MemberOp("add", ({"value": "a"},)),
                                  MemberOp("replace", ({"value": "b"},)))


def test_entra_add_and_remove_members() -> None:
    assert member_ops(
        {"op": "Add", "path": "members", "value": [{"$ref": None, "value": "a"},
                                                   {"value": "b", "type": "User"}]},
        {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": "a"}]},
    ) == (MemberOp("add", ({"value": "a"}, {"value": "b", "type": "User"})),
          MemberOp("remove", ({"value": "a"},)))


def test_remove_members_by_filter() -> None:
    assert member_ops({"op": "remove", "path": 'members[value eq "a" or value eq "b"]'},
                      {"op": "remove", "path": 'members[VALUE EQ "c"]'}) == (
        MemberOp("remove", ({"value": "a"}, {"value": "b"})),
        MemberOp("remove", ({"value": "c"},)))


@pytest.mark.parametrize("op", [{"op": "remove", "path": "members"},
                                {"op": "Remove", "path": "members", "value": None}])
def test_remove_members_without_value_removes_all(op: dict[str, Any]) -> None:
    assert member_ops(op) == (MemberOp("replace", ()),)


def test_replace_members() -> None:
    assert member_ops({"op": "replace", "path": "members", "value": [{"value": "a"}]},
                      {"op": "replace", "path": "members", "value": []}) == (
        MemberOp("replace", ({"value": "a"},)), MemberOp("replace", ()))


def test_no_path_add_members_and_single_member_object() -> None:
    assert member_ops({"op": "add", "value": {"members": [{"value": "a"}]}},
                      {"op": "add", "path": "members", "value": {"value": "b"}}) == (
        MemberOp("add", ({"value": "a"},)), MemberOp("add", ({"value": "b"},)))


def test_empty_member_lists_to_add_or_remove_do_nothing() -> None:
    assert member_ops({"op": "add", "path": "members", "value": []},
                      {"op": "remove", "path": "members", "value": []}) == ()


def test_member_urn_path() -> None:
    assert member_ops({"op": "add", "path": f"{GROUP}:members", "value": [{"value": "a"}]}) == (
        MemberOp("add", ({"value": "a"},)),)


@pytest.mark.parametrize("path", [
    'members[type eq "User"]', 'members[value ne "a"]', 'members[value co "a"]',
    'members[value eq "a" and type eq "User"]', 'members[not (value eq "a")]',
    'members[value pr]'])
def test_other_member_filters_are_refused(path: str) -> None:
    with pytest.raises(InvalidFilter):
        member_ops({"op": "remove", "path": path})


@pytest.mark.parametrize("op", [
    {"op": "add", "path": 'members[value eq "a"]', "value": [{"value": "a"}]},
    {"op": "replace", "path": 'members[value eq "a"].type', "value": "User"},
    {"op": "remove", "path": 'members[value eq "a"].display'},
    {"op": "replace", "path": "members.value", "value": "a"},
    {"op": "remove", "path": "members.display"},
])
def test_member_sub_paths_are_refused(op: dict[str, Any]) -> None:
    with pytest.raises(InvalidPath):
        member_ops(op)


@pytest.mark.parametrize("value", [[{"value": 1}], [{"display": "x"}], ["id"], [{"value": ""}],
                                   "id", [None]])
def test_members_need_a_string_value(value: Any) -> None:
    with pytest.raises(InvalidValue, match="member"):
        member_ops({"op": "add", "path": "members", "value": value})


def test_members_on_users_is_an_unknown_path() -> None:
    with pytest.raises(InvalidPath):
        patched(a_user(), {"op": "add", "path": "members", "value": [{"value": "a"}]})


def test_group_display_name_and_extension() -> None:
    out = patched(a_group(), {"op": "Replace", "path": "displayName", "value": "New"},
                  {"op": "add", "path": "urn:connector:params:scim:schemas:extension:2.0:Group:"
                   "modules", "value": ["chat"]}, resource_type=GROUP_TYPE)
    assert out["displayName"] == "New"
    assert out["urn:connector:params:scim:schemas:extension:2.0:Group"] == {"modules": ["chat"]}


# -- properties ---------------------------------------------------------------------------------

PATHS = st.sampled_from([
    None, "", "title", "displayName", "active", "name", "name.givenName", "emails",
    'emails[type eq "work"]', 'emails[type eq "work"].value', 'emails[type eq "work"].primary',
    'emails[value co "a" or primary eq true].display', "emails.value", "addresses",
    'addresses[type eq "home"].locality', "id", "meta", "meta.version", "groups",
    "userName", "roles", "x509Certificates", f"{ENTERPRISE_USER}:manager",
    f"{ENTERPRISE_USER}:manager.value", f"{ENTERPRISE_USER}:department", ENTERPRISE_USER,
    f"{CONNECTOR_USER}:modules", f"{CONNECTOR_USER}:desklessPercent", USER,
    "urn:example:unknown:2.0:User:x", "members", 'members[value eq "a"]', "nope",
    "emails[", 'emails[type eq "work"]]', "name..x", 'emails[type eq "w"].value.x',
])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.sampled_from(["", "True", "false", "work", "a@b", "u-1"]) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["value", "type", "primary", "display", "givenName", "id", "title",
                         "name.givenName", 'emails[type eq "work"].value', "meta", "schemas",
                         ENTERPRISE_USER, f"{ENTERPRISE_USER}:manager", "x"]),
        inner, max_size=3),
    max_leaves=8,
)
OPERATION = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "Replace", "REMOVE", "copy", 3])},
    optional={"path": PATHS, "value": JSON})


@settings(max_examples=400, deadline=None)
@given(operations=st.lists(OPERATION, min_size=1, max_size=4),
       group=st.booleans())
def test_random_patches_fail_only_with_scim_errors_and_never_mutate(
        operations: list[dict[str, Any]], group: bool) -> None:
    resource = a_group() if group else with_manager({"value": "m", "displayName": "M"})
    request = body(*operations)
    before = copy.deepcopy((resource, request))
    try:
        outcome = apply_patch(resource, request, GROUP_TYPE if group else USER_TYPE)
    except ScimError:
        outcome = None
    assert (resource, request) == before
    if outcome is not None:
        assert outcome.resource is not resource
        assert ("members" in outcome.resource) is False
        json.dumps(outcome.resource)  # still a JSON document
