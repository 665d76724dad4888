"""A user's search words and indexed values on an update: only the difference with the
rows stored is written (connector.directory, `_write_difference`), and the rows end as a
fresh write of the new profile would make them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from connector import db, search_words, tenants
from connector.commands import IndexedValue, UserFields
from connector.directory import Directory, value_rows
from connector.events import WriteContext
from connector.models import Tenant, User, UserSearchWord, UserValue
from connector.status import Source
from tests.support.statements import counting

WORDS, VALUES = UserSearchWord.__table__, UserValue.__table__


def fields(name: str, given: str, family: str, *emails: str) -> UserFields:
    return UserFields(
        user_name=name, display_name=f"{given} {family}",
        data={"name": {"givenName": given, "familyName": family},
              "emails": [{"value": e, "type": "work", "primary": i == 0}
                         for i, e in enumerate(emails)]},
        values=tuple(IndexedValue("emails", i, e, "work", i == 0, data={"value": e})
                     for i, e in enumerate(emails)))


def fresh_words(f: UserFields) -> set[str]:
    """The words a fresh write (a creation) gives the profile."""
    return set(search_words.profile_words(f.user_name, f.display_name, f.data))


def stored_words(session: Session, tenant: Tenant, user_id: str) -> set[str]:
    return set(session.scalars(select(UserSearchWord.word).where(
        UserSearchWord.tenant_id == tenant.id, UserSearchWord.user_id == user_id)))


def fresh_values(tenant: Tenant, user_id: str, f: UserFields) -> list[tuple[Any, ...]]:
    return sorted(_value_tuple(r) for r in value_rows(tenant.id, user_id, f.values))


def stored_values(session: Session, tenant: Tenant, user_id: str) -> list[tuple[Any, ...]]:
    rows = session.execute(select(VALUES).where(
        VALUES.c.tenant_id == tenant.id, VALUES.c.user_id == user_id)).mappings()
    return sorted(_value_tuple(r) for r in rows)


def assert_stored_as_fresh(session: Session, tenant: Tenant, user_id: str,
                           f: UserFields) -> None:
    """The user's stored words and values are those a fresh write of `f` gives."""
    assert stored_words(session, tenant, user_id) == fresh_words(f)
    assert stored_values(session, tenant, user_id) == fresh_values(tenant, user_id, f)


def update(d: Directory, user: User, after: UserFields, batched: bool) -> None:
    """Update the user alone (a SCIM write) or inside a sync page's block."""
    if batched:
        with d.batched_events():
            d.update_user(user, after)
    else:
        d.update_user(user, after)


def deletes(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("DELETE")]


def _value_tuple(row: Any) -> tuple[Any, ...]:
    return tuple(db.json_text(row[c.key]) if c.key == "data" else row[c.key]
                 for c in VALUES.columns)


@pytest.fixture
def setup(session: Session) -> tuple[Tenant, Directory]:
    tenant, _ = tenants.create_tenant(session, "Rewrites", dt.datetime.now(dt.UTC))
    session.flush()
    ctx = WriteContext(tenant.id, Source.ADMIN, "admin:test", "test", dt.datetime.now(dt.UTC))
    return tenant, Directory(session, tenant, ctx)


def created(session: Session, d: Directory, f: UserFields) -> User:
    user_id = d.create_user(f).id
    session.commit()
    user = session.get(User, (d.tenant.id, user_id))
    assert user is not None
    return user


@pytest.mark.parametrize("batched", [False, True], ids=["one", "page"])
def test_a_rename_leaves_the_rows_a_fresh_write_makes(
        session: Session, setup: tuple[Tenant, Directory], batched: bool) -> None:
    tenant, d = setup
    user = created(session, d, fields("ann", "Ann", "Lindqvist", "ann@corp.example",
                                      "al@home.example"))
    after = fields("ann", "Ann", "Berg", "ann.berg@corp.example", "al@home.example",
                   "third@x.example")
    update(d, user, after, batched)
    session.commit()
    assert stored_words(session, tenant, user.id) == fresh_words(after)
    assert "lindqvist" not in stored_words(session, tenant, user.id)
    assert stored_values(session, tenant, user.id) == fresh_values(tenant, user.id, after)
    # and back to fewer values: the rows beyond them go
    fewer = fields("ann", "Ann", "Berg", "al@home.example")
    d.update_user(user, fewer)
    session.commit()
    assert stored_values(session, tenant, user.id) == fresh_values(tenant, user.id, fewer)


@pytest.mark.parametrize("batched", [False, True], ids=["one", "page"])
def test_rows_the_current_folding_does_not_make_go_on_the_next_rewrite(
        session: Session, setup: tuple[Tenant, Directory], batched: bool) -> None:
    """Compared with the rows STORED, not with those the old profile gives: a word an
    older folding wrote, a value row nobody should have, a row with its key but another
    content, all go."""
    tenant, d = setup
    user = created(session, d, fields("bo", "Bo", "Old", "bo@corp.example"))
    session.execute(insert(WORDS), [{"tenant_id": tenant.id, "user_id": user.id,
                                     "word": "junkword"}])
    session.execute(insert(VALUES), [
        {"tenant_id": tenant.id, "user_id": user.id, "attr": "phoneNumbers", "position": 7,
         "value": "junk", "value_norm": "junk", "type": None, "primary": False,
         "display": None, "data": {}}])
    session.execute(VALUES.update().where(  # same key, another content than a write gives
        VALUES.c.tenant_id == tenant.id, VALUES.c.user_id == user.id,
        VALUES.c.attr == "emails", VALUES.c.position == 0).values(display="stale"))
    session.commit()
    after = fields("bo", "Bo", "New", "bo@corp.example", "b2@corp.example")
    update(d, user, after, batched)
    session.commit()
    assert_stored_as_fresh(session, tenant, user.id, after)


