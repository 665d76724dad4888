"""The page applier on its own, on SQLite and PostgreSQL: what a page writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, select

from azure_sync.applier import PageApplier
from azure_sync.scope import Scope
from connector.db import make_sessionmaker
from connector.models import Tenant, User
from tests.conftest import make_tenant
from tests.support.statements import listening

NOW = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


def item(name: str) -> dict[str, Any]:
    return {"id": f"oid-{name}", "userPrincipalName": f"{name}@contoso.example",
            "accountEnabled": True}


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()).upper())

    with listening(engine, record):
        yield seen


def apply(engine: Engine, tenant_id: str, run_id: int, items: list[dict[str, Any]],
          careful: bool) -> dict[str, int]:
    with make_sessionmaker(engine)() as s:
        tenant = s.get(Tenant, tenant_id)
        assert tenant is not None
        applier = PageApplier(s, tenant, run_id, True, NOW, scope=Scope())
        applier.apply("users", items, careful=careful)
        s.commit()
    return dict(applier.counts)


def seen_in_run(engine: Engine, tenant_id: str) -> dict[str, int | None]:
    with make_sessionmaker(engine)() as s:
        rows = s.execute(select(User.external_id, User.seen_in_run)
                         .where(User.tenant_id == tenant_id))
        return {external_id: run for external_id, run in rows}


def test_a_full_round_marks_users_in_the_write_that_creates_or_changes_them(
        engine: Engine) -> None:
    tenant_id, _ = make_tenant(engine)
    with statements(engine) as one_by_one:  # how a page is applied again after a failure
        counts = apply(engine, tenant_id, 41, [item("ann"), item("bob")], careful=True)
    assert (counts["created"], counts["seen"]) == (2, 2)
    assert seen_in_run(engine, tenant_id) == {"oid-ann": 41, "oid-bob": 41}
    assert not [s for s in one_by_one if s.startswith("UPDATE USERS")]

    with statements(engine) as batched:  # the next full round: one known, one new
        counts = apply(engine, tenant_id, 42, [item("ann"), item("cat")], careful=False)
    assert (counts["unchanged"], counts["created"], counts["seen"]) == (1, 1, 2)
    assert seen_in_run(engine, tenant_id) == {"oid-ann": 42, "oid-bob": 41, "oid-cat": 42}
    # ann's mark goes out with the flush of the page; cat's with its INSERT (or COPY).
    assert len([s for s in batched if s.startswith("UPDATE USERS")]) == 1


def test_a_delta_that_does_not_mention_them_keeps_what_an_admin_set(engine: Engine) -> None:
    """Issue 17, item 11: Graph knows nothing of the frontline plan, the external-company
    guest or admin flags and modules; a later page changing another attribute keeps them."""
    from connector.directory import Directory
    from connector.events import WriteContext
    from connector.status import Source

    tenant_id, _ = make_tenant(engine)
    apply(engine, tenant_id, 1, [{**item("ann"), "userType": "Member"}], careful=False)
    frontline = {"paidHourly": True, "frontlineRole": "medical"}
    with make_sessionmaker(engine)() as s:
        tenant = s.get(Tenant, tenant_id)
        assert tenant is not None
        user = s.scalars(select(User).where(User.external_id == "oid-ann")).one()
        directory = Directory(s, tenant, WriteContext(tenant_id, Source.ADMIN, "clerk",
                                                      "c1", NOW))
        directory.set_user_frontline(user, frontline)
        directory.set_user_flags(user, guest=True, admin=True, external_company_guest=True)
        s.commit()
    changed = {**item("ann"), "displayName": "Ann A", "userType": "Member"}
    apply(engine, tenant_id, 2, [changed], careful=True)
    apply(engine, tenant_id, 3, [{"id": "oid-ann", "jobTitle": "Nurse"}], careful=False)
    with make_sessionmaker(engine)() as s:
        user = s.scalars(select(User).where(User.external_id == "oid-ann")).one()
        assert user.display_name == "Ann A" and user.data.get("title") == "Nurse"
        assert user.frontline == frontline
        assert (user.guest, user.admin, user.external_company_guest) == (True, True, True)
    # a userType that does change still decides
    apply(engine, tenant_id, 4, [{"id": "oid-ann", "userType": "Guest"}], careful=False)
    apply(engine, tenant_id, 5, [{"id": "oid-ann", "userType": "Member"}], careful=False)
    with make_sessionmaker(engine)() as s:
        user = s.scalars(select(User).where(User.external_id == "oid-ann")).one()
        assert user.guest is False and user.external_company_guest is True


def test_a_page_of_different_changes_writes_its_users_with_one_update(engine: Engine) -> None:
    """Each user keeps what did not change for it, the unchanged one is not written, and
    on PostgreSQL the page's changed users go out as one UPDATE statement (executemany),
    not one per run of users with the same changed columns (SQLite: one per run, each
    setting only what changed, as its indexes on a set column are rewritten)."""
    tenant_id, _ = make_tenant(engine)
    names = ("ann", "bob", "cat", "dan", "eve", "fay")
    first = [{**item(n), "displayName": n.title(), "mail": f"{n}@mail.example"}
             for n in names]
    first[3]["accountEnabled"] = False  # dan: disabled, enabled by the next page
    apply(engine, tenant_id, 1, first, careful=False)
    with make_sessionmaker(engine)() as s:
        before = {u.external_id: (u.version, u.modified_at, u.user_name, u.display_name,
                                  u.active, u.data.get("emails"))
                  for u in s.scalars(select(User).where(User.tenant_id == tenant_id))}
    page = [{"id": "oid-ann", "displayName": "Ann Renamed"},
            {"id": "oid-bob", "userPrincipalName": "robert@contoso.example"},
            {"id": "oid-cat", "mail": "cat.new@mail.example"},
            {"id": "oid-dan", "accountEnabled": True},
            {"id": "oid-eve", "displayName": "Eve"},  # what it is already
            {"id": "oid-fay", "jobTitle": "Nurse"}]
    with make_sessionmaker(engine)() as s:
        tenant = s.get(Tenant, tenant_id)
        assert tenant is not None
        applier = PageApplier(s, tenant, 2, False, NOW + dt.timedelta(hours=1),
                              scope=Scope())
        with statements(engine) as issued:
            applier.apply("users", page, careful=False)
        s.commit()
    assert (applier.counts["updated"], applier.counts["enabled"],
            applier.counts["unchanged"]) == (4, 1, 1)
    updates = len([x for x in issued if x.startswith("UPDATE USERS")])
    assert updates == 1 if engine.dialect.name == "postgresql" else updates > 1
    with make_sessionmaker(engine)() as s:
        after = {u.external_id: u for u in s.scalars(
            select(User).where(User.tenant_id == tenant_id))}
    for oid, (version, modified, user_name, display_name, active, emails) in before.items():
        user = after[oid]
        if oid == "oid-eve":
            assert (user.version, user.modified_at) == (version, modified)
        else:
            assert user.version == version + 1 and user.modified_at > modified
        assert user.user_name == ("robert@contoso.example" if oid == "oid-bob"
                                  else user_name)
        assert user.user_name_norm == user.user_name.casefold()
        assert user.display_name == ("Ann Renamed" if oid == "oid-ann" else display_name)
        assert user.active is (True if oid == "oid-dan" else active)
        if oid == "oid-cat":
            assert [e["value"] for e in user.data["emails"]] == ["cat.new@mail.example"]
        else:
            assert user.data.get("emails") == emails
    assert after["oid-fay"].data.get("title") == "Nurse"
