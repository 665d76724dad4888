"""The attribute mapping table: a round against the fake Graph lands every mapped
attribute where SCIM GET and the admin API read it; the table drives $select and what
lands; a null clears; managers resolve, also when they arrive after their reports."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import Engine

from azure_sync import mapping
from tests.azure_sync.test_api import api, register, run_and_wait, sync_app  # noqa: F401
from tests.conftest import ApiClient, make_tenant
from tests.fakes.fixtures import FakeApp
from tests.fakes.graph import FakeGraph

ENTERPRISE = mapping.ENTERPRISE
PROFILE = {"jobTitle": "Engineer", "department": "R&D", "employeeId": "E-7",
           "mobilePhone": "+1 555 0100", "businessPhones": ["+1 555 0200", "+1 555 0201"],
           "faxNumber": "+1 555 0300", "officeLocation": "Building 4",
           "streetAddress": "1 Main St", "postalCode": "98052", "companyName": "Contoso",
           "givenName": "Ann", "surname": "Lee",
           "onPremisesExtensionAttributes": {f"extensionAttribute{n}": None
                                             for n in range(1, 16)}
           | {"extensionAttribute1": "CC-12"}}


def scim_get(sync_app: Flask, token: str, user_id: str) -> dict[str, Any]:  # noqa: F811
    answer = sync_app.test_client().get(f"/scim/v2/Users/{user_id}",
                                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.json
    return answer.json  # type: ignore[no-any-return]


def ids_by_upn(api: ApiClient, tenant_id: str) -> dict[str, str]:  # noqa: F811
    items = api.get(f"/tenants/{tenant_id}/users?per_page=200").json["items"]
    return {u["userName"]: u["id"] for u in items}


def last_users_select(graph: FakeGraph) -> set[str]:
    for logged in reversed(graph.log):
        if logged.path.endswith("/users/delta") and "$select" in logged.query:
            return set(logged.query["$select"].split(","))
    raise AssertionError("no users delta request with $select")


def test_a_round_lands_the_default_mapping(engine: Engine, sync_app: Flask,  # noqa: F811
                                           api: ApiClient, fake_graph: FakeGraph,  # noqa: F811
                                           fake_app: FakeApp) -> None:
    tenant_id, token = make_tenant(engine, "Mapped")
    entra = fake_graph.directory(fake_app.tenant_id)
    boss = entra.add_user("boss@contoso.example", displayName="The Boss")
    entra.add_user("ann@contoso.example", manager=boss, **PROFILE)
    assert register(api, tenant_id, fake_app).status_code == 200
    run = run_and_wait(api, tenant_id)
    assert run["status"] == "succeeded", run
    assert last_users_select(fake_graph) == set(mapping.USER_SELECT)
    ids = ids_by_upn(api, tenant_id)
    user = scim_get(sync_app, token, ids["ann@contoso.example"])
    assert user["title"] == "Engineer"
    assert user["name"] == {"givenName": "Ann", "familyName": "Lee"}
    assert user["emails"] == [{"value": "ann@contoso.example", "type": "work", "primary": True}]
    assert {(p["type"], p["value"]) for p in user["phoneNumbers"]} == {
        ("mobile", "+1 555 0100"), ("work", "+1 555 0200"), ("fax", "+1 555 0300")}
    assert {a["type"]: a for a in user["addresses"]} == {
        "other": {"type": "other", "formatted": "Building 4"},
        "work": {"type": "work", "streetAddress": "1 Main St", "postalCode": "98052"}}
    assert user[ENTERPRISE] == {"department": "R&D", "employeeNumber": "E-7",
                                "manager": {"value": ids["boss@contoso.example"]}}
    assert ENTERPRISE in user["schemas"]
    # Not mapped by default, as in Entra: companyName, the extension attributes.
    assert "organization" not in user[ENTERPRISE] and "costCenter" not in user[ENTERPRISE]
    profile = api.get(f"/tenants/{tenant_id}/users/{ids['ann@contoso.example']}").json[
        "profile"]
    assert profile["title"] == "Engineer" and profile["department"] == "R&D"
    assert profile["employeeNumber"] == "E-7"
    assert profile["manager"] == {"id": ids["boss@contoso.example"],
                                  "userName": "boss@contoso.example",
                                  "displayName": "The Boss"}
    assert {"type": "mobile", "value": "+1 555 0100"} in profile["phoneNumbers"]
    # A SCIM projection of the enterprise extension works on synced users.
    answer = sync_app.test_client().get(
        f"/scim/v2/Users/{ids['ann@contoso.example']}?attributes={ENTERPRISE}:department",
        headers={"Authorization": f"Bearer {token}"}).json
    assert answer[ENTERPRISE] == {"department": "R&D"}

    # A null clears; an absent property is unchanged.
    ann = entra.get_user("ann@contoso.example")["id"]
    entra.update_user(ann, jobTitle=None, mobilePhone=None, manager=None, department="Ops")
    assert run_and_wait(api, tenant_id)["status"] == "succeeded"
    user = scim_get(sync_app, token, ids["ann@contoso.example"])
    assert "title" not in user
    assert {p["type"] for p in user["phoneNumbers"]} == {"work", "fax"}
    assert user[ENTERPRISE] == {"department": "Ops", "employeeNumber": "E-7"}
    assert user["name"] == {"givenName": "Ann", "familyName": "Lee"}


def test_the_table_drives_select_and_what_lands(engine: Engine, sync_app: Flask,  # noqa: F811
                                                api: ApiClient,  # noqa: F811
                                                fake_graph: FakeGraph,
                                                fake_app: FakeApp) -> None:
    tenant_id, token = make_tenant(engine, "Custom")
    entra = fake_graph.directory(fake_app.tenant_id)
    entra.add_user("ann@contoso.example", **PROFILE)
    assert register(api, tenant_id, fake_app).status_code == 200
    shown = api.get(f"/tenants/{tenant_id}/entra/mappings").json
    assert shown["isDefault"] and shown["mappings"] == mapping.DEFAULT_TABLE
    assert run_and_wait(api, tenant_id)["status"] == "succeeded"

    table = {k: v for k, v in mapping.DEFAULT_TABLE.items() if k != "jobTitle"}
    table |= {"companyName": f"{ENTERPRISE}:organization",
              "onPremisesExtensionAttributes.extensionAttribute1": f"{ENTERPRISE}:costCenter",
              "jobTitle": "nickName"}
    answer = api.put(f"/tenants/{tenant_id}/entra/mappings", {"mappings": table})
    assert answer.status_code == 200, answer.json
    assert not answer.json["isDefault"]
    assert {"companyName", "onPremisesExtensionAttributes", "jobTitle"} <= set(
        answer.json["select"])
    # The deltaLink carried the old $select: the next round reads every user again.
    run = run_and_wait(api, tenant_id)
    assert run["status"] == "succeeded" and run["kind"] == "full", run
    assert last_users_select(fake_graph) == set(answer.json["select"])
    user = scim_get(sync_app, token, ids_by_upn(api, tenant_id)["ann@contoso.example"])
    assert user[ENTERPRISE]["organization"] == "Contoso"
    assert user[ENTERPRISE]["costCenter"] == "CC-12"
    assert user["nickName"] == "Engineer"

    # Unmapping stops the reads of a property: Graph is no longer asked for it.
    smaller = {k: v for k, v in table.items() if k not in ("companyName", "faxNumber")}
    answer = api.put(f"/tenants/{tenant_id}/entra/mappings", {"mappings": smaller})
    assert answer.status_code == 200
    assert run_and_wait(api, tenant_id)["status"] == "succeeded"
    assert {"companyName", "faxNumber"}.isdisjoint(last_users_select(fake_graph))

    # Back to the default: no row, the default again.
    answer = api.put(f"/tenants/{tenant_id}/entra/mappings",
                     {"mappings": mapping.DEFAULT_TABLE})
    assert answer.status_code == 200 and answer.json["isDefault"]


def test_a_bad_table_is_a_clear_400(engine: Engine, api: ApiClient,  # noqa: F811
                                    fake_app: FakeApp) -> None:
    tenant_id, _ = make_tenant(engine, "Bad")
    url = f"/tenants/{tenant_id}/entra/mappings"
    cases = [({"favouriteColour": "title"}, "mappings.favouriteColour", "Unknown Graph"),
             ({"jobTitle": "rank"}, "mappings.jobTitle", "Unknown target"),
             ({"jobTitle": "title", "department": "title"}, "mappings.jobTitle",
              "both map to"),  # (the test client sends keys sorted: department first)
             ({"manager": "title"}, "mappings.manager", "manager maps only"),
             ({"department": mapping.MANAGER_TARGET}, "mappings.department",
              "manager maps only")]
    for table, member, words in cases:
        answer = api.put(url, {"mappings": table})
        assert answer.status_code == 400, (table, answer.json)
        assert answer.json["errors"][0]["member"] == member
        assert words in answer.json["detail"]
    answer = api.put(url, {"mappings": {"jobTitle": 7}})
    assert answer.status_code == 400  # the contract: targets are strings
    assert api.get(url).json["isDefault"]  # nothing half-applied


def test_a_manager_arriving_later_is_filled_in(engine: Engine, sync_app: Flask,  # noqa: F811
                                               api: ApiClient,  # noqa: F811
                                               fake_graph: FakeGraph,
                                               fake_app: FakeApp) -> None:
    tenant_id, token = make_tenant(engine, "Managers")
    entra = fake_graph.directory(fake_app.tenant_id)
    fake_graph.knobs.page_size = 2
    # Reports first, in creation order: their manager is in a later page, or not yet in
    # Entra at all.
    late_boss = "11111111-2222-3333-4444-555555555555"
    entra.add_user("r1@contoso.example", manager=late_boss)
    boss = entra.add_user("boss@contoso.example")
    for n in (2, 3):
        entra.update_user(entra.add_user(f"r{n}@contoso.example"), manager=boss)
    entra.update_user(boss, manager=entra.get_user("r1@contoso.example")["id"])
    assert register(api, tenant_id, fake_app).status_code == 200
    assert run_and_wait(api, tenant_id)["status"] == "succeeded"
    ids = ids_by_upn(api, tenant_id)
    for n in (2, 3):
        user = scim_get(sync_app, token, ids[f"r{n}@contoso.example"])
        assert user[ENTERPRISE]["manager"] == {"value": ids["boss@contoso.example"]}
    boss_user = scim_get(sync_app, token, ids["boss@contoso.example"])
    assert boss_user[ENTERPRISE]["manager"] == {"value": ids["r1@contoso.example"]}
    # r1's manager is not in Entra yet: empty, and filled in when it arrives.
    assert ENTERPRISE not in scim_get(sync_app, token, ids["r1@contoso.example"])
    entra.add_user("late@contoso.example", id=late_boss)
    assert run_and_wait(api, tenant_id)["status"] == "succeeded"
    ids = ids_by_upn(api, tenant_id)
    user = scim_get(sync_app, token, ids["r1@contoso.example"])
    assert user[ENTERPRISE]["manager"] == {"value": ids["late@contoso.example"]}