def test_a_user_rewritten_twice_in_a_page_ends_with_its_last_rows_and_a_rolled_back_one_not(
        session: Session, setup: tuple[Tenant, Directory]) -> None:
    tenant, d = setup
    first = created(session, d, fields("cy", "Cy", "Old", "cy@corp.example"))
    second = created(session, d, fields("di", "Di", "Old", "di@corp.example"))
    middle = fields("cy", "Cy", "Middle", "middle@corp.example", "m2@corp.example")
    last = fields("cy", "Cy", "Last", "last@corp.example")
    never = fields("di", "Di", "Never", "never@corp.example")
    with d.batched_events():
        d.update_user(first, middle)
        d.flush_values()  # a lookup by mail in the page: the values so far are written
        assert stored_values(session, tenant, first.id) == fresh_values(
            tenant, first.id, middle)
        with pytest.raises(RuntimeError), d.savepoint():
            d.update_user(second, never)
            raise RuntimeError("this change fails")
        d.update_user(first, last)
    session.commit()
    assert_stored_as_fresh(session, tenant, first.id, last)
    before = fields("di", "Di", "Old", "di@corp.example")
    assert_stored_as_fresh(session, tenant, second.id, before)


@pytest.mark.parametrize("batched", [False, True], ids=["one", "page"])
def test_rows_that_stay_the_same_are_not_written_again(
        session: Session, setup: tuple[Tenant, Directory], batched: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A new family name changes its own words, a new second address its own value row:
    only those rows are deleted and inserted, the others are left alone."""
    tenant, d = setup
    user = created(session, d, fields("ed", "Ed", "Stone", "ed@corp.example",
                                      "ed@home.example"))
    inserted: list[tuple[str, dict[str, Any]]] = []
    real_insert = db.insert_many

    def spy_insert(s: Session, table: Any, rows: list[dict[str, Any]]) -> None:
        inserted.extend((table.name, r) for r in rows)
        real_insert(s, table, rows)

    monkeypatch.setattr(db, "insert_many", spy_insert)
    with counting(session.get_bind()) as issued:
        after = fields("ed", "Ed", "Flint", "ed@corp.example", "ed@work.example")
        update(d, user, after, batched)
        session.commit()
    deleted = deletes(issued)
    words = sorted(r["word"] for table, r in inserted if table == WORDS.name)
    before = fields("ed", "Ed", "Stone", "ed@corp.example", "ed@home.example")
    assert words == sorted(fresh_words(after) - fresh_words(before))
    assert "flint" in words and len(words) < len(fresh_words(after))
    values = [(r["attr"], r["position"], r["value"]) for table, r in inserted
              if table == VALUES.name]
    assert values == [("emails", 1, "ed@work.example")]
    assert len([s for s in deleted if "user_search_words" in s]) == 1
    assert len([s for s in deleted if "user_values" in s]) == 1
    assert_stored_as_fresh(session, tenant, user.id, after)


def test_a_rename_that_only_adds_words_deletes_nothing(
        session: Session, setup: tuple[Tenant, Directory]) -> None:
    tenant, d = setup
    user = created(session, d, fields("fa", "Fa", "Moon", "fa@corp.example"))
    with counting(session.get_bind()) as issued:
        after = UserFields(user_name="fa", display_name="Fa Moon Sun",
                           data=fields("fa", "Fa", "Moon", "fa@corp.example").data,
                           values=fields("fa", "Fa", "Moon", "fa@corp.example").values)
        d.update_user(user, after)
        session.commit()
    assert deletes(issued) == []
    assert stored_words(session, tenant, user.id) == fresh_words(after)


def test_delete_many_deletes_exactly_the_rows_given(
        session: Session, setup: tuple[Tenant, Directory]) -> None:
    tenant, _ = setup
    rows = [{"tenant_id": tenant.id, "user_id": u, "word": w}
            for u in ("u1", "u2") for w in ("alpha", "beta", "gamma")]
    db.insert_many(session, WORDS, rows)
    db.delete_many(session, WORDS, [  # a pair of a word and another user's id stays
        {"tenant_id": tenant.id, "user_id": "u1", "word": "beta"},
        {"tenant_id": tenant.id, "user_id": "u2", "word": "gamma"},
        {"tenant_id": tenant.id, "user_id": "u3", "word": "alpha"}])
    db.delete_many(session, WORDS, [])
    session.commit()
    assert sorted(tuple(r) for r in session.execute(
        select(UserSearchWord.user_id, UserSearchWord.word))) == [
            ("u1", "alpha"), ("u1", "gamma"), ("u2", "alpha"), ("u2", "beta")]
