"""Issue 17, item 11: an attribute the IdP does not send is not one it set to nothing.

An admin's frontline plan, guest and external-company guest flags, admin flag and
modules survive SCIM writes that do not mention them (a PUT without the extension, a
PATCH of another attribute); an explicit value, remove or null changes them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from connector.models import Event, User
from scim.schemas import CONNECTOR_USER
from tests.scim.factories import patch
from tests.support.clients import ApiClient, ScimClient

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
FRONTLINE = {"paidHourly": True, "frontlineRole": "customerFacing"}


def _set_up(scim: ScimClient, tenant_admin: ApiClient) -> tuple[str, dict[str, Any]]:
    created = scim.post("/Users", {"schemas": [CORE], "userName": "ann@x.io",
                                   "externalId": "ann", "active": True}).json
    base = f"/tenants/{scim.tenant_id}/users/{created['id']}"
    assert tenant_admin.put(f"{base}/frontline", FRONTLINE).status_code == 200
    changed = tenant_admin.patch(base, {"guest": True, "externalCompanyGuest": True})
    assert changed.status_code == 200, changed.json
    return created["id"], created


def _stored(engine: Engine, user_id: str) -> User:
    with Session(engine) as s:
        return s.scalars(select(User).where(User.id == user_id)).one()


def _frontline_events(engine: Engine, user_id: str) -> list[tuple[str, Any, Any]]:
    with Session(engine) as s:
        return [(e.source, e.old_value, e.new_value) for e in s.scalars(
            select(Event).where(Event.subject_id == user_id, Event.kind.in_(
                ("user.frontline", "user.guest", "user.external_guest")))
            .order_by(Event.id))]


def test_patch_of_another_attribute_keeps_what_the_admin_set(
        scim: ScimClient, tenant_admin: ApiClient, engine: Engine) -> None:
    user_id, _ = _set_up(scim, tenant_admin)
    before = _frontline_events(engine, user_id)
    r = scim.patch(f"/Users/{user_id}", patch({"op": "replace", "path": "active",
                                              "value": False}))
    assert r.status_code == 200, r.json
    user = _stored(engine, user_id)
    assert user.frontline == FRONTLINE and user.guest and user.external_company_guest
    assert _frontline_events(engine, user_id) == before  # scim recorded nothing of them
    # SCIM shows what is in effect, so the IdP reads back the admin's plan
    assert r.json[CONNECTOR_USER]["paidHourly"] is True
    assert r.json[CONNECTOR_USER]["externalCompanyGuest"] is True


def test_put_without_the_extension_keeps_what_the_admin_set(
        scim: ScimClient, tenant_admin: ApiClient, engine: Engine) -> None:
    user_id, _ = _set_up(scim, tenant_admin)
    r = scim.put(f"/Users/{user_id}", {"schemas": [CORE], "userName": "ann@x.io",
                                        "externalId": "ann", "displayName": "Ann",
                                        "userType": "Member", "active": True})
    assert r.status_code == 200, r.json
    user = _stored(engine, user_id)
    assert (user.frontline, user.guest, user.external_company_guest) == (FRONTLINE, True, True)
    assert user.display_name == "Ann"


def test_put_merges_frontline_attributes_one_by_one(
        scim: ScimClient, tenant_admin: ApiClient, engine: Engine) -> None:
    user_id, _ = _set_up(scim, tenant_admin)
    r = scim.put(f"/Users/{user_id}", {"schemas": [CORE, CONNECTOR_USER],
                                        "userName": "ann@x.io", "externalId": "ann",
                                        CONNECTOR_USER: {"desklessPercent": 60}})
    assert r.status_code == 200, r.json
    assert _stored(engine, user_id).frontline == {**FRONTLINE, "desklessPercent": 60,
                                                  "hasEmail": False}


def test_put_with_explicit_values_and_nulls_changes_them(
        scim: ScimClient, tenant_admin: ApiClient, engine: Engine) -> None:
    user_id, _ = _set_up(scim, tenant_admin)
    r = scim.put(f"/Users/{user_id}", {
        "schemas": [CORE, CONNECTOR_USER], "userName": "ann@x.io", "externalId": "ann",
        CONNECTOR_USER: {"guest": False, "externalCompanyGuest": None, "paidHourly": None}})
    assert r.status_code == 200, r.json
    user = _stored(engine, user_id)
    assert (user.guest, user.external_company_guest) == (False, False)
    assert user.frontline == {"frontlineRole": "customerFacing"}
    sources = [source for source, _, _ in _frontline_events(engine, user_id)]
    assert sources[-3:] == ["scim", "scim", "scim"]


def test_patch_remove_clears_only_that_attribute(
        scim: ScimClient, tenant_admin: ApiClient, engine: Engine) -> None:
    user_id, _ = _set_up(scim, tenant_admin)
    r = scim.patch(f"/Users/{user_id}", patch(
        {"op": "remove", "path": f"{CONNECTOR_USER}:paidHourly"},
        {"op": "remove", "path": f"{CONNECTOR_USER}:externalCompanyGuest"}))
    assert r.status_code == 200, r.json
    user = _stored(engine, user_id)
    # what is left is classified as before: hasEmail is read off the (absent) e-mails
    left = {"frontlineRole": "customerFacing", "hasEmail": False}
    assert user.frontline == left
    assert (user.guest, user.external_company_guest) == (True, False)
    assert _frontline_events(engine, user_id)[-2:] == [
        ("scim", True, False), ("scim", FRONTLINE, left)]


def test_put_without_the_extension_keeps_admin_modules_and_admin_flag(
        scim: ScimClient, tenant_admin: ApiClient, engine: Engine) -> None:
    created = scim.post("/Users", {"schemas": [CORE], "userName": "bo@x.io"}).json
    base = f"/tenants/{scim.tenant_id}/users/{created['id']}"
    assert tenant_admin.patch(base, {"admin": True}).status_code == 200
    assert scim.put(f"/Users/{created['id']}", {"schemas": [CORE], "userName": "bo@x.io",
                                                 "active": True}).status_code == 200
    assert _stored(engine, created["id"]).admin is True
