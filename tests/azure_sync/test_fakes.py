"""The fake Graph's delta protocol, exercised through requests as a client sees it.

If these pass, a test of azure_sync that fails against the fakes is about azure_sync.
"""

from __future__ import annotations

import dataclasses
import time
import tracemalloc
from urllib.parse import quote, urlsplit

import pytest

from tests.fakes.delta import USERS, build_page, start_full_round
from tests.fakes.directory import Directory
from tests.fakes.entra_token import FakeTokenEndpoint
from tests.fakes.fixtures import FakeApp, GraphCaller
from tests.fakes.graph import FakeGraph

SELECT = "accountEnabled,userPrincipalName,mail,givenName,surname,displayName,userType,employeeId"
USERS_DELTA = f"/v1.0/users/delta?$select={SELECT}"
GROUPS_DELTA = "/v1.0/groups/delta?$select=displayName,members"


@pytest.fixture
def directory(fake_graph: FakeGraph, fake_app: FakeApp) -> Directory:
    return fake_graph.directory(fake_app.tenant_id)


def add_people(directory: Directory, count: int) -> list[str]:
    return [directory.add_user(f"person{i}@contoso.example", givenName=f"P{i}", surname="Doe",
                               employeeId=f"E{i}") for i in range(count)]


def ids(items: list[dict]) -> list[str]:
    return [item["id"] for item in items]


# -- full and incremental rounds ---------------------------------------------------------

