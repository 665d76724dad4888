"""Admin status changes and tenant settings through the directory, on both databases.

The property test drives random sequences of SCIM-side reports, admin changes and
settings changes, then checks the rules held and that the event log replays to the
state in the users table.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from connector import events, tenants
from connector.commands import UserFields
from connector.db import make_sessionmaker
from connector.directory import Directory
from connector.errors import (
    InvalidSetting,
    NotFound,
    ProvisioningPaused,
    StateConflict,
    StatusChangeRefused,
)
from connector.events import WriteContext
from connector.models import Event, Tenant
from connector.status import Source
from connector.tenant_settings import change_settings


def ctx(tenant_id: str, source: Source) -> WriteContext:
    return WriteContext(tenant_id, source, f"{source}-actor", "test", dt.datetime.now(dt.UTC))


def fields(name: str, active: bool | None) -> UserFields:
    return UserFields(user_name=name, external_id=None, display_name=None, data={}, values=(),
                      active=active, guest=False, external_company_guest=False, admin=False,
                      modules=None)


def new_tenant(session: Session, name: str = "Acme") -> Tenant:
    tenant, _ = tenants.create_tenant(session, name, dt.datetime.now(dt.UTC))
    session.flush()
    return tenant


def directory(session: Session, tenant_id: str, source: Source) -> Directory:
    tenant = session.get(Tenant, tenant_id)
    assert tenant is not None
    return Directory(session, tenant, ctx(tenant_id, source))


def test_refusal_says_which_setting_to_change(session: Session) -> None:
    tenant = new_tenant(session)
    user = directory(session, tenant.id, Source.SCIM).create_user(fields("a@x.io", True))
    admin = directory(session, tenant.id, Source.ADMIN)
    with pytest.raises(StatusChangeRefused) as refused:
        admin.admin_set_status(user, False)
    assert refused.value.setting == "provisioning_paused"
    change_settings(session, tenant.id, ctx(tenant.id, Source.ADMIN), provisioning_paused=True)
    with pytest.raises(StatusChangeRefused) as refused:
        directory(session, tenant.id, Source.ADMIN).admin_set_status(user, False,
                                                                     fed_by_entra_sync=True)
    assert refused.value.setting == "status_source"
    assert directory(session, tenant.id, Source.ADMIN).admin_set_status(user, False)
    assert user.active is False


def test_admin_created_users_are_always_editable(session: Session) -> None:
    tenant = new_tenant(session)
    admin = directory(session, tenant.id, Source.ADMIN)
    user = admin.create_user(fields("own@x.io", True))
    assert admin.admin_set_status(user, False, fed_by_entra_sync=True)


def test_settings_are_validated_and_audited(session: Session) -> None:
    tenant = new_tenant(session)
    with pytest.raises(InvalidSetting):
        change_settings(session, tenant.id, ctx(tenant.id, Source.ADMIN), status_source="both")
    with pytest.raises(InvalidSetting):
        change_settings(session, tenant.id, ctx(tenant.id, Source.ADMIN), provisioning_paused=1)
    with pytest.raises(InvalidSetting):
        change_settings(session, tenant.id, ctx(tenant.id, Source.ADMIN), colour="red")
    changed = change_settings(session, tenant.id, ctx(tenant.id, Source.ADMIN),
                              scim_default_status="inactive", provisioning_paused=False)
    assert changed == {"scim_default_status": ("active", "inactive")}
    kinds = session.scalars(select(Event.new_value).where(
        Event.subject_id == tenant.id, Event.kind == events.TENANT_SETTINGS)).all()
    assert kinds == [{"scim_default_status": "inactive"}]


def test_switching_back_to_the_idp_reapplies_its_word(session: Session) -> None:
    tenant = new_tenant(session)
    admin_ctx = ctx(tenant.id, Source.ADMIN)
    change_settings(session, tenant.id, admin_ctx, status_source="connector")
    user = directory(session, tenant.id, Source.SCIM).create_user(fields("b@x.io", True))
    directory(session, tenant.id, Source.SCIM).update_user(user, fields("b@x.io", False))
    assert (user.active, user.idp_active) == (True, False)  # recorded, not applied
    change_settings(session, tenant.id, admin_ctx, status_source="identity_provider")
    session.refresh(user)
    assert (user.active, user.in_deleted_list) == (False, True)


# -- the property: rules hold and the log replays -------------------------------------

STEPS = st.lists(st.one_of(
    st.tuples(st.just("idp"), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("admin"), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("pause"), st.just(0), st.booleans()),
    st.tuples(st.just("source"), st.just(0), st.booleans()),
    st.tuples(st.just("default"), st.just(0), st.booleans()),
    st.tuples(st.just("idp_delete"), st.integers(0, 1), st.just(True)),
    st.tuples(st.just("restore"), st.integers(0, 2), st.just(True)),
    st.tuples(st.just("purge"), st.integers(0, 2), st.just(True)),
), min_size=1, max_size=25)


def replay(session: Session, user_id: str) -> dict[str, Any]:
    """The user's status as the event log alone tells it."""
    state: dict[str, Any] = {}
    for kind, old, new in session.execute(
            select(Event.kind, Event.old_value, Event.new_value)
            .where(Event.subject_id == user_id).order_by(Event.id)):
        if kind == events.USER_CREATED:
            state = {"active": new["active"], "in_deleted_list": new["in_deleted_list"],
                     "removed": False, "purged": False}
        elif kind == events.USER_REMOVED:
            state["removed"] = True
        elif kind == events.USER_RESTORED:
            assert state["removed"] and not state["purged"]
            state["removed"] = False
        elif kind == events.USER_PURGED:
            state["purged"] = True
        elif kind == events.USER_STATUS:
            assert state["active"] == old, "a status event whose old value is not the state"
            state["active"] = new
        elif kind == events.USER_DELETED_LIST:
            state["in_deleted_list"] = new
    return state


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, entra=st.booleans())
def test_no_sequence_breaks_the_rules_and_the_log_replays(engine: Engine, steps: list[Any],
                                                          entra: bool) -> None:
    with make_sessionmaker(engine, writes=True)() as session:
        tenant = new_tenant(session, "Prop")
        idp = Source.ENTRA_SYNC if entra else Source.SCIM
        users = [directory(session, tenant.id, idp).create_user(fields(f"u{i}@x.io", True))
                 for i in range(2)]
        users.append(directory(session, tenant.id, Source.ADMIN).create_user(
            fields("own@x.io", True)))
        for kind, index, flag in steps:
            user = users[index]
            t = session.get(Tenant, tenant.id)
            assert t is not None
            if kind in ("idp", "admin", "idp_delete") and user.removed_at is not None:
                continue  # gone from the directory: the IdP and status edits see a 404
            if kind == "idp_delete" and not t.provisioning_paused:
                directory(session, tenant.id, idp).remove_user(user)
            elif kind == "idp_delete":
                with pytest.raises(ProvisioningPaused):
                    directory(session, tenant.id, idp).remove_user(user)
            elif kind in ("restore", "purge"):
                listed = user.purged_at is None and (user.in_deleted_list
                                                     or user.removed_at is not None)
                act = getattr(directory(session, tenant.id, Source.ADMIN), f"{kind}_user")
                try:
                    act(user, fed_by_entra_sync=entra)
                    assert listed
                    if kind == "restore":
                        assert user.active and user.removed_at is None
                    else:
                        assert user.purged_at is not None and user.removed_at is not None
                except StatusChangeRefused:
                    assert index < 2 and listed
                except (StateConflict, NotFound):
                    assert not listed
            elif kind == "idp" and index < 2 and t.provisioning_paused:
                with pytest.raises(ProvisioningPaused):  # the IdP retries after the pause
                    directory(session, tenant.id, idp).update_user(
                        user, fields(user.user_name, flag))
            elif kind == "idp" and index < 2:
                before_active = user.active
                directory(session, tenant.id, idp).update_user(user, fields(user.user_name, flag))
                if t.status_source == "connector":
                    assert user.active == before_active
                    assert user.idp_active == flag
            elif kind == "admin":
                try:
                    directory(session, tenant.id, Source.ADMIN).admin_set_status(
                        user, flag, fed_by_entra_sync=entra)
                    assert user.active == flag
                    assert index == 2 or (t.provisioning_paused and (
                        not entra or t.status_source == "connector"))
                except StatusChangeRefused:
                    assert index < 2
            elif kind == "pause":
                change_settings(session, tenant.id, ctx(tenant.id, Source.ADMIN),
                                provisioning_paused=flag)
            elif kind == "source":
                wanted = "identity_provider" if flag else "connector"
                changed = change_settings(session, tenant.id, ctx(tenant.id, Source.ADMIN),
                                          status_source=wanted)
                if changed and wanted == "identity_provider":
                    for u in users[:2]:
                        session.refresh(u)
                        # Live users only: a removed one's status is never read (a restore
                        # makes it active, a revival by the IdP applies the IdP's word).
                        if u.idp_active is not None and u.removed_at is None:
                            assert u.active == u.idp_active
            else:
                change_settings(session, tenant.id, ctx(tenant.id, Source.ADMIN),
                                scim_default_status="active" if flag else "inactive")
            session.flush()
        for user in users:
            session.refresh(user)
            assert not (user.active and user.in_deleted_list)
            assert replay(session, user.id) == {
                "active": user.active, "in_deleted_list": user.in_deleted_list,
                "removed": user.removed_at is not None, "purged": user.purged_at is not None}
        session.rollback()
