"""Admin reads (connector.browse): both query strategies give the same answers."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from connector import browse, migrate, tenants
from connector.commands import GroupFields, IndexedValue, MemberChange, UserFields
from connector.directory import Directory
from connector.errors import InvalidSetting
from connector.events import WriteContext
from connector.models import Tenant, User, UserSearchWord, UserValue
from connector.status import Source


def ctx(tenant_id: str) -> WriteContext:
    return WriteContext(tenant_id, Source.ADMIN, "admin:test", "test", dt.datetime.now(dt.UTC))


@pytest.fixture
def seeded(session: Session) -> tuple[Tenant, list[str]]:
    """12 users: every 3rd inactive, every 4th a guest, odd ones with Hybrid, users 0-5
    in a group carrying Unify; display names run backwards, one has none."""
    tenant, _ = tenants.create_tenant(session, "Browse", dt.datetime.now(dt.UTC))
    session.flush()
    d = Directory(session, tenant, ctx(tenant.id))
    ids = []
    for i in range(12):
        email = f"mail{i:02d}@corp.example"
        user = d.create_user(UserFields(
            user_name=f"user{i:02d}@example.com",
            display_name=None if i == 5 else f"Person {11 - i:02d}",
            data={"emails": [{"value": email, "primary": True}]},
            values=(IndexedValue("emails", 0, email, None, True),),
            active=i % 3 != 0, guest=i % 4 == 0,
            modules=("Hybrid",) if i % 2 else ()))
        ids.append(user.id)
    d.create_group(GroupFields(display_name="Crew", modules=("Unify",)), ids[:6])
    session.commit()
    return tenant, ids


def names(page: browse.Page) -> list[str]:
    return [u.user_name for u in page.items]


@pytest.mark.parametrize("set_limit", [0, 10_000], ids=["probe", "set"])
def test_module_filter_is_own_or_via_group_either_way(
        session: Session, seeded: tuple[Tenant, list[str]], set_limit: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browse, "MODULE_SET_LIMIT", set_limit)
    tenant, _ = seeded
    unify = browse.list_users(session, tenant.id, browse.user_query({"module": "unify"}))
    assert names(unify) == [f"user{i:02d}@example.com" for i in range(6)]
    both = browse.list_users(session, tenant.id, browse.user_query(
        {"module": "Hybrid", "status": "active", "per_page": "2", "page": "2"}))
    active_odd = [i for i in range(12) if i % 2 and i % 3 != 0]  # 1, 5, 7, 11
    assert both.total == len(active_odd)
    assert names(both) == [f"user{i:02d}@example.com" for i in active_odd[2:4]]
    assert browse.list_users(session, tenant.id,
                             browse.user_query({"module": "Nope"})).total == 0


def test_search_filters_sorts_and_pages_in_memory_like_the_database(
        session: Session, seeded: tuple[Tenant, list[str]]) -> None:
    tenant, _ = seeded
    for args in ({"status": "inactive"}, {"guest": "true"}, {"module": "Hybrid"},
                 {"sort": "-displayName"}, {"sort": "displayName", "per_page": "5",
                                            "page": "3"}, {"sort": "-created"}):
        plain = browse.list_users(session, tenant.id, browse.user_query(args))
        searched = browse.list_users(session, tenant.id,
                                     browse.user_query({**args, "q": "USER"}))
        assert (names(searched), searched.total) == (names(plain), plain.total), args
    no_display = browse.list_users(session, tenant.id, browse.user_query(
        {"q": "user", "sort": "-displayName", "per_page": "1", "page": "12"}))
    assert names(no_display) == ["user05@example.com"]  # no display name: last


def test_search_matches_username_displayname_email_prefix_and_id(
        session: Session, seeded: tuple[Tenant, list[str]]) -> None:
    tenant, ids = seeded
    for q, expected in (("user03", ["user03@example.com"]),
                        ("person 00", ["user11@example.com"]),
                        ("MAIL07", ["user07@example.com"]), (ids[4], ["user04@example.com"]),
                        ("nobody", [])):
        page = browse.list_users(session, tenant.id, browse.user_query({"q": q}))
        assert names(page) == expected, q


def test_a_broad_search_says_it_was_capped(session: Session, seeded: tuple[Tenant, list[str]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browse, "SEARCH_CAP", 4)
    tenant, _ = seeded
    page = browse.list_users(session, tenant.id, browse.user_query({"q": "user"}))
    assert page.capped and page.total == 4
    narrow = browse.list_users(session, tenant.id, browse.user_query({"q": "user1"}))
    assert not narrow.capped and narrow.total == 2


def test_search_finds_any_word_of_a_name_or_email_without_case_or_accents(
        session: Session) -> None:
    tenant, _ = tenants.create_tenant(session, "Words", dt.datetime.now(dt.UTC))
    session.flush()
    d = Directory(session, tenant, ctx(tenant.id))

    def person(user_name: str, display: str, given: str, family: str, email: str) -> str:
        return d.create_user(UserFields(
            user_name=user_name, display_name=display,
            data={"name": {"givenName": given, "familyName": family},
                  "emails": [{"value": email, "primary": True}]},
            values=(IndexedValue("emails", 0, email, None, True),))).id

    jiri = person("jd01", "Jiří Dvořák", "Jiří", "Dvořák", "jiri.dvorak@example.com")
    person("sn02", "Søren Nørgaard", "Søren", "Nørgaard", "soren@firma.dk")
    person("ab03", "Anna Berg", "Anna", "Berg", "anna@mail.example.org")
    session.commit()

    def found(q: str) -> list[str]:
        return names(browse.list_users(session, tenant.id, browse.user_query({"q": q})))

    assert found("Dvořák") == found("dvorak") == found("DVOR") == ["jd01"]
    assert found("Jiri") == found("jiří dvořák") == found("dvorak jiri") == ["jd01"]
    assert found("example.com") == found("@example.com") == ["jd01"]
    assert found("example") == ["ab03", "jd01"]  # example.com and mail.example.org
    assert found("example.org") == found("mail.example") == ["ab03"]
    assert found("norgaard") == found("Søren") == found("firma.dk") == ["sn02"]
    assert found("jiri berg") == [] and found("@") == []
    # a rename moves the user's words: the old name finds it no more
    user = session.get(User, (tenant.id, jiri))
    assert user is not None
    d.update_user(user, UserFields(
        user_name="jd01", display_name="Jiří Nováček",
        data={"name": {"givenName": "Jiří", "familyName": "Nováček"},
              "emails": [{"value": "jiri@novacek.cz", "primary": True}]},
        values=(IndexedValue("emails", 0, "jiri@novacek.cz", None, True),)))
    d.update_user(user, UserFields(  # twice in one transaction, as a /Bulk request may
        user_name="jd01", display_name="Jiří Nováček Jr",
        data={"name": {"givenName": "Jiří", "familyName": "Nováček"},
              "emails": [{"value": "jiri@novacek.cz", "primary": True}]},
        values=(IndexedValue("emails", 0, "jiri@novacek.cz", None, True),)))
    session.commit()
    assert found("jr") == ["jd01"]
    assert found("dvorak") == [] and found("example.com") == []
    assert found("novacek") == found("novacek.cz") == ["jd01"]
    with pytest.raises(InvalidSetting, match="at most 8 words"):
        browse.user_query({"q": "a b c d e f g h i"})


def test_a_pages_renames_move_their_words_together_and_a_rolled_back_one_not(
        session: Session) -> None:
    """Inside batched_events (a sync page) renamed users' words are written at the
    block's end, for all of them together: the last rename of a user wins, and
    a rename in a savepoint that rolls back leaves the user's words as they were."""
    tenant, _ = tenants.create_tenant(session, "Page", dt.datetime.now(dt.UTC))
    session.flush()
    d = Directory(session, tenant, ctx(tenant.id))

    def fields(name: str, family: str) -> UserFields:
        return UserFields(user_name=name, display_name=f"Ann {family}",
                          data={"name": {"givenName": "Ann", "familyName": family}})

    ids = [d.create_user(fields(f"u{i}", f"Old{i}")).id for i in range(3)]
    session.commit()
    users = [session.get(User, (tenant.id, i)) for i in ids]
    with d.batched_events():
        d.update_user(users[0], fields("u0", "Lindqvist"))  # type: ignore[arg-type]
        d.update_user(users[1], fields("u1", "First"))  # type: ignore[arg-type]
        d.update_user(users[1], fields("u1", "Second"))  # type: ignore[arg-type]
        with pytest.raises(RuntimeError), d.savepoint():
            d.update_user(users[2], fields("u2", "Never"))  # type: ignore[arg-type]
            raise RuntimeError("this rename fails")
    session.commit()

    def found(q: str) -> list[str]:
        return names(browse.list_users(session, tenant.id, browse.user_query({"q": q})))

    assert found("lindqvist") == ["u0"] and found("old0") == []
    assert found("second") == ["u1"] and found("first") == [] and found("old1") == []
    assert found("old2") == ["u2"] and found("never") == []


