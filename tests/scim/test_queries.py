"""Filters compiled to SQL and run on real SQLite and PostgreSQL (RFC 7644 §3.4.2.2).

Two tenants share ids on purpose ("u1", "g1" exist in both), so a subquery that
forgot to correlate on tenant_id would leak the other tenant's values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from connector.models import (
    Group,
    GroupModule,
    Membership,
    Tenant,
    User,
    UserModule,
    UserValue,
)
from scim.errors import InvalidFilter, InvalidValue
from scim.filters import compile_sort, parse_filter
from scim.queries import group_clause, group_sort_column, user_clause, user_sort_column
from scim.schemas import (
    CONNECTOR_GROUP,
    CONNECTOR_USER,
    ENTERPRISE_USER,
    GROUP_TYPE,
    USER_TYPE,
)

ENT = ENTERPRISE_USER
CON = CONNECTOR_USER
T1, T2 = "tenant-1", "tenant-2"
NOW = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
DROP = "'; DROP TABLE users; --"
LONG = "x" * 4000


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _tenant(session: Session, tenant_id: str) -> None:
    session.add(Tenant(id=tenant_id, name=tenant_id, created_at=NOW,
                       status_source="identity_provider", scim_default_status="active",
                       provisioning_paused=False, time_zone="UTC"))


def _user(session: Session, tenant_id: str, user_id: str, user_name: str, *,
          display_name: str | None = None, external_id: str | None = None,
          active: bool = True, guest: bool = False, admin: bool = False,
          created: str = "2024-01-01T00:00:00+00:00",
          modified: str = "2024-01-01T00:00:00+00:00",
          data: dict[str, Any] | None = None,
          values: Sequence[tuple[str, dict[str, Any]]] = (),
          modules: tuple[str, ...] = ()) -> None:
    session.add(User(
        tenant_id=tenant_id, id=user_id, user_name=user_name,
        user_name_norm=user_name.casefold(), external_id=external_id,
        display_name=display_name,
        display_name_norm=display_name.casefold() if display_name else None,
        active=active, guest=guest, admin=admin, origin="scim",
        created_at=_at(created), modified_at=_at(modified), version=1, data=data or {},
    ))
    session.flush()
    for position, (attr, item) in enumerate(values):
        value = item.get("value")
        session.add(UserValue(
            tenant_id=tenant_id, user_id=user_id, attr=attr, position=position, value=value,
            value_norm=value.casefold() if value is not None else None,
            type=item.get("type"), primary=bool(item.get("primary", False)),
            display=item.get("display"),
            data={k: v for k, v in item.items() if k not in {"value", "type", "primary",
                                                             "display"}},
        ))
    session.add_all(UserModule(tenant_id=tenant_id, user_id=user_id, module=m) for m in modules)


def _group(session: Session, tenant_id: str, group_id: str, name: str, *,
           external_id: str | None = None, members: tuple[tuple[str, str], ...] = (),
           modules: tuple[str, ...] = (), created: str = "2024-01-01T00:00:00+00:00") -> None:
    session.add(Group(tenant_id=tenant_id, id=group_id, display_name=name,
                      display_name_norm=name.casefold(), external_id=external_id,
                      origin="scim", created_at=_at(created), modified_at=_at(created),
                      version=1, data={}))
    session.flush()
    session.add_all(Membership(tenant_id=tenant_id, group_id=group_id, member_id=member,
                               member_type=kind, created_at=NOW) for member, kind in members)
    session.add_all(GroupModule(tenant_id=tenant_id, group_id=group_id, module=m)
                    for m in modules)


@pytest.fixture
def directory(session: Session) -> Session:
    """Tenant 1: u1..u5, g1..g2. Tenant 2 reuses ids with different values."""
    _tenant(session, T1)
    _tenant(session, T2)
    session.flush()
    _user(session, T1, "u1", "Zoë.Jensen@example.com", display_name="Zoë Jensen",
          external_id="Ext-1", admin=True,
          created="2024-01-01T10:00:00.000500+00:00",
          modified="2024-05-01T10:00:00.123456+00:00",
          data={"name": {"givenName": "Zoë", "familyName": "Jensen"}, "title": "Boss",
                ENT: {"employeeNumber": "701984", "manager": {"value": "m-1"}},
                CON: {"desklessPercent": 40, "paidHourly": True, "frontlineRole": "medical"}},
          values=[("emails", {"value": "ZJ@Example.com", "type": "work", "primary": True}),
                  ("emails", {"value": "zoe@home.org", "type": "home"}),
                  ("addresses", {"type": "work", "locality": "Hollywood", "country": "US"})],
          modules=("Engage",))
    _user(session, T1, "u2", "bob", external_id="ext-1", active=False, guest=True,
          created="2024-02-01T00:00:00+00:00", modified="2024-02-01T00:00:00+00:00",
          data={"title": "", "nickName": "50%_off\\", "userType": "Guest",
                "name": {"givenName": "O'Brien \"Bob\""},
                CON: {"desklessPercent": 100, "paidHourly": False}},
          values=[("emails", {"value": "bob@example.com", "type": "work"}),
                  ("phoneNumbers", {"value": "+1 555", "type": "mobile"})])
    _user(session, T1, "u3", DROP, display_name="Mallory",
          data={"nickName": "50%Xoff\\", "name": {"givenName": "mallory"}})
    _user(session, T1, "u4", "percent%user", display_name="50_percent",
          data={"nickName": "50xy_off\\", "name": {"givenName": "Aaron"}})
    _user(session, T1, "u5", LONG[:500], data={"nickName": "50%_off"})
    # Tenant 2: the same ids, other values. None of these may ever match in tenant 1.
    _user(session, T2, "u1", "secret@other.com", external_id="other",
          data={"title": "Secret"},
          values=[("emails", {"value": "secret@other.com", "type": "work"})],
          modules=("Unify",))
    _user(session, T2, "u2", "bob-t2")
    _group(session, T1, "g1", "Admins", external_id="G-1",
           members=(("u1", "User"), ("g2", "Group")), modules=("Hybrid",),
           created="2024-03-01T00:00:00+00:00")
    _group(session, T1, "g2", "Sales")
    _group(session, T2, "g1", "Other admins", members=(("u2", "User"),), modules=("Unify",))
    _group(session, T2, "g9", "Only in t2", members=(("u2", "User"),))
    session.commit()
    return session


def user_ids(session: Session, text: str, tenant: str = T1) -> set[str]:
    clause = user_clause(parse_filter(text, USER_TYPE))
    return set(session.scalars(select(User.id).where(User.tenant_id == tenant, clause)))


def group_ids(session: Session, text: str, tenant: str = T1) -> set[str]:
    clause = group_clause(parse_filter(text, GROUP_TYPE))
    return set(session.scalars(select(Group.id).where(Group.tenant_id == tenant, clause)))


ALL_USERS = {"u1", "u2", "u3", "u4", "u5"}

USER_CASES = [
    # columns
    ('userName eq "zoë.jensen@EXAMPLE.COM"', {"u1"}),
    ('userName eq "ZOË.JENSEN@EXAMPLE.COM"', {"u1"}),  # casefolded in Python: any script
    ('userName ne "bob"', ALL_USERS - {"u2"}),
    ('userName sw "ZOË"', {"u1"}),
    ('userName ew "@EXAMPLE.com"', {"u1"}),
    ('userName co "%"', {"u4"}),
    ('userName co "_"', set()),
    ('userName gt "pa"', {"u1", "u4", "u5"}),
    ('userName le "bob"', {"u2", "u3"}),
    ('displayName eq "mallory"', {"u3"}),
    ('displayName ne "mallory"', ALL_USERS - {"u3"}),  # NULL displayName is "not equal"
    ("displayName pr", {"u1", "u3", "u4"}),
    ('displayName sw "50_"', {"u4"}),
    ('externalId eq "Ext-1"', {"u1"}),
    ('externalId eq "EXT-1"', set()),  # caseExact
    ('externalId sw "ext"', {"u2"}),  # caseExact even on SQLite, whose LIKE ignores case
    ('externalId co "E"', {"u1"}),  # LIKE alone would also match "ext-1" on SQLite
    ('externalId ew "Ext-1"', {"u1"}),
    ("externalId pr", {"u1", "u2"}),
    ('id eq "u3"', {"u3"}),
    ('id eq "U3"', set()),
    ("active eq false", {"u2"}),
    ('active eq "True"', ALL_USERS - {"u2"}),
    ("active ne true", {"u2"}),
    ('meta.lastModified eq "2024-05-01T10:00:00.123Z"', {"u1"}),  # the rendered millisecond
    ('meta.lastModified eq "2024-05-01T12:00:00.123+02:00"', {"u1"}),
    ('meta.lastModified gt "2024-05-01T10:00:00.123Z"', set()),
    ('meta.lastModified ge "2024-05-01T10:00:00.123Z"', {"u1"}),
    ('meta.lastModified gt "2024-01-15T00:00:00Z"', {"u1", "u2"}),
    ('meta.created lt "2024-01-01T10:00:00Z"', {"u3", "u4", "u5"}),
    ('meta.created le "2024-01-01T10:00:00Z"', {"u1", "u3", "u4", "u5"}),
    ('meta.resourceType eq "User"', ALL_USERS),
    ('meta.resourceType eq "Group"', set()),
    ("meta pr", ALL_USERS),
    (f"{CON}:guest eq true", {"u2"}),
    (f"{CON}:admin eq true", {"u1"}),
    (f"{CON}:externalCompanyGuest eq false", ALL_USERS),
    # JSON attributes
    ('title eq "boss"', {"u1"}),
    ("title pr", {"u1"}),  # "" is not present
    ('not (title eq "Boss")', ALL_USERS - {"u1"}),
    ('title ne "Boss"', ALL_USERS - {"u1"}),
    ("title eq null", ALL_USERS - {"u1"}),
    ('userType eq "GUEST"', {"u2"}),
    ('name.givenName eq "zoë"', {"u1"}),  # ASCII case only: SQLite's lower() is ASCII
    ('name.givenName sw "o\'brien \\"b"', {"u2"}),
    ('name.givenName gt "b"', {"u1", "u2", "u3"}),
    ("name pr", {"u1", "u2", "u3", "u4"}),
    ('name.familyName co "ENS"', {"u1"}),
    (f'{ENT}:employeeNumber eq "701984"', {"u1"}),
    (f'{ENT}:manager.value eq "m-1"', {"u1"}),
    (f"{ENT}:manager pr", {"u1"}),
    (f"{ENT}:department pr", set()),
    (f"{CON}:desklessPercent gt 50", {"u2"}),
    (f"{CON}:desklessPercent ge 40", {"u1", "u2"}),
    (f"{CON}:desklessPercent eq 40", {"u1"}),
    (f"{CON}:desklessPercent ne 40", ALL_USERS - {"u1"}),
    (f"{CON}:paidHourly eq true", {"u1"}),
    (f"{CON}:paidHourly eq false", {"u2"}),
    (f"not ({CON}:paidHourly eq true)", ALL_USERS - {"u1"}),
    (f'{CON}:frontlineRole eq "Medical"', {"u1"}),
    # hostile values: bound, escaped, never interpreted
    ('nickName co "50%_off\\\\"', {"u2"}),
    ('nickName eq "50%_off\\\\"', {"u2"}),
    ('nickName sw "50%"', {"u2", "u3", "u5"}),
    ('nickName ew "_off\\\\"', {"u2", "u4"}),
    ('nickName co "\\\\"', {"u2", "u3", "u4"}),
    (f'userName eq "{DROP}"', {"u3"}),
    (f'userName co "{DROP[:10]}"', {"u3"}),
    (f'userName eq "{LONG}"', set()),
    (f'userName sw "{LONG[:500]}"', {"u5"}),
    (f'displayName co "{LONG}"', set()),
    (f"{CON}:desklessPercent lt 9223372036854775807", {"u1", "u2"}),
    (f"{CON}:desklessPercent gt -9223372036854775808", {"u1", "u2"}),
    # multi-valued, indexed in user_values
    ('emails.value eq "zj@example.com"', {"u1"}),
    ('emails eq "ZJ@EXAMPLE.COM"', {"u1"}),
    ('emails co "example.com"', {"u1", "u2"}),
    ('emails.value ne "zj@example.com"', ALL_USERS - {"u1"}),
    ('emails.type eq "WORK"', {"u1", "u2"}),
    ('emails[type eq "work" and value co "home.org"]', set()),  # one element must match
    ('emails[type eq "home" and value co "home.org"]', {"u1"}),
    ('emails.type eq "work" and emails.value co "home.org"', {"u1"}),  # separate elements
    ('emails[type eq "work"].value sw "bob"', {"u2"}),
    ('emails[not (type eq "work")]', {"u1"}),
    ("emails[primary eq true]", {"u1"}),
    ("emails.primary eq false", {"u1", "u2"}),
    ("emails[primary pr]", {"u1"}),
    ("emails pr", {"u1", "u2"}),
    ("not (emails pr)", {"u3", "u4", "u5"}),
    ("emails.value pr", {"u1", "u2"}),
    ('emails.value eq "secret@other.com"', set()),  # tenant 2's u1
    ('phoneNumbers[type eq "mobile"]', {"u2"}),
    ('addresses[locality eq "HOLLYWOOD" and type eq "work"]', {"u1"}),
    ('addresses.country sw "u"', {"u1"}),
    ("addresses.region pr", set()),
    # memberships and modules
    ('groups.value eq "g1"', {"u1"}),
    ('groups eq "G1"', {"u1"}),
    ("groups pr", {"u1"}),
    ('groups[type eq "direct"]', {"u1"}),
    ('groups.value eq "g9"', set()),  # tenant 2's membership of u2
    (f'{CON}:modules eq "ENGAGE"', {"u1"}),
    (f"{CON}:modules pr", {"u1"}),
    (f'{CON}:modules eq "unify"', set()),  # tenant 2's u1
    # logic
    ('userName eq "bob" or userName eq "percent%user" and active eq false', {"u2"}),
    ('(userName eq "bob" or userName eq "percent%user") and active eq true', {"u4"}),
    ('not (userName eq "bob" or emails pr)', {"u3", "u4", "u5"}),
    ('not (not (userName eq "bob"))', {"u2"}),
]


@pytest.mark.parametrize(("text", "expected"), USER_CASES, ids=[c[0][:60] for c in USER_CASES])
def test_user_filters(directory: Session, text: str, expected: set[str]) -> None:
    assert user_ids(directory, text) == expected


GROUP_CASES = [
    ('displayName eq "ADMINS"', {"g1"}),
    ('displayName co "al"', {"g2"}),
    ('externalId eq "G-1"', {"g1"}),
    ('externalId ne "G-1"', {"g2"}),
    ('id eq "g2"', {"g2"}),
    ('members.value eq "u1"', {"g1"}),
    ('members eq "g2"', {"g1"}),
    ('members[value eq "g2" and type eq "group"]', {"g1"}),
    ('members[value eq "u1" and type eq "Group"]', set()),
    ('members.value eq "u2"', set()),  # only tenant 2's g1 has u2
    ("members pr", {"g1"}),
    ("not (members pr)", {"g2"}),
    ('members.value eq "U1"', set()),  # ids are caseExact
    (f'{CONNECTOR_GROUP}:modules eq "hybrid"', {"g1"}),
    (f'{CONNECTOR_GROUP}:modules eq "unify"', set()),
    ('meta.created gt "2024-02-01T00:00:00Z"', {"g1"}),
    ('meta.resourceType eq "Group"', {"g1", "g2"}),
    ('displayName eq "Other admins"', set()),
]


@pytest.mark.parametrize(("text", "expected"), GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_group_filters(directory: Session, text: str, expected: set[str]) -> None:
    assert group_ids(directory, text) == expected


def test_the_other_tenant_sees_only_its_own(directory: Session) -> None:
    assert user_ids(directory, 'emails.value eq "secret@other.com"', T2) == {"u1"}
    assert user_ids(directory, 'groups.value eq "g9"', T2) == {"u2"}
    assert group_ids(directory, 'members.value eq "u2"', T2) == {"g1", "g9"}
    assert user_ids(directory, 'emails.value eq "zj@example.com"', T2) == set()


def test_hostile_filter_leaves_the_database_alone(directory: Session, engine: Engine) -> None:
    text = f'userName eq "{DROP}" or nickName co "\\"; DELETE FROM users; --"'
    statement = select(User.id).where(user_clause(parse_filter(text, USER_TYPE)))
    assert "DROP" not in str(statement.compile(engine))  # values travel as parameters
    assert user_ids(directory, text) == {"u3"}
    assert inspect(engine).has_table("users")
    assert directory.scalar(select(User.id).where(User.id == "u1", User.tenant_id == T1))


@pytest.mark.parametrize(
    ("text", "compile_"),
    [
        ('groups.display eq "Admins"', user_clause),
        ('groups.$ref eq "x"', user_clause),
        ('meta.location eq "https://x"', user_clause),
        ('meta.version eq "W/\\"1\\""', user_clause),
        ('members.$ref eq "x"', group_clause),
        ('meta.location eq "https://x"', group_clause),
    ],
)
def test_unmapped_attributes_raise(text: str, compile_: Any) -> None:
    resource_type = USER_TYPE if compile_ is user_clause else GROUP_TYPE
    node = parse_filter(text, resource_type)
    with pytest.raises(InvalidFilter):
        compile_(node)


def test_members_display_is_not_an_attribute() -> None:
    # Group.members has no `display` (RFC 7643 §8.7.1); the parser says so up front.
    with pytest.raises(InvalidFilter):
        parse_filter('members.display eq "Bob"', GROUP_TYPE)


def test_unmapped_clause_fails_the_whole_filter() -> None:
    node = parse_filter('userName eq "a" and groups.display eq "b"', USER_TYPE)
    with pytest.raises(InvalidFilter):
        user_clause(node)


# -- sortBy ----------------------------------------------------------------------------


def sorted_users(session: Session, sort_by: str, only: set[str]) -> list[str]:
    column = user_sort_column(compile_sort(sort_by, USER_TYPE))
    query = (select(User.id).where(User.tenant_id == T1, User.id.in_(only))
             .order_by(column, User.id))
    return list(session.scalars(query))


def test_user_sort_columns(directory: Session) -> None:
    assert sorted_users(directory, "userName", {"u1", "u2", "u4"}) == ["u2", "u4", "u1"]
    assert sorted_users(directory, "displayName", {"u1", "u3", "u4"}) == ["u4", "u3", "u1"]
    assert sorted_users(directory, "name.givenName", {"u1", "u3", "u4"}) == ["u4", "u3", "u1"]
    assert sorted_users(directory, "meta.lastModified", {"u1", "u2", "u3"}) == ["u3", "u2", "u1"]
    assert sorted_users(directory, f"{CON}:desklessPercent", {"u1", "u2"}) == ["u1", "u2"]
    # Multi-valued: by the primary element's value, else the first element's.
    assert sorted_users(directory, "emails", {"u1", "u2"}) == ["u2", "u1"]
    assert sorted_users(directory, "emails.type", {"u1", "u2"}) == ["u1", "u2"]


def test_group_sort_columns(directory: Session) -> None:
    column = group_sort_column(compile_sort("displayName", GROUP_TYPE))
    query = select(Group.id).where(Group.tenant_id == T1).order_by(column.desc())
    assert list(directory.scalars(query)) == ["g2", "g1"]


@pytest.mark.parametrize(
    ("sort_by", "resource_type", "to_column"),
    [
        ("groups", USER_TYPE, user_sort_column),
        (f"{CON}:modules", USER_TYPE, user_sort_column),
        ("meta.location", USER_TYPE, user_sort_column),
        ("members", GROUP_TYPE, group_sort_column),
        ("meta.resourceType", GROUP_TYPE, group_sort_column),
    ],
)
def test_unsupported_sort_raises_invalid_value(sort_by: str, resource_type: Any,
                                               to_column: Any) -> None:
    with pytest.raises(InvalidValue):
        to_column(compile_sort(sort_by, resource_type))
