"""`db.insert_together`: a creation's rows and its counter in one statement on
PostgreSQL, one after another on SQLite; all or nothing either way."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError

from connector import counters, db
from connector.models import TenantCounter, User, UserModule, UserValue
from tests.conftest import make_tenant

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
    with pytest.raises(IntegrityError):  # the last row repeats an e-mail's key (position 0)
        with db.make_sessionmaker(engine, writes=True)() as s:
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