def test_a_pages_address_changes_move_their_values_together_and_a_rolled_back_one_not(
        session: Session) -> None:
    """Inside batched_events (a sync page) a user's indexed values (its e-mail
    addresses, which SCIM filters and the admin list read) are rewritten at the block's
    end with the page's others: the last change of a user wins, `flush_values` writes
    them early for a lookup, and a change in a savepoint that rolls back leaves the
    user's values as they were."""
    tenant, _ = tenants.create_tenant(session, "Values", dt.datetime.now(dt.UTC))
    session.flush()
    d = Directory(session, tenant, ctx(tenant.id))

    def fields(name: str, *emails: str) -> UserFields:
        return UserFields(user_name=name, data={"emails": [{"value": e} for e in emails]},
                          values=tuple(IndexedValue("emails", i, e, None, i == 0)
                                       for i, e in enumerate(emails)))

    ids = [d.create_user(fields(f"v{i}", f"old{i}@corp.example")).id for i in range(4)]
    session.commit()
    users = [session.get(User, (tenant.id, i)) for i in ids]

    def stored(user_id: str) -> list[str]:
        return list(session.scalars(select(UserValue.value).where(
            UserValue.tenant_id == tenant.id, UserValue.user_id == user_id)
            .order_by(UserValue.position)))

    with d.batched_events():
        d.update_user(users[0], fields("v0", "a@corp.example", "b@corp.example"))  # type: ignore[arg-type]
        d.update_user(users[1], fields("v1", "first@corp.example"))  # type: ignore[arg-type]
        d.update_user(users[1], fields("v1", "second@corp.example"))  # type: ignore[arg-type]
        assert stored(ids[0]) == ["old0@corp.example"]  # not yet: at the block's end
        d.update_user(users[3], fields("v3"))  # type: ignore[arg-type]
        d.flush_values()
        assert stored(ids[0]) == ["a@corp.example", "b@corp.example"] and stored(ids[3]) == []
        with pytest.raises(RuntimeError), d.savepoint():
            d.update_user(users[2], fields("v2", "never@corp.example"))  # type: ignore[arg-type]
            raise RuntimeError("this change fails")
    session.commit()
    assert stored(ids[0]) == ["a@corp.example", "b@corp.example"]
    assert stored(ids[1]) == ["second@corp.example"]
    assert stored(ids[2]) == ["old2@corp.example"]
    assert stored(ids[3]) == []
    assert found_by_mail(session, tenant.id, "second@corp.example") == ["v1"]


