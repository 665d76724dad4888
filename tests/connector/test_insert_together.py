"""`db.insert_together`: a creation's rows and its counter in one statement on
PostgreSQL, one after another on SQLite; all or nothing either way."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, delete, insert, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector import counters, db, events, tenants
from connector.commands import UserFields
from connector.directory import Directory
from connector.events import WriteContext
from connector.models import Event, Tenant, TenantCounter, User, UserModule, UserValue
from connector.status import Source
from tests.support.clients import make_tenant

NOW = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
USERS, VALUES, MODULES = User.__table__, UserValue.__table__, UserModule.__table__


def user_row(tenant_id: str, user_id: str, name: str) -> dict[str, object]:
    return {"tenant_id": tenant_id, "id": user_id, "user_name": name,
            "user_name_norm": name.casefold(), "external_id": None, "display_name": None,
            "display_name_norm": None, "active": True, "idp_active": True,
            "in_deleted_list": False, "guest": False, "external_company_guest": False,
            "admin": False, "frontline": None, "origin": "scim", "removed_at": None,
            "created_at": NOW, "modified_at": NOW, "version": 1,
            "data": {"emails": [{"value": name}]}}


def value_rows(tenant_id: str, user_id: str, *emails: str) -> list[dict[str, object]]:
    return [{"tenant_id": tenant_id, "user_id": user_id, "attr": "emails", "position": n,
             "value": e, "value_norm": e.casefold(), "type": "work", "primary": n == 0,
             "display": None, "data": {}} for n, e in enumerate(emails)]


def live_users(engine: Engine, tenant_id: str) -> int | None:
    with db.make_sessionmaker(engine)() as s:
        return s.scalar(select(TenantCounter.live_users)
                        .where(TenantCounter.tenant_id == tenant_id))


def create(engine: Engine, tenant_id: str, user_id: str, name: str, *emails: str,
           modules: tuple[str, ...] = ()) -> int:
    with db.make_sessionmaker(engine, writes=True)() as s:
        changed = db.insert_together(
            s, [(USERS, [user_row(tenant_id, user_id, name)]),
                (VALUES, value_rows(tenant_id, user_id, *emails)),
                (MODULES, [{"tenant_id": tenant_id, "user_id": user_id, "module": m}
                           for m in modules])],
            counters.BUMP, counters.bump_params(tenant_id, +1))
        s.commit()
        return changed


def test_rows_of_every_table_and_the_counter_land_together(engine: Engine) -> None:
    tenant_id, _ = make_tenant(engine)
    with db.make_sessionmaker(engine, writes=True)() as s:
        counters.recount_live_users(s, tenant_id)
        s.commit()
    assert create(engine, tenant_id, "u1", "Ann@Example.com", "ann@example.com",
                  "ann@home.example", modules=("chat",)) == 1
    # The same shape again, other values: the reused statement takes the new ones.
    assert create(engine, tenant_id, "u2", "Bob@Example.com", "bob@example.com",
                  "bob@home.example", modules=("chat",)) == 1
    # Another shape (no module, one e-mail).
    assert create(engine, tenant_id, "u3", "Cy@Example.com", "cy@example.com") == 1
    with db.make_sessionmaker(engine)() as s:
        users = s.execute(select(User.id, User.user_name, User.data)
                          .where(User.tenant_id == tenant_id).order_by(User.id)).all()
        values = s.execute(select(UserValue.user_id, UserValue.position, UserValue.value)
                           .where(UserValue.tenant_id == tenant_id)
                           .order_by(UserValue.user_id, UserValue.position)).all()
        modules = s.execute(select(UserModule.user_id, UserModule.module)
                            .where(UserModule.tenant_id == tenant_id)
                            .order_by(UserModule.user_id)).all()
    assert [(u.id, u.user_name) for u in users] == [
        ("u1", "Ann@Example.com"), ("u2", "Bob@Example.com"), ("u3", "Cy@Example.com")]
    assert users[1].data == {"emails": [{"value": "Bob@Example.com"}]}
    assert [tuple(v) for v in values] == [
        ("u1", 0, "ann@example.com"), ("u1", 1, "ann@home.example"),
        ("u2", 0, "bob@example.com"), ("u2", 1, "bob@home.example"),
        ("u3", 0, "cy@example.com")]
    assert [tuple(m) for m in modules] == [("u1", "chat"), ("u2", "chat")]
    assert live_users(engine, tenant_id) == 3


def test_a_missing_counter_row_is_reported_not_invented(engine: Engine) -> None:
    tenant_id, _ = make_tenant(engine)
    with db.make_sessionmaker(engine, writes=True)() as s:  # as before the counters existed
        s.execute(delete(TenantCounter).where(TenantCounter.tenant_id == tenant_id))
        s.commit()
    assert create(engine, tenant_id, "u1", "Ann@Example.com", "ann@example.com") == 0
    assert live_users(engine, tenant_id) is None  # the caller recounts


def test_a_failing_row_writes_nothing(engine: Engine) -> None:
    tenant_id, _ = make_tenant(engine)
    with db.make_sessionmaker(engine, writes=True)() as s:
        counters.recount_live_users(s, tenant_id)
        s.commit()
    create(engine, tenant_id, "u1", "Ann@Example.com", "ann@example.com")
    create(engine, tenant_id, "u2", "Bob@Example.com", "bob@example.com")
    # The last row repeats an e-mail's key (position 0).
    with pytest.raises(IntegrityError), db.make_sessionmaker(engine, writes=True)() as s:
        db.insert_together(
            s, [(USERS, [user_row(tenant_id, "u3", "Cy@Example.com")]),
                (VALUES, value_rows(tenant_id, "u3", "cy@example.com")
                 + value_rows(tenant_id, "u3", "again@example.com"))],
            counters.BUMP, counters.bump_params(tenant_id, +1))
        s.commit()
    with db.make_sessionmaker(engine)() as s:
        ids = s.scalars(select(User.id).where(User.tenant_id == tenant_id)
                        .order_by(User.id)).all()
        cy_values = s.scalars(select(UserValue.value).where(UserValue.user_id == "u3")).all()
    assert ids == ["u1", "u2"]
    assert cy_values == []
    assert live_users(engine, tenant_id) == 2


def test_rows_of_one_table_take_their_ids_in_list_order(engine: Engine) -> None:
    tenant_id, _ = make_tenant(engine)
    kinds = [f"test.kind{n}" for n in (3, 1, 2, 0)]
    rows = [{"tenant_id": tenant_id, "subject_type": "user", "subject_id": "u1", "kind": k,
             "old_value": None, "new_value": {"n": n}, "effective_at": NOW,
             "recorded_at": NOW, "source": "system", "actor": "test",
             "correlation_id": "order", "object_id": None} for n, k in enumerate(kinds)]
    with db.make_sessionmaker(engine, writes=True)() as s:
        db.insert_together(s, [(Event.__table__, rows)], counters.BUMP,
                           counters.bump_params(tenant_id, 0))
        s.commit()
        written = s.execute(select(Event.kind, Event.new_value, Event.old_value)
                            .where(Event.correlation_id == "order").order_by(Event.id)).all()
    assert [w.kind for w in written] == kinds
    assert [w.new_value for w in written] == [{"n": n} for n in range(4)]
    assert all(w.old_value is None for w in written)


# -- the directory's writes ---------------------------------------------------------------


def directory(session: Session, tenant_id: str) -> Directory:
    tenant = session.get(Tenant, tenant_id)
    assert tenant is not None
    return Directory(session, tenant, WriteContext(tenant_id, Source.SCIM, "scim-test", "t",
                                                   dt.datetime.now(dt.UTC)))


def fields(name: str, active: bool, modules: list[str] | None = None) -> UserFields:
    return UserFields(user_name=name, external_id=None, display_name=None, data={}, values=(),
                      active=active, guest=False, external_company_guest=False, admin=False,
                      modules=modules)


def test_a_created_user_is_written_at_once_and_held_as_loaded(engine: Engine) -> None:
    tenant_id, _ = make_tenant(engine)
    with db.make_sessionmaker(engine, writes=True)() as s:
        user = directory(s, tenant_id).create_user(fields("Ann@Example.com", True))
        assert inspect(user).persistent and not s.new and not s.dirty  # nothing to flush
        assert s.scalar(select(User.user_name).where(User.id == user.id)) == "Ann@Example.com"
        assert s.scalars(select(Event.kind).where(Event.subject_id == user.id)).all() == [
            events.USER_CREATED]
        s.commit()
    assert live_users(engine, tenant_id) == 1


def test_one_changed_user_is_written_with_its_events(engine: Engine) -> None:
    tenant_id, _ = make_tenant(engine)
    with db.make_sessionmaker(engine, writes=True)() as s:
        user = directory(s, tenant_id).create_user(fields("Ann@Example.com", True))
        s.commit()
        directory(s, tenant_id).update_user(user, fields("Ann@Example.com", False))
        # Written by the call itself (the session never autoflushes), not left to commit.
        assert not s.dirty
        row = s.execute(select(User.active, User.in_deleted_list, User.version)
                        .where(User.id == user.id)).one()
        assert tuple(row) == (False, True, 2)
        assert s.scalars(select(Event.kind).where(Event.subject_id == user.id)
                         .order_by(Event.id)).all() == [
            events.USER_CREATED, events.USER_STATUS, events.USER_DELETED_LIST]
        s.commit()


def test_a_call_that_adds_rows_leaves_them_all_to_the_flush(engine: Engine) -> None:
    tenant_id, _ = make_tenant(engine)
    with db.make_sessionmaker(engine, writes=True)() as s:
        user = directory(s, tenant_id).create_user(fields("Ann@Example.com", True))
        s.commit()
        module = tenants.add_module(s, WriteContext(tenant_id, Source.ADMIN, "admin", "t",
                                                    dt.datetime.now(dt.UTC)), "Chat")
        s.commit()
        directory(s, tenant_id).update_user(user, fields("Ann@Example.com", True, [module]))
        assert s.dirty  # the user's new version waits for the flush with its module row
        s.commit()
        assert s.scalars(select(UserModule.module).where(UserModule.user_id == user.id)
                         ).all() == [module]
        assert s.scalar(select(User.version).where(User.id == user.id)) == 2


def test_insert_many_raises_the_orm_paths_integrity_error_on_both_databases(
        engine: Engine) -> None:
    """A duplicate in `insert_many` (COPY on PostgreSQL, executemany on SQLite) raises
    SQLAlchemy's IntegrityError, as the ORM path does, so one `except` handles both."""
    tenant_id, _ = make_tenant(engine)
    with db.make_sessionmaker(engine, writes=True)() as s:
        db.insert_many(s, USERS, [user_row(tenant_id, "u1", "ana@example.com")])
        with pytest.raises(IntegrityError) as raised, s.begin_nested():
            db.insert_many(s, USERS, [user_row(tenant_id, "u2", "ANA@example.com")])
        assert "user_name_norm" in str(raised.value.orig)  # the column, as both name it
        # The transaction goes on after the savepoint's rollback: nothing half-written.
        assert s.scalars(select(User.id).where(User.tenant_id == tenant_id)).all() == ["u1"]


