"""A token for tenant A can never read or touch tenant B's data, not even by id."""

from __future__ import annotations

from tests.scim.factories import group, patch, user
from tests.support.clients import ScimClient


def test_tenants_cannot_see_or_touch_each_other(scim: ScimClient, other_scim: ScimClient
                                                ) -> None:
    mine = scim.post("/Users", user("same@example.com")).json
    theirs = other_scim.post("/Users", user("same@example.com")).json  # same name is fine
    assert theirs["id"] != mine["id"]
    gid = scim.post("/Groups", group("Shared name", [mine["id"]])).json["id"]
    assert other_scim.post("/Groups", group("Shared name")).status_code == 201

    assert other_scim.get(f"/Users/{mine['id']}").status_code == 404
    assert other_scim.get(f"/Groups/{gid}").status_code == 404
    assert other_scim.put(f"/Users/{mine['id']}", user()).status_code == 404
    assert other_scim.patch(f"/Users/{mine['id']}", patch(
        {"op": "replace", "path": "active", "value": False})).status_code == 404
    assert other_scim.delete(f"/Users/{mine['id']}").status_code == 404
    # Adding another tenant's user as a member is refused, not silently linked.
    their_group = other_scim.post("/Groups", group("Theirs")).json["id"]
    r = other_scim.patch(f"/Groups/{their_group}", patch(
        {"op": "add", "path": "members", "value": [{"value": mine["id"]}]}))
    assert r.status_code == 400
    listed = other_scim.get("/Users").json
    assert [u["id"] for u in listed["Resources"]] == [theirs["id"]]
    found = other_scim.get(f'/Users?filter=id eq "{mine["id"]}"').json
    assert found["totalResults"] == 0
    assert scim.get(f"/Users/{mine['id']}").json["active"] is True


def test_another_tenants_ids_in_bodies_reach_nothing(scim: ScimClient, other_scim: ScimClient
                                                     ) -> None:
    """The other tenant's ids as members of a new or replaced group, in /Bulk operations
    and in searches: refused or not found, and its group keeps its member."""
    mine = scim.post("/Users", user("same@example.com")).json["id"]
    gid = scim.post("/Groups", group("Mine", [mine])).json["id"]
    assert other_scim.post("/Groups", group("X", [mine])).status_code == 400
    theirs = other_scim.post("/Groups", group("Y")).json["id"]
    assert other_scim.put(f"/Groups/{theirs}", group("Y", [mine])).status_code == 400
    bulk = other_scim.post("/Bulk", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [
            {"method": "PATCH", "path": f"/Users/{mine}", "data": patch(
                {"op": "replace", "path": "active", "value": False})},
            {"method": "DELETE", "path": f"/Groups/{gid}"},
            {"method": "POST", "path": "/Groups", "bulkId": "g", "data": group("Z", [mine])}]})
    assert [op["status"] for op in bulk.json["Operations"]] == ["404", "404", "400"]
    searched = other_scim.post("/.search", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": f'id eq "{mine}"'})
    assert searched.json["totalResults"] == 0
    assert other_scim.get(f'/Groups?filter=members.value eq "{mine}"').json[
        "totalResults"] == 0
    assert [m["value"] for m in scim.get(f"/Groups/{gid}").json["members"]] == [mine]
    assert scim.get(f"/Users/{mine}").json["active"] is True
