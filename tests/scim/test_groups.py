"""Groups and membership (RFC 7644 §3.5.2 member operations, Entra and Okta shapes)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connector.models import Event, Membership
from scim.schemas import CONNECTOR_GROUP
from tests.scim.factories import group, patch, user
from tests.support.clients import ScimClient


def new_users(scim: ScimClient, n: int) -> list[str]:
    return [scim.post("/Users", user()).json["id"] for _ in range(n)]


def member_ids(scim: ScimClient, gid: str) -> set[str]:
    return {m["value"] for m in scim.get(f"/Groups/{gid}").json.get("members", [])}


def test_create_with_members_and_read_back(scim: ScimClient) -> None:
    a, b = new_users(scim, 2)
    r = scim.post("/Groups", group("Sales", [a, b]))
    assert r.status_code == 201
    assert {m["value"] for m in r.json["members"]} == {a, b}
    assert all(m["type"] == "User" and m["$ref"].endswith(m["value"]) for m in r.json["members"])
    user_view = scim.get(f"/Users/{a}").json
    assert user_view["groups"][0]["value"] == r.json["id"]
    assert user_view["groups"][0]["display"] == "Sales"


def test_display_name_is_unique(scim: ScimClient) -> None:
    assert scim.post("/Groups", group("Ops")).status_code == 201
    assert scim.post("/Groups", group("OPS")).json["scimType"] == "uniqueness"


def test_unknown_member_is_400_and_nothing_is_written(scim: ScimClient, session: Session) -> None:
    r = scim.post("/Groups", group("Ghosts", ["no-such-id"]))
    assert r.status_code == 400 and r.json["scimType"] == "invalidValue"
    assert scim.get('/Groups?filter=displayName eq "Ghosts"').json["totalResults"] == 0
    assert session.scalar(select(func.count()).select_from(Event)
                          .where(Event.subject_type == "group")) == 0


def test_patch_add_and_remove_members_entra_shapes(scim: ScimClient) -> None:
    a, b, c = new_users(scim, 3)
    gid = scim.post("/Groups", group("Eng", [a])).json["id"]
    r = scim.patch(f"/Groups/{gid}", patch({"op": "Add", "path": "members",
                                            "value": [{"value": b}, {"value": c}]}))
    assert r.status_code == 204
    assert member_ids(scim, gid) == {a, b, c}
    r = scim.patch(f"/Groups/{gid}", patch({"op": "Remove", "path": "members",
                                            "value": [{"value": a}]}))
    assert r.status_code == 204
    assert member_ids(scim, gid) == {b, c}
    r = scim.patch(f"/Groups/{gid}", patch({"op": "remove", "path": f'members[value eq "{b}"]'}))
    assert member_ids(scim, gid) == {c}


def test_adding_present_and_removing_absent_members_succeeds(scim: ScimClient,
                                                            session: Session) -> None:
    a, b = new_users(scim, 2)
    gid = scim.post("/Groups", group("Idem", [a])).json["id"]
    assert scim.patch(f"/Groups/{gid}", patch(
        {"op": "add", "path": "members", "value": [{"value": a}]})).status_code == 204
    assert scim.patch(f"/Groups/{gid}", patch(
        {"op": "remove", "path": f'members[value eq "{b}"]'})).status_code == 204
    added = session.scalar(select(func.count()).select_from(Event).where(
        Event.kind == "group.member_added", Event.subject_id == gid))
    assert added == 1
    assert member_ids(scim, gid) == {a}


def test_replace_members_and_remove_all(scim: ScimClient) -> None:
    a, b, c = new_users(scim, 3)
    gid = scim.post("/Groups", group("Rep", [a, b])).json["id"]
    scim.patch(f"/Groups/{gid}", patch({"op": "replace", "path": "members",
                                        "value": [{"value": c}]}))
    assert member_ids(scim, gid) == {c}
    scim.patch(f"/Groups/{gid}", patch({"op": "remove", "path": "members"}))
    assert member_ids(scim, gid) == set()


def test_rename_by_patch_returns_body_when_asked(scim: ScimClient) -> None:
    gid = scim.post("/Groups", group("Old")).json["id"]
    r = scim.patch(f"/Groups/{gid}?attributes=displayName",
                   patch({"op": "replace", "value": {"displayName": "New"}}))
    assert r.status_code == 200 and r.json["displayName"] == "New"


def test_excluded_members_are_not_loaded(scim: ScimClient) -> None:
    a = new_users(scim, 1)[0]
    scim.post("/Groups", group("Big", [a]))
    listed = scim.get("/Groups?excludedAttributes=members").json
    assert listed["Resources"] and all("members" not in g for g in listed["Resources"])


def test_group_filter_by_member(scim: ScimClient) -> None:
    a, b = new_users(scim, 2)
    g1 = scim.post("/Groups", group("G1", [a])).json["id"]
    scim.post("/Groups", group("G2", [b]))
    found = scim.get(f'/Groups?filter=members[value eq "{a}"]').json
    assert [g["id"] for g in found["Resources"]] == [g1]


def test_deleting_a_user_removes_its_memberships(scim: ScimClient, session: Session) -> None:
    a, b = new_users(scim, 2)
    gid = scim.post("/Groups", group("Left", [a, b])).json["id"]
    scim.delete(f"/Users/{a}")
    assert member_ids(scim, gid) == {b}
    assert session.scalar(select(func.count()).select_from(Membership)
                          .where(Membership.member_id == a)) == 0


def test_group_modules(scim: ScimClient) -> None:
    schemas = ["urn:ietf:params:scim:schemas:core:2.0:Group", CONNECTOR_GROUP]
    r = scim.post("/Groups", group("Mod", **{CONNECTOR_GROUP: {"modules": ["unify"]},
                                             "schemas": schemas}))
    assert r.status_code == 201
    assert r.json[CONNECTOR_GROUP]["modules"] == ["Unify"]


def test_delete_group(scim: ScimClient) -> None:
    a = new_users(scim, 1)[0]
    gid = scim.post("/Groups", group("Gone", [a])).json["id"]
    assert scim.delete(f"/Groups/{gid}").status_code == 204
    assert scim.get(f"/Groups/{gid}").status_code == 404
    assert "groups" not in scim.get(f"/Users/{a}").json


def test_put_group_replaces_members(scim: ScimClient) -> None:
    a, b = new_users(scim, 2)
    created = scim.post("/Groups", group("Put", [a])).json
    r = scim.put(f"/Groups/{created['id']}", group("Put2", [b]))
    assert r.status_code == 200
    assert r.json["displayName"] == "Put2"
    assert {m["value"] for m in r.json["members"]} == {b}