def found_by_mail(session: Session, tenant_id: str, address: str) -> list[str]:
    return names(browse.list_users(session, tenant_id, browse.user_query({"q": address})))


def test_restore_brings_back_the_modules_a_removal_took(
        session: Session, seeded: tuple[Tenant, list[str]]) -> None:
    tenant, ids = seeded
    d = Directory(session, tenant, ctx(tenant.id))
    user = session.get(User, (tenant.id, ids[1]))
    assert user is not None
    d.remove_user(user)
    session.flush()
    hybrid = browse.list_users(session, tenant.id, browse.user_query({"module": "Hybrid"}))
    assert "user01@example.com" not in names(hybrid)  # no assignment rows while removed
    d.restore_user(user)
    session.flush()
    assert browse.user_detail(session, tenant.id, ids[1])["ownModules"] == ["Hybrid"]


def test_export_has_effective_modules_and_the_primary_email(
        session: Session, seeded: tuple[Tenant, list[str]]) -> None:
    tenant, ids = seeded
    d = Directory(session, tenant, ctx(tenant.id))
    group = d.create_group(GroupFields(display_name="Late", modules=("Engage",)))
    d.update_group(group, GroupFields(display_name="Late", modules=("Engage",)),
                   [MemberChange("add", (ids[1],))])
    session.commit()
    rows = list(browse.export_users(session, tenant.id, batch=5))
    assert [r.user_name for r in rows] == sorted(r.user_name for r in rows)
    assert len(rows) == 12
    assert rows[1].modules == ["Engage", "Hybrid", "Unify"]
    assert rows[1].email == "mail01@corp.example"
    assert rows[11].modules == ["Hybrid"] and rows[0].modules == ["Unify"]


def test_the_migration_backfills_the_words_of_existing_users(
        engine: Engine, session: Session, seeded: tuple[Tenant, list[str]]) -> None:
    """Users written before the search words existed are found by them after it."""
    tenant, _ = seeded
    cfg = migrate.alembic_config()
    before = ScriptDirectory.from_config(cfg).get_revision("0023").down_revision
    session.close()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, str(before))
    migrate.upgrade(engine)
    assert session.scalar(select(func.count()).select_from(UserSearchWord)) > 12 * 5
    page = browse.list_users(session, tenant.id, browse.user_query({"q": "corp.example"}))
    assert page.total == 12
