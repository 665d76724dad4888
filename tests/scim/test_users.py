"""Users: create, read, replace, patch, delete, list (RFC 7644 §3.3-3.6)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy import text as sql
from sqlalchemy.orm import Session

from connector import events
from connector.models import Event, ProvisioningEntry, UserSearchWord
from scim.schemas import CONNECTOR_USER, ENTERPRISE_USER
from tests.scim.factories import group, patch, user
from tests.support.clients import ScimClient
from tests.support.statements import listening


def events_of(session: Session, subject_id: str) -> list[tuple[str, object, object]]:
    rows = session.scalars(select(Event).where(Event.subject_id == subject_id)
                           .order_by(Event.id))
    return [(e.kind, e.old_value, e.new_value) for e in rows]


def test_create_returns_the_full_resource(scim: ScimClient) -> None:
    r = scim.post("/Users", user("ann@example.com"))
    assert r.status_code == 201
    assert r.mimetype == "application/scim+json"
    body = r.json
    assert r.headers["Location"] == body["meta"]["location"]
    assert r.headers["ETag"] == body["meta"]["version"] == 'W/"1"'
    assert body["userName"] == "ann@example.com"
    assert body["active"] is True
    assert body["emails"] == [{"value": "ann@example.com", "type": "work", "primary": True}]
    assert body[ENTERPRISE_USER]["department"] == "Sales"
    assert CONNECTOR_USER not in body  # nothing of ours was set, and no flag is in effect
    assert set(body["schemas"]) >= {"urn:ietf:params:scim:schemas:core:2.0:User",
                                    ENTERPRISE_USER}
    assert "password" not in body
    assert scim.get(f"/Users/{body['id']}").json == body


def test_password_is_accepted_and_never_returned(scim: ScimClient) -> None:
    r = scim.post("/Users", user(password="s3cret!"))
    assert r.status_code == 201
    assert "password" not in r.json
    assert "s3cret" not in scim.get(f"/Users/{r.json['id']}").get_data(as_text=True)


def test_user_name_is_unique_case_insensitively(scim: ScimClient) -> None:
    assert scim.post("/Users", user("Bob@Example.com")).status_code == 201
    r = scim.post("/Users", user("bob@example.COM"))
    assert r.status_code == 409
    assert r.json["scimType"] == "uniqueness"
    assert "userName" in r.json["detail"] and "bob@example.COM" in r.json["detail"]


def test_external_id_is_unique(scim: ScimClient) -> None:
    assert scim.post("/Users", user(externalId="same")).status_code == 201
    r = scim.post("/Users", user(externalId="same"))
    assert r.status_code == 409 and r.json["scimType"] == "uniqueness"
    assert "externalId" in r.json["detail"] and "'same'" in r.json["detail"]
    # the refused create left nothing behind: the next one still works
    assert scim.post("/Users", user(externalId="other")).status_code == 201


def test_put_replaces_and_bumps_the_version(scim: ScimClient) -> None:
    created = scim.post("/Users", user("carl@example.com")).json
    body = user("carl@example.com", externalId=created["externalId"], displayName="Carl C")
    del body["emails"]
    r = scim.put(f"/Users/{created['id']}", body)
    assert r.status_code == 200
    assert r.json["displayName"] == "Carl C"
    assert "emails" not in r.json
    assert r.json["meta"]["version"] == 'W/"2"'


def test_if_match_mismatch_is_412_and_changes_nothing(scim: ScimClient) -> None:
    created = scim.post("/Users", user()).json
    r = scim.patch(f"/Users/{created['id']}",
                   patch({"op": "replace", "path": "displayName", "value": "X"}),
                   headers={"If-Match": 'W/"7"'})
    assert r.status_code == 412
    # What happened and what to do (it said "Version 7 does not match current 1.").
    assert r.json["detail"] == ("The resource changed since version 7: it is at version 1 "
                                "now. Read it again and send the change against its "
                                "current version.")
    assert scim.get(f"/Users/{created['id']}").json["displayName"] == created["displayName"]
    ok = scim.patch(f"/Users/{created['id']}",
                    patch({"op": "replace", "path": "displayName", "value": "X"}),
                    headers={"If-Match": created["meta"]["version"]})
    assert ok.status_code == 200 and ok.json["displayName"] == "X"


def test_if_none_match_gives_304(scim: ScimClient) -> None:
    created = scim.post("/Users", user()).json
    r = scim.get(f"/Users/{created['id']}", headers={"If-None-Match": created["meta"]["version"]})
    assert r.status_code == 304


def test_if_none_match_takes_a_list_of_tags_or_a_star(scim: ScimClient) -> None:
    # RFC 7232 §3.2: "*" or a list of entity-tags, compared weakly.
    uid = scim.post("/Users", user()).json["id"]
    for header, status in (('W/"7", W/"1"', 304), ('"7","1"', 304), ("*", 304),
                           ('W/"7"', 200), ('W/"1x"', 200)):
        assert scim.get(f"/Users/{uid}", headers={"If-None-Match": header}
                        ).status_code == status, header


def test_if_match_takes_a_list_of_tags_or_a_star(scim: ScimClient) -> None:
    # RFC 7232 §3.1: "*" or a list of entity-tags; the list matches when any tag does.
    uid = scim.post("/Users", user()).json["id"]  # at version 1
    for n, (header, status) in enumerate((('W/"7", W/"8"', 412), ('W/"7", W/"1"', 200),
                                          ('"a,b", W/"2"', 200), ("*", 200))):
        rename = patch({"op": "replace", "path": "displayName", "value": f"X{n}"})
        r = scim.patch(f"/Users/{uid}", rename, headers={"If-Match": header})
        assert r.status_code == status, (header, r.json)
    assert scim.get(f"/Users/{uid}").json["meta"]["version"] == 'W/"4"'
    body = user(displayName="Y")
    assert scim.put(f"/Users/{uid}", body, headers={"If-Match": 'W/"1", W/"4"'}
                    ).status_code == 200
    assert scim.delete(f"/Users/{uid}", headers={"If-Match": 'W/"2", W/"5"'}).status_code == 204
    assert scim.delete(f"/Users/{uid}", headers={"If-Match": "*"}).status_code == 404


def test_a_group_write_takes_an_if_match_list(scim: ScimClient) -> None:
    gid = scim.post("/Groups", group("Listed")).json["id"]
    rename = patch({"op": "replace", "path": "displayName", "value": "Relisted"})
    assert scim.patch(f"/Groups/{gid}", rename, headers={"If-Match": 'W/"9", W/"1"'}
                      ).status_code == 204
    assert scim.delete(f"/Groups/{gid}", headers={"If-Match": 'W/"1", W/"3"'}
                       ).status_code == 412
    assert scim.delete(f"/Groups/{gid}", headers={"If-Match": 'W/"1", W/"2"'}
                       ).status_code == 204


@pytest.mark.parametrize("header", ["3", "W/3", '"3', "", 'W/"3" W/"4"', '*, W/"3"'])
def test_a_malformed_if_match_is_a_400_that_says_what_it_expects(scim: ScimClient,
                                                                header: str) -> None:
    created = scim.post("/Users", user()).json
    r = scim.patch(f"/Users/{created['id']}",
                   patch({"op": "replace", "path": "displayName", "value": "X"}),
                   headers={"If-Match": header})
    assert r.status_code == 400 and r.mimetype == "application/scim+json"
    assert r.json["status"] == "400" and "If-Match must be * or a list of entity tags" in \
        r.json["detail"]
    assert scim.get(f"/Users/{created['id']}").json["meta"]["version"] == 'W/"1"'


def test_single_resources_carry_content_location_and_empty_answers_no_type(
        scim: ScimClient) -> None:
    # RFC 7643 §3.1: meta.location "MUST be the same as the Content-Location" header.
    created = scim.post("/Users", user())
    uid, location = created.json["id"], created.json["meta"]["location"]
    assert created.headers["Content-Location"] == created.headers["Location"] == location
    answers = [scim.get(f"/Users/{uid}"), scim.get(f"/Users/{uid}?attributes=userName"),
               scim.put(f"/Users/{uid}", user(created.json["userName"])),
               scim.patch(f"/Users/{uid}", patch({"op": "replace", "path": "title",
                                                  "value": "Boss"}))]
    assert [r.headers["Content-Location"] for r in answers] == [location] * 4
    group_created = scim.post("/Groups", group("With a location"))
    gid = group_created.json["id"]
    assert group_created.headers["Content-Location"] == group_created.json["meta"]["location"]
    # 204 and 304 carry no body, so no Content-Type (it used to say text/html).
    empty = [scim.patch(f"/Groups/{gid}", patch({"op": "replace", "path": "displayName",
                                                 "value": "Renamed"})),
             scim.get(f"/Users/{uid}", headers={"If-None-Match": answers[-1].headers["ETag"]}),
             scim.delete(f"/Groups/{gid}"), scim.delete(f"/Users/{uid}")]
    assert [r.status_code for r in empty] == [204, 304, 204, 204]
    assert [r.headers.get("Content-Type") for r in empty] == [None] * 4


def test_disable_moves_to_deleted_list_and_enable_restores(scim: ScimClient,
                                                           session: Session) -> None:
    uid = scim.post("/Users", user()).json["id"]
    r = scim.patch(f"/Users/{uid}", patch({"op": "Replace", "path": "active", "value": "False"}))
    assert r.status_code == 200 and r.json["active"] is False
    assert scim.get(f"/Users/{uid}").json["active"] is False  # still returned to the IdP
    r = scim.patch(f"/Users/{uid}", patch({"op": "replace", "value": {"active": True}}))
    assert r.json["active"] is True
    kinds = events_of(session, uid)
    assert ("user.status", True, False) in kinds
    assert ("user.deleted_list", False, True) in kinds
    assert ("user.status", False, True) in kinds
    assert ("user.deleted_list", True, False) in kinds


def test_delete_hides_the_user_frees_the_name_and_keeps_history(scim: ScimClient,
                                                                session: Session) -> None:
    uid = scim.post("/Users", user("dora@example.com")).json["id"]
    assert scim.delete(f"/Users/{uid}").status_code == 204
    assert scim.get(f"/Users/{uid}").status_code == 404
    assert scim.delete(f"/Users/{uid}").status_code == 404
    assert scim.get('/Users?filter=userName eq "dora@example.com"').json["totalResults"] == 0
    again = scim.post("/Users", user("dora@example.com"))
    assert again.status_code == 201 and again.json["id"] != uid
    assert [k for k, _, _ in events_of(session, uid)] == ["user.created", "user.removed"]


def test_list_pages_are_stable_and_counted(scim: ScimClient) -> None:
    ids = {scim.post("/Users", user()).json["id"] for _ in range(7)}
    seen = []
    for start in (1, 4, 7):
        page = scim.get(f"/Users?startIndex={start}&count=3").json
        assert page["totalResults"] == 7
        assert page["startIndex"] == start
        seen += [r["id"] for r in page["Resources"]]
    assert len(seen) == 7 and set(seen) == ids
    empty = scim.get("/Users?count=0").json
    assert empty["totalResults"] == 7 and empty["Resources"] == []


def test_sort_by_user_name_descending(scim: ScimClient) -> None:
    for name in ("b@x.io", "c@x.io", "a@x.io"):
        scim.post("/Users", user(name))
    page = scim.get("/Users?sortBy=userName&sortOrder=descending").json
    assert [r["userName"] for r in page["Resources"]] == ["c@x.io", "b@x.io", "a@x.io"]


def test_sort_puts_resources_without_a_value_last_ascending_first_descending(
        scim: ScimClient) -> None:
    # RFC 7644 §3.4.2.3: "ordered last if ascending and first if descending", the same on
    # SQLite (whose NULLs sort first) and PostgreSQL.
    for name, title in (("b@x.io", "Beta"), ("none@x.io", None), ("a@x.io", "alpha"),
                        ("none2@x.io", None)):
        scim.post("/Users", user(name, **({"title": title} if title else {})))
    for sort_by in ("title", "urn:ietf:params:scim:schemas:core:2.0:User:title"):
        up = scim.get(f"/Users?sortBy={sort_by}&attributes=userName").json["Resources"]
        down = scim.get(f"/Users?sortBy={sort_by}&sortOrder=descending&attributes=userName"
                        ).json["Resources"]
        assert [r["userName"] for r in up][:2] == ["a@x.io", "b@x.io"]
        assert {r["userName"] for r in up[2:]} == {"none@x.io", "none2@x.io"}
        assert {r["userName"] for r in down[:2]} == {"none@x.io", "none2@x.io"}
        assert [r["userName"] for r in down][2:] == ["b@x.io", "a@x.io"]
    # Groups too: externalId is often absent.
    scim.post("/Groups", group("G1", externalId="x1"))
    scim.post("/Groups", group("G2"))
    names = [g["displayName"] for g in scim.get(
        "/Groups?sortBy=externalId&attributes=displayName").json["Resources"]]
    assert names == ["G1", "G2"]


def test_a_value_given_twice_is_stored_and_returned_once(scim: ScimClient) -> None:
    # RFC 7643 §2.4: no (type, value) combination more than once; e-mail addresses are
    # not caseExact, so a repeat in another case is the same one.
    r = scim.post("/Users", user("twice@example.com", emails=[
        {"value": "twice@example.com", "type": "work"},
        {"value": "TWICE@example.com", "type": "Work", "primary": True},
        {"value": "twice@example.com", "type": "home"}],
        phoneNumbers=[{"value": "+47 1", "type": "mobile"}, {"value": "+47 1", "type": "mobile"}],
        addresses=[{"type": "work", "locality": "Oslo"}, {"type": "work", "locality": "Oslo"}]))
    assert r.status_code == 201, r.json
    assert r.json["emails"] == [{"value": "twice@example.com", "type": "work", "primary": True},
                                {"value": "twice@example.com", "type": "home"}]
    assert r.json["phoneNumbers"] == [{"value": "+47 1", "type": "mobile"}]
    assert r.json["addresses"] == [{"type": "work", "locality": "Oslo"}]
    uid = r.json["id"]
    r = scim.patch(f"/Users/{uid}", patch({"op": "add", "path": "phoneNumbers", "value": [
        {"value": "+47 2", "type": "work"}, {"value": "+47 2", "type": "work"}]}))
    assert r.json["phoneNumbers"] == [{"value": "+47 1", "type": "mobile"},
                                      {"value": "+47 2", "type": "work"}]
    found = scim.get('/Users?filter=phoneNumbers[value eq "%2B47 2"]&attributes=id').json
    assert found["totalResults"] == 1


def test_attributes_and_excluded_attributes(scim: ScimClient) -> None:
    uid = scim.post("/Users", user("eve@example.com")).json["id"]
    only = scim.get(f"/Users/{uid}?attributes=userName,name.familyName").json
    assert set(only) == {"schemas", "id", "userName", "name"}
    assert set(only["name"]) == {"familyName"}
    less = scim.get(f"/Users/{uid}?excludedAttributes=emails,meta").json
    assert "emails" not in less and "meta" not in less and less["userName"] == "eve@example.com"


def test_a_schema_urn_in_attributes_stands_for_its_attributes(scim: ScimClient) -> None:
    uid = scim.post("/Users", user("urn@example.com")).json["id"]
    ext = scim.get(f"/Users/{uid}?attributes=userName,{ENTERPRISE_USER}").json
    assert set(ext) == {"schemas", "id", "userName", ENTERPRISE_USER}
    assert ext[ENTERPRISE_USER]["department"] == "Sales"
    assert ext["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER]
    without = scim.get(f"/Users?filter=id eq \"{uid}\"&excludedAttributes={ENTERPRISE_USER}"
                       ).json["Resources"][0]
    assert ENTERPRISE_USER not in without and ENTERPRISE_USER not in without["schemas"]
    assert without["userName"] == "urn@example.com" and "emails" in without
    # A group has no enterprise extension: that is an unknown attribute for it.
    r = scim.get(f"/Groups?attributes={ENTERPRISE_USER}")
    assert r.status_code == 400 and r.json["scimType"] == "invalidValue"


def test_filter_eq_on_user_name_finds_one(scim: ScimClient) -> None:
    scim.post("/Users", user("Fay@Example.com"))
    scim.post("/Users", user("gus@example.com"))
    found = scim.get('/Users?filter=userName eq "fay@example.com"').json
    assert found["totalResults"] == 1 and found["Resources"][0]["userName"] == "Fay@Example.com"
    none = scim.get('/Users?filter=userName eq "nobody@example.com"')
    assert none.status_code == 200 and none.json["totalResults"] == 0


def test_search_endpoint(scim: ScimClient) -> None:
    scim.post("/Users", user("hal@example.com"))
    r = scim.post("/Users/.search", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'emails[type eq "work" and value co "hal@"]', "attributes": ["userName"],
        "startIndex": 1, "count": 10})
    assert r.status_code == 200
    assert [x["userName"] for x in r.json["Resources"]] == ["hal@example.com"]


def test_guest_from_user_type_and_extension(scim: ScimClient) -> None:
    a = scim.post("/Users", user(userType="Guest")).json
    assert a[CONNECTOR_USER]["guest"] is True
    b = scim.post("/Users", user(**{CONNECTOR_USER: {"guest": True, "admin": True}})).json
    assert b[CONNECTOR_USER]["guest"] is True and b[CONNECTOR_USER]["admin"] is True


def test_modules_must_be_in_the_catalogue(scim: ScimClient, session: Session) -> None:
    ok = scim.post("/Users", user(**{CONNECTOR_USER: {"modules": ["hybrid", "Engage"]}}))
    assert ok.status_code == 201
    assert ok.json[CONNECTOR_USER]["modules"] == ["Engage", "Hybrid"]
    bad = scim.post("/Users", user(**{CONNECTOR_USER: {"modules": ["Gold"]}}))
    assert bad.status_code == 400 and bad.json["scimType"] == "invalidValue"
    assert "Hybrid" in bad.json["detail"]


def test_manager_as_array_and_null_values_on_create(scim: ScimClient) -> None:
    boss = scim.post("/Users", user()).json["id"]
    body = user(nickName=None, title=None)
    body[ENTERPRISE_USER] = {"manager": [{"value": boss}], "department": None}
    body["urn:example:unknown:2.0:User"] = {"whatever": 1}
    body["schemas"].append("urn:example:unknown:2.0:User")
    r = scim.post("/Users", body)
    assert r.status_code == 201, r.json
    assert r.json[ENTERPRISE_USER] == {"manager": {"value": boss}}
    assert "nickName" not in r.json and "urn:example:unknown:2.0:User" not in r.json


def test_default_status_inactive_applies_to_new_users_only(scim: ScimClient, app,  # type: ignore[no-untyped-def]
                                                           session: Session) -> None:
    from connector.models import Tenant

    before = scim.post("/Users", user()).json
    tenant = session.get(Tenant, scim.tenant_id)
    tenant.scim_default_status = "inactive"  # type: ignore[union-attr]
    session.commit()
    after = scim.post("/Users", user()).json
    assert after["active"] is False
    assert scim.get(f"/Users/{before['id']}").json["active"] is True


def test_patch_leaving_active_alone_does_not_say_it_for_the_idp(scim: ScimClient,
                                                                 session: Session) -> None:
    # A client that created the user without `active` has said nothing about it; a PATCH
    # of another attribute says nothing either. It used to repeat the status the tenant's
    # default gave as the IdP's word: with default "inactive", a rename put the user on
    # the deleted-users list.
    from connector.models import Tenant, User

    tenant = session.get(Tenant, scim.tenant_id)
    tenant.scim_default_status = "inactive"  # type: ignore[union-attr]
    session.commit()
    body = user()
    del body["active"]
    uid = scim.post("/Users", body).json["id"]
    r = scim.patch(f"/Users/{uid}", patch({"op": "replace", "path": "displayName",
                                           "value": "Renamed"}))
    assert r.status_code == 200 and r.json["active"] is False
    session.rollback()  # a new snapshot (SQLite keeps the old one while reading)
    row = session.get(User, (scim.tenant_id, uid))
    assert row is not None and row.in_deleted_list is False and row.idp_active is None
    assert not [e for e in events_of(session, uid) if e[0] == "user.deleted_list"]
    # What the IdP does say still counts.
    r = scim.patch(f"/Users/{uid}", patch({"op": "replace", "path": "active", "value": False}))
    assert r.status_code == 200, r.json
    session.rollback()  # a new snapshot (SQLite keeps the old one while reading)
    row = session.get(User, (scim.tenant_id, uid))
    assert row is not None and row.in_deleted_list is True and row.idp_active is False


def test_patch_adding_a_value_already_there_changes_nothing(scim: ScimClient) -> None:
    # RFC 7644 §3.5.2.1: "this operation SHALL NOT change the modify timestamp"; also for
    # a user created without `active`, whose status the PATCH used to record as said.
    body = user()
    del body["active"]
    created = scim.post("/Users", body).json
    r = scim.patch(f"/Users/{created['id']}", patch({
        "op": "add", "path": "displayName", "value": created["displayName"]}))
    assert r.status_code == 200
    assert r.json["meta"] == created["meta"] and r.headers["ETag"] == 'W/"1"'


def test_paused_provisioning_refuses_writes_with_retry_after(scim: ScimClient,
                                                             session: Session) -> None:
    from connector.models import Tenant

    uid = scim.post("/Users", user()).json["id"]
    tenant = session.get(Tenant, scim.tenant_id)
    tenant.provisioning_paused = True  # type: ignore[union-attr]
    session.commit()
    r = scim.patch(f"/Users/{uid}", patch({"op": "replace", "path": "active", "value": False}))
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "300"
    assert r.json["status"] == "503"
    assert scim.get(f"/Users/{uid}").json["active"] is True  # reads still work


def test_connector_flags_show_what_was_set_and_what_is_in_effect(scim: ScimClient) -> None:
    said_no = scim.post("/Users", user("no@example.com", **{
        CONNECTOR_USER: {"guest": False, "admin": True}})).json
    assert said_no[CONNECTOR_USER] == {"guest": False, "admin": True}
    assert CONNECTOR_USER in said_no["schemas"]
    entra_guest = scim.post("/Users", user("g@example.com", userType="Guest")).json
    assert entra_guest[CONNECTOR_USER] == {"guest": True}  # derived from userType
    uid = said_no["id"]
    r = scim.patch(f"/Users/{uid}", patch({"op": "remove",
                                           "path": f"{CONNECTOR_USER}:admin"}))
    assert r.status_code == 200 and r.json[CONNECTOR_USER] == {"guest": False}


def test_active_cannot_be_removed(scim: ScimClient) -> None:
    uid = scim.post("/Users", user()).json["id"]
    r = scim.patch(f"/Users/{uid}", patch({"op": "remove", "path": "active"}))
    assert r.status_code == 400 and r.json["scimType"] == "invalidValue"
    assert '"value": false' in r.json["detail"]
    assert scim.get(f"/Users/{uid}").json["active"] is True


def test_root_search_spans_users_then_groups(scim: ScimClient) -> None:
    from scim.schemas import SEARCH_REQUEST
    uid = scim.post("/Users", user("root@example.com")).json["id"]
    gid = scim.post("/Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                "displayName": "Root"}).json["id"]
    everything = scim.post("/.search", {"schemas": [SEARCH_REQUEST]}).json
    assert [r["id"] for r in everything["Resources"]] == [uid, gid]
    assert everything["totalResults"] == 2
    second = scim.post("/.search", {"schemas": [SEARCH_REQUEST], "startIndex": 2,
                                    "count": 1}).json
    assert [r["id"] for r in second["Resources"]] == [gid] and second["totalResults"] == 2
    by_id = scim.post("/.search", {"schemas": [SEARCH_REQUEST], "filter": f'id eq "{gid}"',
                                   "attributes": ["displayName"]}).json
    assert [r.get("displayName") for r in by_id["Resources"]] == ["Root"]
    only_users = scim.post("/.search", {"schemas": [SEARCH_REQUEST],
                                        "filter": 'userName sw "root"'}).json
    assert [r["id"] for r in only_users["Resources"]] == [uid]
    bad = scim.post("/.search", {"schemas": [SEARCH_REQUEST], "filter": "shoeSize gt 3"})
    assert bad.status_code == 400 and bad.json["scimType"] == "invalidFilter"


def test_plain_lookups_answer_like_the_general_filter(scim: ScimClient) -> None:
    # `userName eq` and `externalId eq` take a prebuilt statement; wrapping the same
    # comparison in `and … pr` forces the general compiler. Both must agree.
    names = ["Straße@Example.com", 'quote"d@example.com', "back\\slash@example.com",
             "PERCENT%@example.com", "under_score@example.com"]
    for i, name in enumerate(names):
        scim.post("/Users", user(name, externalId=f"Ext-{i}"))
    probes = [("userName", n) for n in names] + [
        ("userName", "STRASSE@example.com"), ("userName", "strasse@EXAMPLE.com"),
        ("userName", "percent_@example.com"), ("externalId", "Ext-1"), ("externalId", "ext-1"),
        ("externalId", "nobody")]
    for attribute, value in probes:
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        fast = scim.get("/Users", query_string={"filter": f'{attribute} eq "{quoted}"'}).json
        general = scim.get("/Users", query_string={
            "filter": f'{attribute} eq "{quoted}" and {attribute} pr'}).json
        assert fast["totalResults"] == general["totalResults"], (attribute, value)
        assert [r["id"] for r in fast["Resources"]] == [r["id"] for r in general["Resources"]]


def test_recognised_lookups_behave_like_the_parser_on_odd_input(scim: ScimClient) -> None:
    # The same filter with and without parentheses: without, it may take the parser-free
    # path; with, it cannot. Status, error type and result must match.
    scim.post("/Users", user("Straße@Example.com"))
    raw = ['USERNAME EQ "straße@example.com"', 'userName\teq "STRASSE@example.com"',
           'userName eq "stra\\u00dfe@example.com"', 'uſerName eq "x"', 'userName eq "a\\qb"',
           'userName eq "tab\there"', 'userName  eq  "x" ', 'userName eq x', 'userName eq "',
           'externalId eq ""', 'userName eq "nul\\u0000"']
    for text in raw:
        fast = scim.get("/Users", query_string={"filter": text})
        slow = scim.get("/Users", query_string={"filter": f"({text})"})
        assert fast.status_code == slow.status_code, text
        if fast.status_code == 200:
            assert [r["id"] for r in fast.json["Resources"]] == \
                [r["id"] for r in slow.json["Resources"]], text
        else:
            assert fast.json["scimType"] == slow.json["scimType"] == "invalidFilter", text


def test_a_create_refused_for_its_attributes_parameter_creates_nothing(
        scim: ScimClient) -> None:
    """`attributes=` is decided before the user is written (on PostgreSQL the write
    commits on its own), so its refusal leaves nothing behind."""
    r = scim.post("/Users?attributes=noSuchAttribute", user("kim@example.com"))
    assert r.status_code == 400 and r.json["scimType"] == "invalidValue"
    found = scim.get('/Users?filter=userName eq "kim@example.com"').json
    assert found["totalResults"] == 0
    assert scim.post("/Users", user("kim@example.com")).status_code == 201


def test_a_create_is_one_statement_on_its_own_on_postgresql(scim: ScimClient,
                                                           engine: Engine) -> None:
    """A POST /Users writes everything in one statement; on PostgreSQL it runs without
    BEGIN and COMMIT (autocommit), on SQLite in its BEGIN IMMEDIATE transaction."""
    scim.post("/Users", user("warm@example.com"))  # the token and catalogue: as usual
    answers = []
    seen = _writes_of(engine, lambda: answers.append(
        scim.post("/Users", user("lee@example.com"))))
    assert answers[0].status_code == 201
    if engine.dialect.name == "postgresql":
        assert seen == [("WITH", True)]
    else:
        assert seen and not any(autocommit for _kind, autocommit in seen)


def _writes_of(engine: Engine, run: Any) -> list[tuple[str, bool]]:
    """(first word, autocommit) of each statement but plain reads `run()` sends."""
    seen: list[tuple[str, bool]] = []

    def record(conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        words = statement.lstrip().upper()
        if words.startswith("BEGIN") or (words.startswith("SELECT")
                                         and "FOR UPDATE" not in words):
            return
        dbapi = conn.connection.dbapi_connection
        autocommit = bool(getattr(dbapi, "autocommit", False)) \
            if engine.dialect.name == "postgresql" else not dbapi.in_transaction
        seen.append((statement.split()[0].upper(), autocommit))

    with listening(engine, record):
        run()
    return seen


def test_a_patch_of_active_is_one_statement_without_a_lock_on_postgresql(
        scim: ScimClient, engine: Engine) -> None:
    """PATCH `active` (Entra's disable): on PostgreSQL the user is read without a lock
    and its change, event and log row go out as one statement on its own; on SQLite in
    the BEGIN IMMEDIATE transaction, as before."""
    uid = scim.post("/Users", user("mo@example.com")).json["id"]
    answers = []
    seen = _writes_of(engine, lambda: answers.append(scim.patch(
        f"/Users/{uid}", patch({"op": "replace", "path": "active", "value": False}))))
    assert answers[0].status_code == 200 and answers[0].json["active"] is False
    assert answers[0].json["meta"]["version"] == 'W/"2"'
    if engine.dialect.name == "postgresql":
        assert seen == [("WITH", True)]
    else:
        assert seen and not any(autocommit for _kind, autocommit in seen)


def test_a_patch_that_needs_more_than_one_statement_runs_in_a_transaction(
        scim: ScimClient, engine: Engine) -> None:
    """A PATCH that writes more than the user's row (its modules) is refused by the
    guarded session before anything is written, and runs again in a transaction."""
    uid = scim.post("/Users", user("ned@example.com")).json["id"]
    answers = []
    seen = _writes_of(engine, lambda: answers.append(scim.patch(f"/Users/{uid}", patch(
        {"op": "add", "path": f"{CONNECTOR_USER}:modules", "value": ["Hybrid"]},
        {"op": "replace", "path": "active", "value": False}))))
    assert answers[0].status_code == 200, answers[0].json
    assert answers[0].json[CONNECTOR_USER]["modules"] == ["Hybrid"]
    assert answers[0].json["active"] is False
    assert seen and not any(autocommit for _kind, autocommit in seen)  # all in the transaction
    again = scim.get(f"/Users/{uid}").json
    assert again[CONNECTOR_USER]["modules"] == ["Hybrid"] and again["active"] is False
    assert again["meta"]["version"] == 'W/"2"'


def test_a_patch_that_only_adds_search_words_runs_in_a_transaction(
        scim: ScimClient, engine: Engine, session: Session) -> None:
    """A new word in the displayName is a row inserted (and none deleted): on PostgreSQL
    a COPY, which the guarded session's statement guard does not see, refused all the
    same, so the PATCH runs again in a transaction instead of writing it on its own."""
    body = user("pia@example.com")
    uid = scim.post("/Users", body).json["id"]
    answers = []
    seen = _writes_of(engine, lambda: answers.append(scim.patch(f"/Users/{uid}", patch(
        {"op": "replace", "path": "displayName", "value": f"{body['displayName']} Zeta"}))))
    assert answers[0].status_code == 200, answers[0].json
    assert seen and not any(autocommit for _kind, autocommit in seen)
    assert session.scalars(select(UserSearchWord.user_id).where(
        UserSearchWord.word == "zeta")).all() == [uid]


def test_a_user_changed_between_a_patchs_read_and_write_is_patched_once(
        scim: ScimClient, engine: Engine, session: Session) -> None:
    """Another writer changes the user after the PATCH read it (without a lock): the
    PATCH's statement finds another version and writes nothing, and the PATCH runs again
    on the user as it is now: one change, one event. On SQLite the other writer commits
    just before the PATCH's own write transaction begins (once begun, it holds SQLite's
    write lock)."""
    uid = scim.post("/Users", user("ola@example.com")).json["id"]
    other = scim.patch(f"/Users/{uid}", patch({"op": "replace", "path": "displayName",
                                              "value": "Ola"}))
    assert other.status_code == 200
    interfered: list[str] = []

    ours = (("WITH", "UPDATE") if engine.dialect.name == "postgresql"
            else ("BEGIN IMMEDIATE",))

    def interfere(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith(ours) and not interfered:
            interfered.append(statement)
            with engine.connect() as conn:  # a concurrent writer, committed before ours
                conn.execute(sql("UPDATE users SET version = version + 1 WHERE id = :id"),
                             {"id": uid})
                conn.commit()

    with listening(engine, interfere):
        r = scim.patch(f"/Users/{uid}", patch({"op": "replace", "path": "active",
                                               "value": False}))
    assert interfered and r.status_code == 200, r.json
    assert r.json["active"] is False and r.json["meta"]["version"] == 'W/"4"'
    kinds = [kind for kind, _old, _new in events_of(session, uid)]
    assert kinds.count(events.USER_STATUS) == 1, kinds
    logged = session.scalars(select(ProvisioningEntry.operation).where(
        ProvisioningEntry.user_id == uid)).all()
    assert sorted(logged) == ["create", "disable", "update"], logged  # one for the PATCH
