"""The attribute mapping table, pure: Graph user JSON → UserFields under a table."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azure_sync import mapping
from azure_sync.mapping import ENTERPRISE, Rules, StoredProfile, parse_user, user_fields

STRING_SOURCES = [s for s in mapping.SOURCES if s not in ("manager", "businessPhones")
                  and not s.startswith(mapping.EXTENSION_ATTRIBUTES)]
value = st.one_of(st.none(), st.text(min_size=1, max_size=12))


def fields(item: dict[str, Any], stored: StoredProfile | None = None,
           rules: Rules = mapping.DEFAULT_RULES) -> Any:
    delta = parse_user({"id": "o1", **item})
    return user_fields("o1", stored, delta.changes, rules)


def unordered(data: dict[str, Any]) -> dict[str, Any]:
    return {k: sorted(v, key=repr) if isinstance(v, list) else v for k, v in data.items()}


def strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return set().union(*(strings(v) for v in value)) if value else set()
    return set()


def stored_of(result: Any) -> StoredProfile:
    return StoredProfile(result.user_name, result.display_name, result.data, result.guest)


def test_the_default_follows_entras_table() -> None:
    assert mapping.DEFAULT_TABLE["jobTitle"] == "title"
    assert mapping.DEFAULT_TABLE["mail"] == 'emails[type eq "work"].value'
    assert mapping.DEFAULT_TABLE["employeeId"] == f"{ENTERPRISE}:employeeNumber"
    assert mapping.DEFAULT_TABLE["mobilePhone"] == 'phoneNumbers[type eq "mobile"].value'
    assert mapping.DEFAULT_TABLE["businessPhones"] == 'phoneNumbers[type eq "work"].value'
    assert mapping.DEFAULT_TABLE["officeLocation"] == 'addresses[type eq "other"].formatted'
    assert "companyName" not in mapping.DEFAULT_TABLE  # offered, not mapped by default
    assert mapping.validate_table(mapping.DEFAULT_TABLE) == mapping.DEFAULT_TABLE
    assert set(mapping.USER_SELECT) == {*mapping.ALWAYS_SELECTED, *mapping.DEFAULT_TABLE}


@given(st.dictionaries(st.sampled_from(STRING_SOURCES), value, max_size=8),
       st.dictionaries(st.sampled_from(STRING_SOURCES), value, max_size=8))
def test_absent_is_unchanged_and_null_clears(first: dict[str, Any],
                                             second: dict[str, Any]) -> None:
    """Applying two deltas in turn equals applying their merge at once: an absent key
    keeps the value, a present one (null included) replaces it."""
    rules = Rules.of({s: t for s, t in mapping.DEFAULT_TABLE.items() if s in STRING_SOURCES})
    base = {"userPrincipalName": "a@contoso.example"}
    one = fields({**base, **first}, rules=rules)
    two = fields(second, stored_of(one), rules)
    at_once = fields({**base, **first, **second}, rules=rules)
    # (multi-valued attributes are sets: the order of their elements may differ)
    assert (unordered(two.data), two.display_name) == (unordered(at_once.data),
                                                       at_once.display_name)
    assert {v.attr for v in two.values} == {k for k in ("emails", "phoneNumbers", "addresses")
                                            if k in two.data}


@given(st.dictionaries(st.sampled_from(STRING_SOURCES), st.text(min_size=1, max_size=8),
                       min_size=1, max_size=6))
def test_every_mapped_value_lands_and_clearing_all_leaves_nothing(
        values: dict[str, str]) -> None:
    rules = Rules.of({s: t for s, t in mapping.DEFAULT_TABLE.items() if s in STRING_SOURCES})
    landed = fields({"userPrincipalName": "a@contoso.example", **values}, rules=rules)
    for source, given_value in values.items():
        target = rules.as_dict.get(source)
        if target is not None:
            assert given_value in strings((landed.display_name, landed.data)), (source, target)
    cleared = fields({k: None for k in values}, stored_of(landed), rules)
    assert cleared.data == {} and cleared.values == ()


def test_unmapped_properties_do_not_land() -> None:
    rules = Rules.of({"department": f"{ENTERPRISE}:division"})
    result = fields({"userPrincipalName": "a@x", "jobTitle": "Boss", "department": "R&D",
                     "mail": "a@x"}, rules=rules)
    assert result.data == {ENTERPRISE: {"division": "R&D"}}


def test_business_phones_map_their_first_number_and_an_empty_list_clears() -> None:
    result = fields({"userPrincipalName": "a@x", "businessPhones": ["1", "2"]})
    assert result.data["phoneNumbers"] == [{"value": "1", "type": "work"}]
    assert "phoneNumbers" not in fields({"businessPhones": []}, stored_of(result)).data


def test_extension_attributes_map_when_configured() -> None:
    source = f"{mapping.EXTENSION_ATTRIBUTES}.extensionAttribute3"
    rules = Rules.of({source: f"{ENTERPRISE}:costCenter"})
    assert rules.select() == (*mapping.ALWAYS_SELECTED, mapping.EXTENSION_ATTRIBUTES)
    item = {"userPrincipalName": "a@x", "onPremisesExtensionAttributes": {
        "extensionAttribute1": "no", "extensionAttribute3": "CC"}}
    result = fields(item, rules=rules)
    assert result.data == {ENTERPRISE: {"costCenter": "CC"}}
    # The container without the attribute: unchanged; the container null: cleared.
    assert fields({"onPremisesExtensionAttributes": {}}, stored_of(result),
                  rules).data == result.data
    assert fields({"onPremisesExtensionAttributes": None}, stored_of(result),
                  rules).data == {}


def test_the_manager_goes_through_the_resolver() -> None:
    asked: list[tuple[str, str | None]] = []

    def resolve(report: str, manager: str | None) -> str | None:
        asked.append((report, manager))
        return {"m1": "connector-m1"}.get(manager or "")

    rules = Rules.of(mapping.DEFAULT_TABLE, resolve)
    known = fields({"userPrincipalName": "a@x", "manager@delta": [{"id": "m1"}]}, rules=rules)
    assert known.data[ENTERPRISE]["manager"] == {"value": "connector-m1"}
    unknown = fields({"manager@delta": [{"id": "m2"}]}, stored_of(known), rules)
    assert ENTERPRISE not in unknown.data  # not a connector user (yet): empty
    removed = fields({"manager@delta": [{"id": "m1", "@removed": {"reason": "deleted"}}]},
                     stored_of(known), rules)
    assert ENTERPRISE not in removed.data
    assert asked == [("o1", "m1"), ("o1", "m2"), ("o1", None)]
    # No manager in the item: not asked, unchanged.
    assert fields({"jobTitle": "x"}, stored_of(known), rules).data[ENTERPRISE] == {
        "manager": {"value": "connector-m1"}}
    assert len(asked) == 3


def test_other_elements_of_a_multi_valued_attribute_stay() -> None:
    stored = StoredProfile("a@x", None, {"phoneNumbers": [{"value": "h", "type": "home"}]},
                           False)
    result = fields({"mobilePhone": "m"}, stored)
    assert result.data["phoneNumbers"] == [{"value": "h", "type": "home"},
                                           {"value": "m", "type": "mobile"}]
    assert fields({"mobilePhone": None}, stored_of(result)).data == stored.data


@pytest.mark.parametrize("table, words", [
    ({"nope": "title"}, "Unknown Graph user property"),
    ({"jobTitle": "nope"}, "Unknown target"),
    ({"jobTitle": "title", "department": "title"}, "both map to"),
    ({"manager": "title"}, "manager maps only"),
    ({"jobTitle": mapping.MANAGER_TARGET}, "manager maps only"),
    ([], "must be an object"),
])
def test_invalid_tables_say_what_is_wrong(table: Any, words: str) -> None:
    with pytest.raises(mapping.InvalidMapping, match=words):
        mapping.validate_table(table)


def test_select_always_has_what_the_sync_needs() -> None:
    assert mapping.select_for({}) == mapping.ALWAYS_SELECTED
    assert mapping.select_for({}, ("mail",)) == (*mapping.ALWAYS_SELECTED, "mail")
    assert "manager" not in mapping.FULL_SELECT


def test_rules_built_from_a_table_alone_are_compiled() -> None:
    rules = Rules((("jobTitle", "title"),))
    assert fields({"userPrincipalName": "a@x", "jobTitle": "Boss"}, rules=rules).data == {
        "title": "Boss"}


def test_every_wrong_entry_is_named_at_once() -> None:
    with pytest.raises(mapping.InvalidMapping) as caught:
        mapping.validate_table({"nope": "title", "jobTitle": "rank", "department": "title"})
    assert set(caught.value.errors) == {"nope", "jobTitle"}
    assert "Unknown Graph user property" in caught.value.errors["nope"]
    assert "Unknown target attribute 'rank'" in caught.value.errors["jobTitle"]