def test_a_long_statement_is_converted_once_on_postgresql(engine: Engine) -> None:
    """psycopg converts placeholders through a cache it keeps only for statements of at
    most 50 parameters, unless told otherwise (`db._cache_long_statements`): a POST's
    statement has about 80, and converting it cost a tenth of the request."""
    if engine.dialect.name != "postgresql":
        pytest.skip("psycopg's conversion: PostgreSQL only")
    from psycopg import _queries

    tenant_id, _ = make_tenant(engine)
    emails = [f"e{n}@example.com" for n in range(5)]  # 20 + 5 * 10 + 4 parameters
    create(engine, tenant_id, "u1", "Ann@Example.com", *emails)
    before = _queries._query2pg.cache_info()
    create(engine, tenant_id, "u2", "Bob@Example.com", *(f"b{e}" for e in emails))
    after = _queries._query2pg.cache_info()
    assert after.hits > before.hits
    assert after.misses == before.misses


def test_insert_many_stores_what_sqlalchemys_executemany_stores(engine: Engine) -> None:
    """`insert_many` (COPY on PostgreSQL, the driver's executemany with each column's
    bind processor on SQLite) reads back exactly what SQLAlchemy's own executemany
    writes: aware instants, JSON (objects, non-ASCII, null), booleans and NULLs."""
    tenant_id, _ = make_tenant(engine)
    later = dt.datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))

    def rows(prefix: str) -> list[dict[str, object]]:
        out = []
        for n, name in enumerate(["ana@example.com", "Jiří.Dvořák@example.com"]):
            row = user_row(tenant_id, f"{prefix}{n}", f"{prefix}{name}")
            row.update({"external_id": f"{prefix}-ext-{n}" if n else None,
                        "display_name": "Jiří" if n else None, "active": bool(n),
                        "guest": not n, "modified_at": later, "frontline": None,
                        "data": {"name": {"givenName": "Jiří"}, "n": [1, 2.5, None, True]}
                        if n else {}})
            out.append(row)
        return out

    with db.make_sessionmaker(engine, writes=True)() as s:
        db.insert_many(s, USERS, rows("a"))
        s.execute(insert(USERS), rows("b"))
        s.commit()
    columns = [c for c in USERS.columns if c.key not in ("tenant_id", "id", "user_name",
                                                          "user_name_norm", "external_id")]
    with db.make_sessionmaker(engine)() as s:
        read = {r.id: r for r in s.execute(select(USERS).where(USERS.c.tenant_id == tenant_id))}
    for n in (0, 1):
        ours, theirs = read[f"a{n}"], read[f"b{n}"]
        assert [getattr(ours, c.key) for c in columns] == [getattr(theirs, c.key) for c in columns]
    assert read["a1"].modified_at == later and read["a1"].modified_at.tzinfo is not None
    assert read["a1"].data == {"name": {"givenName": "Jiří"}, "n": [1, 2.5, None, True]}
    assert read["a0"].frontline is None and read["a0"].external_id is None
