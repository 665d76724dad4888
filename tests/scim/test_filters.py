"""Filters, PATCH paths and sortBy, parsed and evaluated in memory (RFC 7644 §3.4.2, §3.5.2)."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scim.errors import InvalidFilter, InvalidPath, InvalidValue
from scim.filters import (
    MAX_FILTER_LENGTH,
    And,
    Compare,
    Not,
    Or,
    Present,
    UnknownSchemaPath,
    ValuePath,
    compile_sort,
    evaluate,
    evaluate_element,
    format_filter,
    parse_filter,
    parse_path,
)
from scim.schemas import CONNECTOR_USER, ENTERPRISE_USER, GROUP_TYPE, USER, USER_TYPE

ENT = ENTERPRISE_USER
CON = CONNECTOR_USER


def canon(text: str, resource_type: Any = USER_TYPE) -> str:
    return format_filter(parse_filter(text, resource_type))


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('userName eq "bjensen"', 'userName eq "bjensen"'),
        ('userName ne "a"', 'userName ne "a"'),
        ('name.familyName co "O\'Malley"', 'name.familyName co "O\'Malley"'),
        ('userName sw "J"', 'userName sw "J"'),
        ('userName ew "n"', 'userName ew "n"'),
        ("title pr", "title pr"),
        ('userName gt "a"', 'userName gt "a"'),
        ('userName ge "a"', 'userName ge "a"'),
        ('userName lt "a"', 'userName lt "a"'),
        ('userName le "a"', 'userName le "a"'),
        ("active eq true", "active eq true"),
        ("active ne false", "active ne false"),
        ('meta.lastModified gt "2011-05-13T04:42:34Z"',
         'meta.lastModified gt "2011-05-13T04:42:34Z"'),
        ('meta.created ge "2011-05-13T06:42:34+02:00"', 'meta.created ge "2011-05-13T04:42:34Z"'),
        ('meta.resourceType eq "User"', 'meta.resourceType eq "User"'),
        ('id eq "2819c223"', 'id eq "2819c223"'),
        ('externalId eq "x"', 'externalId eq "x"'),
    ],
)
def test_every_operator_parses(text: str, expected: str) -> None:
    assert canon(text) == expected


def test_compare_carries_typed_values() -> None:
    node = parse_filter(f"{CON}:desklessPercent ge 40", USER_TYPE)
    assert isinstance(node, Compare) and node.value == 40 and node.op == "ge"
    assert node.ref.attribute.name == "desklessPercent"
    node = parse_filter('meta.lastModified gt "2024-01-01T00:00:00"', USER_TYPE)
    assert isinstance(node, Compare)
    assert node.value == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def test_and_binds_tighter_than_or() -> None:
    # RFC 7644 §3.4.2.2; scim2-filter-parser alone gets this wrong.
    assert canon('title pr or userName eq "a" and nickName pr') == (
        '(title pr or (userName eq "a" and nickName pr))'
    )
    assert canon('title pr and userName eq "a" or nickName pr') == (
        '((title pr and userName eq "a") or nickName pr)'
    )


def test_grouping_and_not() -> None:
    assert canon('(title pr or nickName pr) and userName eq "a"') == (
        '((title pr or nickName pr) and userName eq "a")'
    )
    assert canon('not (title pr) and not (nickName pr or userType eq "x")') == (
        '(not (title pr) and not ((nickName pr or userType eq "x")))'
    )
    assert canon("((((title pr))))") == "title pr"


def test_long_chains_are_balanced() -> None:
    text = " or ".join(f'userName eq "u{i}"' for i in range(128))
    node = parse_filter(text, USER_TYPE)

    def depth(n: Any) -> int:
        if isinstance(n, And | Or):
            return 1 + max(depth(n.left), depth(n.right))
        return 1

    assert depth(node) <= 9


def test_operators_and_attribute_names_are_case_insensitive() -> None:
    assert canon('USERNAME EQ "x" AnD NoT (Active Eq TRUE) oR Title PR') == (
        '((userName eq "x" and not (active eq true)) or title pr)'
    )
    assert canon('NAME.GIVENNAME co "a"') == 'name.givenName co "a"'


def test_urn_qualified_paths() -> None:
    assert canon(f'{ENT}:employeeNumber eq "701984"') == f'{ENT}:employeeNumber eq "701984"'
    assert canon(f'{ENT.upper()}:MANAGER.VALUE eq "26118915"') == (
        f'{ENT}:manager.value eq "26118915"'
    )
    assert canon(f'{USER}:userName eq "a"') == 'userName eq "a"'
    assert canon(f"{CON}:guest eq true") == f"{CON}:guest eq true"


def test_value_paths() -> None:
    node = parse_filter('emails[type eq "work" and value co "@example.com"]', USER_TYPE)
    assert isinstance(node, ValuePath)
    assert node.ref.attribute.name == "emails" and node.ref.sub_attribute is None
    assert isinstance(node.node, And)
    assert format_filter(node) == (
        'emails[(emails.type eq "work" and emails.value co "@example.com")]'
    )
    assert canon('emails[not (type eq "work")] and userType eq "Employee"') == (
        '(emails[not (emails.type eq "work")] and userType eq "Employee")'
    )
    assert canon('members[value eq "2819c223"]', GROUP_TYPE) == (
        'members[members.value eq "2819c223"]'
    )


def test_value_path_with_trailing_sub_attribute() -> None:
    # Not in the RFC grammar, but sent by Entra ID.
    assert canon('emails[type eq "work"].value eq "a@x"') == (
        'emails[(emails.type eq "work" and emails.value eq "a@x")]'
    )


def test_multi_valued_complex_without_sub_attribute_means_value() -> None:
    assert canon('emails co "@example.com"') == 'emails.value co "@example.com"'
    assert canon('groups eq "g1"') == 'groups.value eq "g1"'
    assert canon("emails pr") == "emails pr"  # presence of the attribute itself


def test_null_means_absent() -> None:
    assert parse_filter("title eq null", USER_TYPE) == Not(Present(USER_TYPE.resolve("title")))
    assert parse_filter("title ne null", USER_TYPE) == Present(USER_TYPE.resolve("title"))


@pytest.mark.parametrize("literal", ['"true"', '"True"', '"TRUE"', "true", "TRUE"])
def test_sloppy_booleans_are_accepted(literal: str) -> None:
    node = parse_filter(f"active eq {literal}", USER_TYPE)
    assert isinstance(node, Compare) and node.value is True


def test_json_string_escapes() -> None:
    node = parse_filter(r'userName eq "a\"b\\c\u00e9"', USER_TYPE)
    assert isinstance(node, Compare) and node.value == 'a"b\\cé'


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        'userName eq "a',  # unterminated string
        r'userName eq "a\q"',  # invalid JSON escape
        "userName eq",
        'userName regex "a"',
        'userName eq "a" junk',
        '(userName eq "a"',
        'userName eq "a")',
        "userName eq 'single'",
        'nope eq "a"',  # unknown attribute
        'name.nope eq "a"',  # unknown sub-attribute
        'urn:example:unknown:2.0:User:foo eq "a"',  # unknown schema
        f'{ENT}:nope eq "a"',
        'password eq "secret"',  # returned=never
        "active gt true",  # ordering on boolean
        "active le false",
        'x509Certificates.value gt "MII"',  # ordering on binary
        'x509Certificates.value co "MII"',  # substring on binary
        'active eq "yes"',  # wrong type
        "active eq 1",
        "userName eq 1",
        "userName eq true",
        f'{CON}:desklessPercent eq "forty"',
        f"{CON}:desklessPercent eq 4.5",
        f"{CON}:desklessPercent co 4",  # substring on a number
        'meta.lastModified gt "yesterday"',  # not an xsd:dateTime
        'meta.created co "2024"',
        'name eq "Barbara"',  # complex without sub-attribute
        f'{ENT}:manager eq "x"',
        'name[givenName eq "a"]',  # value path on a single-valued attribute
        'emails[type eq "work"][value eq "x"]',
        'emails[value[type eq "x"] pr]',  # nested value path
        'emails[emails.value eq "x"]',  # qualified name inside brackets
        'emails[nope eq "x"]',
        'emails[type eq "work"] pr',
        "title gt null",
        "userName eq 12abc",
        "userName eq -",
        'userName eq "a" and',
        "not title pr",
        'userName eq "\x00"',
        r'userName eq "a\u0000"',  # PostgreSQL text cannot hold NUL
        f"{CON}:desklessPercent eq 9223372036854775808",
        f"{CON}:desklessPercent eq 1e999",
        "a.b.c eq 1",
        "userName pr pr",
    ],
)
def test_invalid_filters_raise_invalid_filter(text: str) -> None:
    with pytest.raises(InvalidFilter) as info:
        parse_filter(text, USER_TYPE)
    assert info.value.scim_type == "invalidFilter"
    assert info.value.detail


def test_group_filters_use_group_attributes() -> None:
    assert canon('displayName eq "Admins"', GROUP_TYPE) == 'displayName eq "Admins"'
    with pytest.raises(InvalidFilter):
        parse_filter('userName eq "a"', GROUP_TYPE)


def test_limits() -> None:
    with pytest.raises(InvalidFilter, match="longer"):
        parse_filter('userName eq "' + "a" * MAX_FILTER_LENGTH + '"', USER_TYPE)
    with pytest.raises(InvalidFilter, match="deeper"):
        parse_filter("(" * 40 + "title pr" + ")" * 40, USER_TYPE)
    with pytest.raises(InvalidFilter, match="comparisons"):
        parse_filter(" or ".join(["title pr"] * 300), USER_TYPE)


def test_error_detail_points_at_the_problem() -> None:
    with pytest.raises(InvalidFilter, match="'regex' at position 9"):
        parse_filter('userName regex "a"', USER_TYPE)
    with pytest.raises(InvalidFilter, match="Unknown attribute 'nope'"):
        parse_filter('nope eq "a"', USER_TYPE)


FRAGMENTS = st.sampled_from(
    [*'()[]" \\.:$-_%01aeqnoprtu', " eq ", " and ", " or ", "not ", " pr", " gt ", "emails",
     "type", "value", "userName", "members", "meta.created", '"x"', '"2020-01-01"', "true",
     "null", "1.5", "-3", f"{ENT}:", "urn:x:", "\u00e9", "\x00"]
)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=60), st.lists(FRAGMENTS, max_size=25).map("".join)))
def test_junk_only_ever_raises_invalid_filter(text: str) -> None:
    for resource_type in (USER_TYPE, GROUP_TYPE):
        try:
            node = parse_filter(text, resource_type)
        except InvalidFilter:
            continue
        evaluate(node, {})
        format_filter(node)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=60), st.lists(FRAGMENTS, max_size=25).map("".join)))
def test_junk_paths_only_ever_raise_bad_request(text: str) -> None:
    with contextlib.suppress(InvalidPath, InvalidFilter):
        parse_path(text, USER_TYPE)


# -- evaluation ------------------------------------------------------------------------

BJENSEN: dict[str, Any] = {
    "schemas": [USER, ENT, CON],
    "id": "2819c223-7f76-453a-919d-413861904646",
    "externalId": "Ext-1",
    "userName": "Zoë.Jensen@example.com",
    "name": {"givenName": "Zoë", "familyName": "Jensen"},
    "displayName": "Zoë Jensen",
    "title": "",
    "active": True,
    "emails": [
        {"value": "ZJ@Example.com", "type": "work", "primary": True},
        {"value": "zoe@home.org", "type": "home"},
    ],
    "addresses": [{"type": "work", "locality": "Hollywood", "country": "US"}],
    ENT: {"employeeNumber": "701984", "manager": {"value": "26118915"}},
    CON: {"desklessPercent": 40, "modules": ["Engage", "Hybrid"], "paidHourly": False},
    "meta": {
        "resourceType": "User",
        "created": "2024-01-01T10:00:00.000Z",
        "lastModified": "2024-05-01T10:00:00.123Z",
    },
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('userName eq "zoë.jensen@EXAMPLE.com"', True),  # caseExact=false
        ('externalId eq "ext-1"', False),  # caseExact=true
        ('externalId eq "Ext-1"', True),
        ('userName ne "zoë.jensen@example.com"', False),
        ('userName co "JENSEN@"', True),
        ('userName sw "zoë."', True),
        ('userName ew ".COM"', True),
        ('userName gt "zoa"', True),
        ('userName lt "zoa"', False),
        ('name.givenName eq "ZOË"', True),
        ("title pr", False),  # empty string is not present
        ("nickName pr", False),
        ("name pr", True),
        ('nickName ne "x"', True),  # missing is "not equal"
        ('not (nickName eq "x")', True),
        ("active eq true", True),
        ('active eq "False"', False),
        ('emails.value eq "zj@example.com"', True),
        ('emails co "home.org"', True),
        ('emails.value ne "zoe@home.org"', False),  # ne is "no value equals"
        ('emails[type eq "work" and value co "home.org"]', False),  # same element
        ('emails[type eq "home" and value co "home.org"]', True),
        ('emails.type eq "work" and emails.value co "home.org"', True),  # any element each
        ('emails[type eq "work"].value sw "zj@"', True),
        ("emails[primary eq true]", True),
        ('emails[not (type eq "work")]', True),
        ('addresses[locality eq "hollywood"]', True),
        ("phoneNumbers pr", False),
        ("emails pr", True),
        (f'{ENT}:employeeNumber eq "701984"', True),
        (f'{ENT}:manager.value eq "26118915"', True),
        (f"{CON}:desklessPercent gt 39", True),
        (f"{CON}:desklessPercent lt 40", False),
        (f"{CON}:paidHourly eq false", True),
        (f'{CON}:modules eq "engage"', True),
        (f'{CON}:modules eq "unify"', False),
        ('meta.lastModified gt "2024-05-01T10:00:00Z"', True),
        ('meta.lastModified eq "2024-05-01T12:00:00.123+02:00"', True),
        ('meta.created lt "2024-01-01T10:00:00Z"', False),
        ('meta.resourceType eq "User"', True),
        ('userName eq "x" or (active eq true and not (title pr))', True),
        ('id eq "2819c223-7f76-453a-919d-413861904646"', True),
    ],
)
def test_evaluate(text: str, expected: bool) -> None:
    assert evaluate(parse_filter(text, USER_TYPE), BJENSEN) is expected


def test_evaluate_attribute_names_case_insensitively() -> None:
    doc = {"USERNAME": "a", "Emails": [{"VALUE": "x@y", "Type": "work"}]}
    assert evaluate(parse_filter('userName eq "A"', USER_TYPE), doc)
    assert evaluate(parse_filter('emails[type eq "WORK"]', USER_TYPE), doc)


def test_evaluate_wrongly_typed_stored_values_match_nothing() -> None:
    doc = {"active": "maybe", CON: {"desklessPercent": "lots"}}
    assert not evaluate(parse_filter("active eq true", USER_TYPE), doc)
    assert not evaluate(parse_filter(f"{CON}:desklessPercent gt 1", USER_TYPE), doc)


def test_evaluate_element() -> None:
    path = parse_path('emails[type eq "work" and primary eq true]', USER_TYPE)
    assert path.value_filter is not None
    matches = [e for e in BJENSEN["emails"] if evaluate_element(path.value_filter, e)]
    assert matches == [BJENSEN["emails"][0]]


# -- PATCH paths -----------------------------------------------------------------------


def describe(text: str, resource_type: Any = USER_TYPE) -> tuple[str, str | None, str | None]:
    path = parse_path(text, resource_type)
    value_filter = format_filter(path.value_filter) if path.value_filter else None
    sub = path.sub_attribute.name if path.sub_attribute else None
    return str(path.ref), value_filter, sub


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("userName", ("userName", None, None)),
        ("name.givenName", ("name.givenName", None, None)),
        ("NAME.GIVENNAME", ("name.givenName", None, None)),
        ("emails", ("emails", None, None)),
        ('emails[type eq "work"].value', ("emails", 'emails.type eq "work"', "value")),
        ('emails[type eq "work" and primary eq true]',
         ("emails", '(emails.type eq "work" and emails.primary eq true)', None)),
        ('addresses[type eq "work"].streetAddress',
         ("addresses", 'addresses.type eq "work"', "streetAddress")),
        ('emails[value eq "a]b"].display', ("emails", 'emails.value eq "a]b"', "display")),
        (f"{ENT}:manager", (f"{ENT}:manager", None, None)),
        (f"{ENT}:manager.value", (f"{ENT}:manager.value", None, None)),
        (f"{ENT}:employeeNumber", (f"{ENT}:employeeNumber", None, None)),
        (f"{USER}:displayName", ("displayName", None, None)),
        ("externalId", ("externalId", None, None)),
    ],
)
def test_parse_path(text: str, expected: tuple[str, str | None, str | None]) -> None:
    assert describe(text) == expected


def test_parse_group_member_path() -> None:
    assert describe('members[value eq "2819c223"]', GROUP_TYPE) == (
        "members", 'members.value eq "2819c223"', None
    )
    assert describe("members", GROUP_TYPE) == ("members", None, None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nope",
        "name.nope",
        "emails[",
        "emails[]",
        'emails[type eq "work"',
        'emails[type eq "work"].nope',
        'emails[type eq "work"].value.x',
        'name[givenName eq "a"]',
        'emails.value[type eq "work"]',
        'emails[type eq "a"] or emails[type eq "b"]',
        "emails eq",
        ENT,  # a schema, not an attribute
        "a.b.c",
        '"userName"',
    ],
)
def test_invalid_paths_raise_invalid_path(text: str) -> None:
    with pytest.raises(InvalidPath):
        parse_path(text, USER_TYPE)


def test_unknown_schema_paths_are_distinguishable() -> None:
    with pytest.raises(UnknownSchemaPath):
        parse_path("urn:example:params:scim:schemas:extension:acme:2.0:User:badge", USER_TYPE)
    with pytest.raises(UnknownSchemaPath):
        parse_path(f"{ENT}:manager", GROUP_TYPE)


def test_bad_filter_inside_a_path_is_invalid_filter() -> None:
    # RFC 7644 §3.12 lists invalidFilter for PATCH path filters.
    with pytest.raises(InvalidFilter):
        parse_path('emails[nope eq "x"]', USER_TYPE)
    with pytest.raises(InvalidFilter):
        parse_path('emails[type regex "x"]', USER_TYPE)


# -- sortBy ----------------------------------------------------------------------------


def test_compile_sort() -> None:
    assert str(compile_sort("userName", USER_TYPE)) == "userName"
    assert str(compile_sort("META.LASTMODIFIED", USER_TYPE)) == "meta.lastModified"
    assert str(compile_sort("emails", USER_TYPE)) == "emails.value"
    assert str(compile_sort(f"{ENT}:employeeNumber", USER_TYPE)) == f"{ENT}:employeeNumber"
    for bad in ("nope", "name", "password", ""):
        with pytest.raises(InvalidValue):
            compile_sort(bad, USER_TYPE)


def test_simple_user_lookups_are_recognised_without_the_parser() -> None:
    from scim.filters import simple_user_lookup
    assert simple_user_lookup('USERNAME EQ "A\\"b"') == ("userName", 'A"b')
    assert simple_user_lookup(' externalId\teq "x" ') == ("externalId", "x")
    assert simple_user_lookup('userName eq "stra\\u00dfe"') == ("userName", "straße")
    for other in ('uſerName eq "x"', 'userName eq "a" or userName eq "b"', 'userName co "x"',
                  'userName eq x', 'emails eq "x"', '(userName eq "x")', 'userName eq "nul\\u0000"',
                  'userName eq "tab\there"'):
        assert simple_user_lookup(other) is None, other