def test_a_full_round_pages_through_next_links_to_a_delta_link(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    people = add_people(directory, 7)
    fake_graph.knobs.page_size = 3
    walk = fake_graph_caller.walk(USERS_DELTA)
    assert [len(page["value"]) for page in walk.pages] == [3, 3, 1]
    assert ids(walk.items) == people
    assert walk.pages[0]["@odata.context"].endswith(f"/v1.0/$metadata#users({SELECT})")
    assert all(page["@odata.context"].startswith(fake_graph.url) for page in walk.pages)
    links = [page["@odata.nextLink"] for page in walk.pages[:-1]]
    assert all(urlsplit(link).netloc == urlsplit(fake_graph.url).netloc for link in links)
    assert all(urlsplit(link).query.startswith("$skiptoken=") for link in links)
    assert "@odata.nextLink" not in walk.pages[-1]
    assert urlsplit(walk.delta_link).query.startswith("$deltatoken=")
    assert walk.items[0] == {
        "accountEnabled": True, "userPrincipalName": "person0@contoso.example",
        "mail": "person0@contoso.example", "givenName": "P0", "surname": "Doe",
        "displayName": "person0", "userType": "Member", "employeeId": "E0", "id": people[0]}


def test_select_is_honoured_and_the_default_has_no_account_enabled(
        directory: Directory, fake_graph_caller: GraphCaller) -> None:
    directory.add_user("ada@contoso.example", jobTitle="Countess")
    narrow = fake_graph_caller.walk("/v1.0/users/delta?$select=DisplayName,id").items
    assert narrow == [{"displayName": "ada", "id": narrow[0]["id"]}]  # names canonicalised
    default = fake_graph_caller.walk("/v1.0/users/delta").items[0]
    assert "accountEnabled" not in default and default["jobTitle"] == "Countess"
    assert "mobilePhone" not in default  # never set: not sent at all
    bad = fake_graph_caller.get("/v1.0/users/delta?$select=displayName,shoeSize")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "Request_BadRequest"


def test_prefer_maxpagesize_sets_the_page_size(
        directory: Directory, fake_graph_caller: GraphCaller) -> None:
    add_people(directory, 5)
    walk = fake_graph_caller.walk(USERS_DELTA, {"Prefer": "odata.maxpagesize=2"})
    assert [len(page["value"]) for page in walk.pages] == [2, 2, 1]


def test_an_incremental_round_returns_only_what_changed(
        directory: Directory, fake_graph_caller: GraphCaller) -> None:
    people = add_people(directory, 5)
    delta_link = fake_graph_caller.walk(USERS_DELTA).delta_link
    assert fake_graph_caller.walk(delta_link).items == []
    directory.update_user(people[1], surname="Lovelace")
    directory.update_user(people[1], surname="Lovelace")  # no real change: not logged again
    directory.disable_user(people[3])
    newcomer = directory.add_user("new@contoso.example")
    directory.update_user(people[4], jobTitle="Engineer")  # not selected: not tracked
    walk = fake_graph_caller.walk(delta_link)
    assert ids(walk.items) == [people[1], people[3], newcomer]
    assert walk.items[0]["surname"] == "Lovelace"
    assert walk.items[0]["givenName"] == "P1"  # by default every selected property is sent
    assert walk.items[1]["accountEnabled"] is False
    assert fake_graph_caller.walk(walk.delta_link).items == []
    replayed = fake_graph_caller.walk(delta_link)  # a delta link stays usable (for 7 days)
    assert ids(replayed.items) == ids(walk.items)


def test_prefer_return_minimal_sends_only_changed_properties(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    people = add_people(directory, 2)
    delta_link = fake_graph_caller.walk(USERS_DELTA).delta_link
    directory.update_user(people[0], surname="Hopper", mail=None)
    directory.disable_user(people[1])
    minimal = {"Prefer": "return=minimal"}
    items = fake_graph_caller.walk(delta_link, minimal).items
    assert items == [{"surname": "Hopper", "mail": None, "id": people[0]},
                     {"accountEnabled": False, "id": people[1]}]
    default = fake_graph_caller.walk(delta_link).items
    assert default[0]["mail"] is None and default[0]["givenName"] == "P0"  # null: sent
    fake_graph.knobs.minimal_by_default = True
    assert fake_graph_caller.walk(delta_link).items == items


def test_removed_users_carry_the_reason_and_come_back_when_restored(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    people = add_people(directory, 4)
    delta_link = fake_graph_caller.walk(USERS_DELTA).delta_link
    directory.soft_delete_user(people[0])
    directory.hard_delete_user(people[1])
    directory.soft_delete_user(people[2])
    walk = fake_graph_caller.walk(delta_link)
    assert walk.items == [{"id": people[0], "@removed": {"reason": "changed"}},
                          {"id": people[1], "@removed": {"reason": "deleted"}},
                          {"id": people[2], "@removed": {"reason": "changed"}}]
    assert ids(fake_graph_caller.walk(USERS_DELTA).items) == [people[3]]  # full: live only
    directory.restore_user(people[0])
    restored = fake_graph_caller.walk(walk.delta_link)
    assert restored.items[0]["id"] == people[0] and "@removed" not in restored.items[0]
    assert restored.items[0]["userPrincipalName"] == "person0@contoso.example"
    delta_link = restored.delta_link
    for _ in range(5):  # deleted items keep a user 30 days; a delta link lives 7
        fake_graph.clock.advance(days=6)
        fake_graph_caller.refresh_token()
        walk = fake_graph_caller.walk(delta_link)
        delta_link = walk.delta_link
    assert walk.items == [{"id": people[2], "@removed": {"reason": "deleted"}}]
    with pytest.raises(KeyError):
        directory.restore_user(people[2])


def test_delta_token_latest_skips_the_initial_round(
        directory: Directory, fake_graph_caller: GraphCaller) -> None:
    add_people(directory, 3)
    latest = fake_graph_caller.walk(f"{USERS_DELTA}&$deltatoken=latest")
    assert latest.items == [] and len(latest.pages) == 1
    newcomer = directory.add_user("late@contoso.example")
    assert ids(fake_graph_caller.walk(latest.delta_link).items) == [newcomer]


def test_a_change_during_a_full_round_is_replayed_in_the_next_one(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    people = add_people(directory, 4)
    fake_graph.knobs.page_size = 2
    first = fake_graph_caller.get(USERS_DELTA).json()
    directory.update_user(people[0], surname="Changed")  # already sent on page one
    directory.update_user(people[3], surname="Changed")  # not sent yet
    rest = fake_graph_caller.walk(first["@odata.nextLink"])
    assert rest.items[-1]["surname"] == "Changed"  # pages show the state when served
    replay = fake_graph_caller.walk(rest.delta_link)
    assert ids(replay.items) == [people[0], people[3]]


def test_a_single_user_by_id_or_user_principal_name(
        directory: Directory, fake_graph_caller: GraphCaller) -> None:
    user_id = directory.add_user("grace.hopper@contoso.example", givenName="Grace")
    by_id = fake_graph_caller.get(f"/v1.0/users/{user_id}?$select=givenName,accountEnabled")
    assert by_id.status_code == 200
    assert by_id.json() == {
        "@odata.context": f"{fake_graph_caller.base_url}/v1.0/$metadata#users("
                          "givenName,accountEnabled)/$entity",
        "givenName": "Grace", "accountEnabled": True, "id": user_id}
    by_upn = fake_graph_caller.get(f"/v1.0/users/{quote('Grace.Hopper@contoso.example')}")
    assert by_upn.json()["id"] == user_id and by_upn.json()["mobilePhone"] is None
    directory.soft_delete_user(user_id)
    for key in (user_id, "nobody@contoso.example"):
        missing = fake_graph_caller.get(f"/v1.0/users/{key}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "Request_ResourceNotFound"


# -- groups ------------------------------------------------------------------------------

def test_a_big_groups_members_are_split_over_pages(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    people = add_people(directory, 7)
    small = directory.create_group("Small", members=people[:1])
    big = directory.create_group("Big", members=people)
    fake_graph.knobs.member_chunk_size = 3
    fake_graph.knobs.page_size = 2
    walk = fake_graph_caller.walk(GROUPS_DELTA)
    assert [ids(page["value"]) for page in walk.pages] == [[small, big], [big, big]]
    merged = [m["id"] for item in walk.items if item["id"] == big
              for m in item["members@delta"]]
    assert merged == people
    assert all(item["displayName"] == "Big" for item in walk.items if item["id"] == big)
    assert walk.items[0]["members@delta"] == [
        {"@odata.type": "#microsoft.graph.user", "id": people[0]}]


def test_membership_changes_arrive_as_members_delta(
        directory: Directory, fake_graph_caller: GraphCaller) -> None:
    people = add_people(directory, 4)
    team = directory.create_group("Team", members=people[:2])
    other = directory.create_group("Other")
    delta_link = fake_graph_caller.walk(GROUPS_DELTA).delta_link
    directory.add_members(team, [people[2]])
    directory.remove_members(team, [people[0]])
    directory.add_members(other, [team])  # a nested group
    directory.rename_group(other, "Renamed")
    items = fake_graph_caller.walk(delta_link).items
    assert items == [
        {"displayName": "Team", "id": team, "members@delta": [
            {"@odata.type": "#microsoft.graph.user", "id": people[2]},
            {"@odata.type": "#microsoft.graph.user", "id": people[0],
             "@removed": {"reason": "deleted"}}]},
        {"displayName": "Renamed", "id": other, "members@delta": [
            {"@odata.type": "#microsoft.graph.group", "id": team}]}]


def test_deleting_users_and_groups_shows_in_groups_delta(
        directory: Directory, fake_graph_caller: GraphCaller) -> None:
    people = add_people(directory, 3)
    team = directory.create_group("Team", members=people)
    gone = directory.create_group("Gone")
    delta_link = fake_graph_caller.walk(GROUPS_DELTA).delta_link
    directory.soft_delete_user(people[1])
    directory.delete_group(gone)
    walk = fake_graph_caller.walk(delta_link)
    assert walk.items == [
        {"displayName": "Team", "id": team, "members@delta": [
            {"@odata.type": "#microsoft.graph.user", "id": people[1],
             "@removed": {"reason": "deleted"}}]},
        {"id": gone, "@removed": {"reason": "deleted"}}]
    directory.restore_user(people[1])  # Entra gives a restored user its groups back
    back = fake_graph_caller.walk(walk.delta_link).items
    assert back[0]["members@delta"] == [{"@odata.type": "#microsoft.graph.user",
                                         "id": people[1]}]


# -- tenants, tokens, permissions --------------------------------------------------------

def test_each_token_reads_its_own_tenants_directory(
        fake_entra: FakeTokenEndpoint, fake_graph: FakeGraph, directory: Directory,
        fake_graph_caller: GraphCaller) -> None:
    directory.add_user("mine@contoso.example")
    fake_graph.directory("other-tenant").add_user("theirs@fabrikam.example")
    fake_entra.add_app("other-tenant", "other-client", secret="x")
    upns = [u["userPrincipalName"] for u in fake_graph_caller.walk(USERS_DELTA).items]
    assert upns == ["mine@contoso.example"]


def test_missing_and_expired_tokens_are_401_with_graphs_error(
        fake_entra: FakeTokenEndpoint, fake_graph_caller: GraphCaller) -> None:
    anonymous = fake_graph_caller.session.get(f"{fake_graph_caller.base_url}{USERS_DELTA}",
                                              timeout=5)
    assert anonymous.status_code == 401
    error = anonymous.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert error["message"] == "Access token is empty."
    assert {"date", "request-id", "client-request-id"} <= error["innerError"].keys()
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer ")
    fake_entra.expire_all_tokens()
    expired = fake_graph_caller.get(USERS_DELTA)
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]


def test_missing_roles_or_a_denied_app_get_403(
        fake_entra: FakeTokenEndpoint, fake_graph: FakeGraph, fake_app: FakeApp,
        fake_graph_caller: GraphCaller) -> None:
    fake_entra.add_app(fake_app.tenant_id, fake_app.client_id, roles={"User.Read.All"})
    caller = fake_graph_caller
    assert caller.get(GROUPS_DELTA).status_code == 200  # roles are fixed in issued tokens
    caller.refresh_token()
    assert caller.get(USERS_DELTA).status_code == 200
    refused = caller.get(GROUPS_DELTA)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "Authorization_RequestDenied"
    fake_graph.deny(fake_app.client_id)
    assert caller.get(USERS_DELTA).status_code == 403
    fake_graph.allow(fake_app.client_id)
    assert caller.get(USERS_DELTA).status_code == 200


def test_the_request_log_and_counters(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    add_people(directory, 3)
    fake_graph.knobs.page_size = 2
    fake_graph_caller.walk(USERS_DELTA, {"Prefer": "return=minimal",
                                         "client-request-id": "abc"})
    logged = fake_graph.requests_to("/v1.0/users/delta")
    assert [r.status for r in logged] == [200, 200]
    assert logged[0].query["$select"] == SELECT and "$skiptoken" in logged[1].query
    assert logged[0].headers["prefer"] == "return=minimal"
    assert logged[0].headers["authorization"] == f"Bearer {fake_graph_caller.token}"
    assert fake_graph.counters["pages:users"] == 2
    assert fake_graph.counters["objects:users"] == 3


# -- scale -------------------------------------------------------------------------------

def test_seeding_a_million_users_is_instant_and_pages_do_not_scan_the_directory() -> None:
    tracemalloc.start()
    started = time.perf_counter()
    directory = Directory("t", time.time)
    seeded = directory.seed_users(1_000_000)
    seeding = time.perf_counter() - started
    assert tracemalloc.get_traced_memory()[1] < 100_000  # bytes: nothing per user
    tracemalloc.stop()
    assert seeding < 0.05 and len(seeded) == 1_000_000
    directory.disable_user(seeded[999_999])
    cursor = start_full_round(directory, USERS, ("accountEnabled", "userPrincipalName"))
    deep = dataclasses.replace(cursor, position=999_800)
    started = time.perf_counter()
    page = build_page(directory, deep, page_size=200, member_chunk=100, minimal=False)
    assert time.perf_counter() - started < 0.05
    assert len(page.items) == 200 and page.next is None
    assert page.items[-1] == {"accountEnabled": False, "id": seeded[999_999],
                              "userPrincipalName": "user999999@contoso.example"}
    assert directory.get_user(seeded.upn(5))["id"] == seeded[5]


def test_seeded_users_page_through_graph(
        fake_graph: FakeGraph, directory: Directory, fake_graph_caller: GraphCaller) -> None:
    seeded = directory.seed_users(1_000)
    directory.soft_delete_user(seeded[10])
    walk = fake_graph_caller.walk(USERS_DELTA)
    assert len(walk.pages) == 5 and len(walk.items) == 999
    assert len(set(ids(walk.items))) == 999 and seeded[10] not in ids(walk.items)
    assert walk.items[0]["employeeId"] == "E00000000"


# -- group members ---------------------------------------------------------------------

def test_members_and_transitive_members_page_with_select_and_types(
        directory: Directory, fake_graph_caller: GraphCaller) -> None:
    people = add_people(directory, 5)
    inner = directory.create_group("Inner", members=people[3:])
    outer = directory.create_group("Outer", members=[*people[:3], inner])
    direct = fake_graph_caller.walk(
        f"/v1.0/groups/{outer}/members?$select=userPrincipalName,accountEnabled&$top=2")
    assert [len(page["value"]) for page in direct.pages] == [2, 2]
    assert ids(direct.items) == [*people[:3], inner]
    assert direct.items[0] == {"@odata.type": "#microsoft.graph.user", "id": people[0],
                               "userPrincipalName": "person0@contoso.example",
                               "accountEnabled": True}
    assert direct.items[3] == {"@odata.type": "#microsoft.graph.group", "id": inner}
    link = direct.pages[0]["@odata.nextLink"]
    assert "$skiptoken=" in link and "$select=userPrincipalName,accountEnabled" in link
    nested = fake_graph_caller.walk(f"/v1.0/groups/{outer}/transitiveMembers?$select=id")
    assert set(ids(nested.items)) == {*people, inner}
    users = fake_graph_caller.walk(
        f"/v1.0/groups/{outer}/transitiveMembers/microsoft.graph.user?$select=id")
    assert sorted(ids(users.items)) == sorted(people)


def test_members_of_an_unknown_group_or_a_bad_query_are_refused(
        directory: Directory, fake_graph_caller: GraphCaller) -> None:
    group = directory.create_group("G")
    missing = fake_graph_caller.get("/v1.0/groups/00000000-0000-0000-0000-000000000001/members")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "Request_ResourceNotFound"
    assert fake_graph_caller.get(f"/v1.0/groups/{group}/members?$top=1000").status_code == 400
    assert fake_graph_caller.get(f"/v1.0/groups/{group}/members?$select=nope").status_code == 400
    empty = fake_graph_caller.get(f"/v1.0/groups/{group}/transitiveMembers")
    assert empty.status_code == 200 and empty.json()["value"] == []
    directory.delete_group(group)
    assert fake_graph_caller.get(f"/v1.0/groups/{group}/members").status_code == 404
