"""The event feed over the admin API (GET /api/v1/events, /tenants/{id}/events): its
public shape, paging by cursor, filters, who sees what, and bad arguments; each answer
checked against openapi.json. The proofs that a polling consumer misses and repeats
nothing under concurrent writers are in tests/connector/test_feed_concurrency.py."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from connector import events, feed
from connector.api import PREFIX
from tests.api.contract import check_response
from tests.scim.factories import created, group, patch, user
from tests.support.clients import ApiClient, ScimClient

DEACTIVATE = patch({"op": "replace", "path": "active", "value": False})


def call(api: ApiClient, path: str, **query: Any) -> Any:
    response = api.get(path, query_string=query)
    check_response("GET", PREFIX + path, response)
    return response


def read_all(api: ApiClient, path: str, after: str | None = None, **query: Any
             ) -> tuple[list[dict[str, Any]], str]:
    """Every event the feed has now, page by page: (events, the cursor to store)."""
    seen: list[dict[str, Any]] = []
    while True:
        page = call(api, path, **query, **({"after": after} if after else {})).json
        seen += page["data"]
        after = page["nextCursor"]
        if not page["hasMore"]:
            return seen, after


def test_pages_by_cursor_in_order_and_resume_without_repeats(partner: ApiClient,
                                                             scim: ScimClient) -> None:
    ids = [created(scim.post("/Users", user()))["id"] for _ in range(5)]
    path = f"/tenants/{scim.tenant_id}/events"
    first = call(partner, path, limit=2).json
    assert len(first["data"]) == 2 and first["hasMore"] is True
    everything, stored = read_all(partner, path, limit=2)
    created_users = [e["subject"]["id"] for e in everything if e["type"] == "user.created"]
    assert created_users == ids  # oldest first
    assert everything[0]["type"] == "tenant.created"
    assert len({e["id"] for e in everything}) == len(everything)
    # The stored cursor: nothing again, then exactly what happened since.
    assert call(partner, path, after=stored).json == {"data": [], "nextCursor": stored,
                                                      "hasMore": False}
    scim.patch(f"/Users/{ids[0]}", DEACTIVATE)
    later, _ = read_all(partner, path, after=stored)
    assert [(e["type"], e["subject"]["id"]) for e in later] == [
        ("user.status_changed", ids[0]), ("user.deleted_list_changed", ids[0])]
    assert later[0]["data"] == {"old": True, "new": False}
    assert later[0]["source"] == "scim"


def test_public_shape_hides_internal_names(partner: ApiClient, scim: ScimClient) -> None:
    uid = created(scim.post("/Users", user("ann@example.com")))["id"]
    gid = created(scim.post("/Groups", group("Sales", members=[uid])))["id"]
    events, _ = read_all(partner, f"/tenants/{scim.tenant_id}/events")
    made = next(e for e in events if e["type"] == "user.created")
    assert re.fullmatch(r"evt_\d+", made["id"]) and made["version"] == 1
    assert made["tenantId"] == scim.tenant_id
    assert made["subject"] == {"type": "user", "id": uid}
    assert made["occurredAt"].endswith("Z") and made["recordedAt"].endswith("Z")
    assert made["data"]["old"] is None
    assert made["data"]["new"]["userName"] == "ann@example.com"
    assert {"idpActive", "inDeletedList", "externalCompanyGuest"} <= set(made["data"]["new"])
    assert not any("_" in key for key in made["data"]["new"])
    member = next(e for e in events if e["type"] == "group.member_added")
    assert member["subject"] == {"type": "group", "id": gid}
    assert member["data"] == {"groupId": gid, "userId": uid}
    text = json.dumps(events)
    for internal in ("old_value", "new_value", "effective_at", "subject_type", "txid",
                     "correlation_id", "group.removed", "user.status\""):
        assert internal not in text


def test_filters_by_type_and_user(partner: ApiClient, scim: ScimClient) -> None:
    ann = created(scim.post("/Users", user()))["id"]
    bob = created(scim.post("/Users", user()))["id"]
    created(scim.post("/Groups", group(members=[ann])))
    scim.patch(f"/Users/{bob}", DEACTIVATE)
    path = f"/tenants/{scim.tenant_id}/events"
    status, _ = read_all(partner, path, type="user.status_changed")
    assert [e["subject"]["id"] for e in status] == [bob]
    both_ways = [read_all(partner, path, type="user.created,group.member_added")[0],
                 read_all(partner, path, type=["user.created", "group.member_added"])[0]]
    assert both_ways[0] == both_ways[1]
    assert [e["type"] for e in both_ways[0]] == ["user.created", "user.created",
                                                 "group.member_added"]
    anns, _ = read_all(partner, path, userId=ann)
    assert [e["type"] for e in anns] == ["user.created", "group.member_added"]
    assert read_all(partner, path, userId="nobody")[0] == []
    # Filtered pages stay in step: one event a page.
    one_by_one, _ = read_all(partner, path, userId=ann, limit=1)
    assert one_by_one == anns


def test_tenant_admin_sees_only_its_tenant(partner: ApiClient, tenant_admin: ApiClient,
                                           scim: ScimClient, other_scim: ScimClient) -> None:
    mine = created(scim.post("/Users", user()))["id"]
    theirs = created(other_scim.post("/Users", user()))["id"]
    own, _ = read_all(tenant_admin, f"/tenants/{scim.tenant_id}/events")
    assert {e["tenantId"] for e in own} == {scim.tenant_id}
    assert mine in {e["subject"]["id"] for e in own}
    for path in (f"/tenants/{other_scim.tenant_id}/events",
                 f"/tenants/{other_scim.tenant_id}/events/cursor",
                 "/tenants/no-such-tenant/events"):
        answer = call(tenant_admin, path)
        assert answer.status_code == 404 and answer.mimetype == "application/problem+json"
    for path in ("/events", "/events/cursor"):
        assert call(tenant_admin, path).status_code == 403
    every, _ = read_all(partner, "/events")
    assert {e["tenantId"] for e in every} == {scim.tenant_id, other_scim.tenant_id}
    assert {mine, theirs} <= {e["subject"]["id"] for e in every}
    assert read_all(partner, "/events", userId=theirs)[0] == [
        e for e in every if e["subject"]["id"] == theirs]


def _cursor(raw: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


@pytest.mark.parametrize("after", [
    "garbage", "%%%", "eyJ2IjoxfQ", _cursor({"v": 1, "t": -1, "i": 2}),
    _cursor({"v": 2, "t": 1, "i": 2}), _cursor({"v": 1, "t": "1", "i": 2}),
    _cursor({"v": 1, "t": 2**70, "i": 2}), _cursor([1, 2]), _cursor({"v": 1, "t": 1}),
    _cursor({"v": 1, "t": 1.5, "i": 2}), "x" * 500, base64.urlsafe_b64encode(b"\xff\xfe").decode(),
])
def test_a_tampered_cursor_is_a_400(partner: ApiClient, scim: ScimClient, after: str) -> None:
    for path in ("/events", f"/tenants/{scim.tenant_id}/events"):
        answer = call(partner, path, after=after)
        assert answer.status_code == 400, answer.json
        assert answer.mimetype == "application/problem+json"
        assert "nextCursor" in answer.json["detail"]


@pytest.mark.parametrize(("query", "says"), [
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"type": "user.status"}, "Unknown event type"), ({"type": "user.created,nope"}, "'nope'"),
    ({"userId": "x" * 37}, "userId"),
])
def test_bad_arguments_are_a_400(partner: ApiClient, query: dict[str, str], says: str) -> None:
    answer = call(partner, "/events", **query)
    assert answer.status_code == 400 and says in answer.json["detail"]


def test_limit_and_defaults(partner: ApiClient, scim: ScimClient) -> None:
    for _ in range(3):
        scim.post("/Users", user())
    assert len(call(partner, "/events", limit=1000).json["data"]) == 4
    assert len(call(partner, "/events").json["data"]) == 4
    page = call(partner, "/events", limit=3).json
    assert len(page["data"]) == 3 and page["hasMore"]


def test_the_cursor_for_now_skips_what_is_there(partner: ApiClient, scim: ScimClient) -> None:
    created(scim.post("/Users", user()))
    for path in ("/events", f"/tenants/{scim.tenant_id}/events"):
        now = call(partner, path + "/cursor").json["cursor"]
        assert feed.decode_cursor(now)  # one the feed reads back
        assert call(partner, path, after=now).json["data"] == []
    now = call(partner, "/events/cursor").json["cursor"]
    tenant_now = call(partner, f"/tenants/{scim.tenant_id}/events/cursor").json["cursor"]
    later = created(scim.post("/Users", user()))["id"]
    for path, after in (("/events", now), (f"/tenants/{scim.tenant_id}/events", tenant_now)):
        events, _ = read_all(partner, path, after=after)
        assert [(e["type"], e["subject"]["id"]) for e in events] == [("user.created", later)]


def test_every_kind_has_a_documented_public_type() -> None:
    kinds = {v for k, v in vars(events).items() if k.isupper() and isinstance(v, str)}
    assert kinds == set(feed.PUBLIC_TYPES)
    doc = (Path(__file__).parents[2] / "docs" / "events.md").read_text()
    for public_type in feed.PUBLIC_TYPES.values():
        assert f"`{public_type}`" in doc, f"{public_type} missing from docs/events.md"


def test_a_back_dated_correction_and_a_closed_tenant_reach_the_feed(
        partner: ApiClient, scim: ScimClient) -> None:
    """A correction arrives as an event that happened in the past, recorded now, with its
    reason; closing and reopening the tenant are events of the tenant."""
    path = f"/tenants/{scim.tenant_id}/events"
    _, stored = read_all(partner, path)
    made = partner.post(f"/tenants/{scim.tenant_id}/users", {"userName": "cleo@x.io"}).json
    reason = "left on the 28th; the IdP sync was down"
    fixed = partner.post(f"/tenants/{scim.tenant_id}/users/{made['id']}/corrections",
                         {"kind": "status", "value": "inactive",
                          "effectiveAt": made["created"], "reason": reason})
    assert fixed.status_code == 201, fixed.json
    assert partner.post(f"/tenants/{scim.tenant_id}/close").status_code == 200
    assert partner.post(f"/tenants/{scim.tenant_id}/reopen").status_code == 200
    later, _ = read_all(partner, path, after=stored)
    status = next(e for e in later if e["type"] == "user.status_changed")
    assert status["reason"] == reason and status["data"] == {"old": True, "new": False}
    assert status["occurredAt"] < status["recordedAt"]
    assert "reason" not in next(e for e in later if e["type"] == "user.created")
    assert [e["type"] for e in later if e["subject"]["type"] == "tenant"] == [
        "tenant.closed", "tenant.reopened"]


def test_the_documented_settings_change_is_what_the_feed_serves(
        partner: ApiClient, scim: ScimClient) -> None:
    """docs/events.md's example of `tenant.settings_changed` (it showed "idp", a value
    the status source never takes) is the data a change of status source carries."""
    doc = (Path(__file__).parents[2] / "docs" / "events.md").read_text()
    row = re.search(r"^\| `tenant\.settings_changed` \|.*?`(\{.*?\})` → `(\{.*?\})`", doc,
                    re.MULTILINE)
    assert row is not None
    old, new = json.loads(row[1]), json.loads(row[2])
    path = f"/tenants/{scim.tenant_id}/events"
    _, stored = read_all(partner, path)
    assert partner.patch(f"/tenants/{scim.tenant_id}/settings", new).status_code == 200
    served, _ = read_all(partner, path, after=stored)
    assert [(e["type"], e["data"]) for e in served] == [
        ("tenant.settings_changed", {"old": old, "new": new})]


def test_a_tenant_an_admin_creates_and_a_token_it_rotates_are_the_admins_doing(
        partner: ApiClient) -> None:
    """docs/events.md: `source` is `admin` for an admin in the UI, the API or the CLI, and
    `system` for the connector itself; these two were always `system`."""
    made = partner.post("/tenants", {"name": "Fabrikam"})
    assert made.status_code == 201, made.json
    tenant = made.json["id"]
    assert partner.post(f"/tenants/{tenant}/scim-token").status_code == 201
    served, _ = read_all(partner, f"/tenants/{tenant}/events")
    assert [(e["type"], e["source"]) for e in served] == [
        ("tenant.created", "admin"), ("tenant.scim_token_rotated", "admin")]
