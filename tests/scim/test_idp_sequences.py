"""Replays of the request sequences Microsoft Entra ID and Okta document for SCIM
provisioning, checking every response as the identity provider would."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector.models import Event
from scim.schemas import ENTERPRISE_USER, GROUP, PATCH_OP, USER
from tests.support.clients import ScimClient

LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


def ops(*operations: dict[str, object]) -> dict[str, object]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def test_entra_user_lifecycle(scim: ScimClient, session: Session) -> None:
    name = "Test_User_dfeef4c5-5681-4387-b016-bdf221e82081"
    # 1. Entra looks the user up by its matching attribute before creating it.
    r = scim.get(f'/Users?filter=userName eq "{name}"')
    assert r.status_code == 200
    assert r.json == {"schemas": [LIST], "totalResults": 0, "startIndex": 1,
                      "itemsPerPage": 0, "Resources": []}
    # 2. Create, in the exact shape Entra sends (meta and empty roles included).
    r = scim.post("/Users", {
        "active": True,
        "emails": [{"primary": True, "type": "work",
                    "value": "Test_User_11bb6bd5-ba75-43ba-a2ab-dd1b1e6b2ec8@testuser.com"}],
        "externalId": "Test_User_ba5fb83d-85e1-4bb0-8f85-56a87f5fd9e9",
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName",
                 "givenName": "givenName"},
        "roles": [],
        "schemas": [USER, ENTERPRISE_USER],
        "userName": name,
    })
    assert r.status_code == 201, r.json
    uid = r.json["id"]
    assert r.json["userName"] == name and r.json["active"] is True
    # 3. Lookups by userName (case-insensitive) and by externalId.
    r = scim.get(f'/Users?filter=userName eq "{name.lower()}"')
    assert [u["id"] for u in r.json["Resources"]] == [uid]
    r = scim.get('/Users?filter=externalId eq "Test_User_ba5fb83d-85e1-4bb0-8f85-56a87f5fd9e9"')
    assert r.json["totalResults"] == 1
    # 4. Attribute updates, default Entra shape (capitalised ops).
    r = scim.patch(f"/Users/{uid}", ops(
        {"op": "Replace", "path": 'emails[type eq "work"].value',
         "value": "updatedEmail@microsoft.com"},
        {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}))
    assert r.status_code == 200
    assert r.json["emails"][0]["value"] == "updatedEmail@microsoft.com"
    assert r.json["emails"][0]["primary"] is True
    assert r.json["name"]["familyName"] == "updatedFamilyName"
    # 5. Manager, as Entra sends it.
    boss = scim.post("/Users", {"schemas": [USER], "userName": "boss@contoso.com"}).json["id"]
    r = scim.patch(f"/Users/{uid}", ops(
        {"op": "Add", "path": f"{ENTERPRISE_USER}:manager",
         "value": [{"$ref": None, "value": boss}]}))
    assert r.status_code == 200
    assert r.json[ENTERPRISE_USER]["manager"]["value"] == boss
    # 6. Disable (booleans as strings in the default shape), then re-enable.
    r = scim.patch(f"/Users/{uid}", ops({"op": "Replace", "path": "active", "value": "False"}))
    assert r.status_code == 200 and r.json["active"] is False
    r = scim.patch(f"/Users/{uid}?aadOptscim062020",
                   ops({"op": "replace", "path": "active", "value": True}))
    assert r.status_code == 200 and r.json["active"] is True
    # 7. Delete.
    assert scim.delete(f"/Users/{uid}").status_code == 204
    assert scim.get(f"/Users/{uid}").status_code == 404
    kinds = [e.kind for e in session.scalars(
        select(Event).where(Event.subject_id == uid).order_by(Event.id))]
    assert kinds == ["user.created", "user.status", "user.deleted_list", "user.status",
                     "user.deleted_list", "user.removed"]


def test_entra_group_lifecycle(scim: ScimClient) -> None:
    member = scim.post("/Users", {"schemas": [USER], "userName": "member@contoso.com"}).json["id"]
    r = scim.get('/Groups?excludedAttributes=members&filter=displayName eq "displayName"')
    assert r.status_code == 200 and r.json["totalResults"] == 0
    r = scim.post("/Groups", {"externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
                              "displayName": "displayName", "meta": {"resourceType": "Group"},
                              "members": [], "schemas": [GROUP]})
    assert r.status_code == 201, r.json
    gid = r.json["id"]
    r = scim.get(f"/Groups/{gid}?excludedAttributes=members")
    assert r.status_code == 200 and "members" not in r.json
    r = scim.get('/Groups?excludedAttributes=members&filter=externalId eq '
                 '"8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159"')
    assert r.json["totalResults"] == 1
    r = scim.patch(f"/Groups/{gid}", ops({"op": "Add", "path": "members",
                                          "value": [{"$ref": None, "value": member}]}))
    assert r.status_code == 204
    r = scim.get(f'/Groups?filter=id eq "{gid}" and members[value eq "{member}"]'
                 "&excludedAttributes=members")
    assert r.json["totalResults"] == 1
    r = scim.patch(f"/Groups/{gid}", ops({"op": "Remove", "path": "members",
                                          "value": [{"$ref": None, "value": member}]}))
    assert r.status_code == 204
    r = scim.patch(f"/Groups/{gid}", ops({"op": "Replace", "path": "displayName",
                                          "value": "1879db59-3bdf-4490-ad68-ab880a269474"}))
    assert r.status_code == 204
    group = scim.get(f"/Groups/{gid}").json
    assert group["displayName"] == "1879db59-3bdf-4490-ad68-ab880a269474"
    assert group.get("members", []) == []
    assert scim.delete(f"/Groups/{gid}").status_code == 204
    assert scim.get(f"/Groups/{gid}").status_code == 404


def test_entra_no_path_replace_with_dotted_and_urn_keys(scim: ScimClient) -> None:
    uid = scim.post("/Users", {"schemas": [USER], "userName": "dotted@contoso.com"}).json["id"]
    r = scim.patch(f"/Users/{uid}", ops({"op": "Replace", "value": {
        "displayName": "Dotted", "name.givenName": "Dot",
        f"{ENTERPRISE_USER}:department": "R&D", "active": "True"}}))
    assert r.status_code == 200, r.json
    assert r.json["displayName"] == "Dotted"
    assert r.json["name"]["givenName"] == "Dot"
    assert r.json[ENTERPRISE_USER]["department"] == "R&D"


def test_okta_user_lifecycle(scim: ScimClient) -> None:
    r = scim.get('/Users?filter=userName eq "test.user@okta.local"&startIndex=1&count=100')
    assert r.status_code == 200 and r.json["totalResults"] == 0
    body = {"schemas": [USER], "userName": "test.user@okta.local",
            "name": {"givenName": "Test", "familyName": "User"},
            "emails": [{"primary": True, "value": "test.user@okta.local", "type": "work"}],
            "displayName": "Test User", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7",
            "groups": [], "password": "1mz050nq", "active": True}
    r = scim.post("/Users", body)
    assert r.status_code == 201
    uid = r.json["id"]
    assert scim.get(f"/Users/{uid}").json["locale"] == "en-US"
    body.update(id=uid, name={"givenName": "Another", "familyName": "User"})
    r = scim.put(f"/Users/{uid}", body)
    assert r.status_code == 200 and r.json["name"]["givenName"] == "Another"
    r = scim.patch(f"/Users/{uid}", ops({"op": "replace", "value": {"active": False}}))
    assert r.status_code == 200 and r.json["active"] is False
    r = scim.patch(f"/Users/{uid}", ops({"op": "replace", "value": {"active": True}}))
    assert r.json["active"] is True


def test_okta_group_lifecycle(scim: ScimClient) -> None:
    uid = scim.post("/Users", {"schemas": [USER], "userName": "g.member@okta.local"}).json["id"]
    r = scim.post("/Groups", {"schemas": [GROUP], "displayName": "Test SCIMv2", "members": []})
    assert r.status_code == 201
    gid = r.json["id"]
    r = scim.patch(f"/Groups/{gid}", ops({"op": "replace", "value": {
        "id": gid, "displayName": "Test SCIMv2 renamed"}}))
    assert r.status_code == 204
    r = scim.patch(f"/Groups/{gid}", ops({"op": "add", "path": "members", "value": [
        {"value": uid, "display": "g.member@okta.local"}]}))
    assert r.status_code == 204
    assert [m["value"] for m in scim.get(f"/Groups/{gid}").json["members"]] == [uid]
    r = scim.patch(f"/Groups/{gid}", ops({"op": "remove", "path": f'members[value eq "{uid}"]'}))
    assert r.status_code == 204
    r = scim.put(f"/Groups/{gid}", {"schemas": [GROUP], "id": gid,
                                    "displayName": "Test SCIMv2 renamed",
                                    "members": [{"value": uid, "display": "g.member"}]})
    assert r.status_code == 200 and [m["value"] for m in r.json["members"]] == [uid]
    assert scim.delete(f"/Groups/{gid}").status_code == 204
