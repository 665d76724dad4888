from __future__ import annotations

from flask.testing import FlaskClient

from tests.support.clients import SCIM


def test_service_provider_config_tells_the_truth(client: FlaskClient) -> None:
    spc = client.get(f"{SCIM}/ServiceProviderConfig").json
    assert spc["patch"]["supported"] and spc["filter"]["supported"] and spc["etag"]["supported"]
    assert spc["bulk"] == {"supported": True, "maxOperations": 1000, "maxPayloadSize": 1048576}
    assert spc["changePassword"]["supported"] is False
    assert spc["authenticationSchemes"][0]["type"] == "oauthbearertoken"


def test_resource_types_and_schemas(client: FlaskClient) -> None:
    types = client.get(f"{SCIM}/ResourceTypes").json
    assert {t["name"] for t in types["Resources"]} == {"User", "Group"}
    schemas = client.get(f"{SCIM}/Schemas").json["Resources"]
    user = next(s for s in schemas if s["id"].endswith("core:2.0:User"))
    password = next(a for a in user["attributes"] if a["name"] == "password")
    assert password["returned"] == "never" and password["mutability"] == "writeOnly"
    one = client.get(f"{SCIM}/Schemas/{user['id']}")
    assert one.status_code == 200 and one.json["id"] == user["id"]
    assert client.get(f"{SCIM}/ResourceTypes/User").json["endpoint"] == "/Users"


def test_filter_on_discovery_is_forbidden(client: FlaskClient) -> None:
    assert client.get(f'{SCIM}/Schemas?filter=id eq "x"').status_code == 403


def test_schemas_name_the_callers_module_catalogue(client: FlaskClient, scim) -> None:  # type: ignore[no-untyped-def]
    def modules_attr(response):  # type: ignore[no-untyped-def]
        ext = next(s for s in response.json["Resources"]
                   if s["id"] == "urn:connector:params:scim:schemas:extension:2.0:User")
        return next(a for a in ext["attributes"] if a["name"] == "modules")

    anonymous = client.get(f"{SCIM}/Schemas")
    assert "canonicalValues" not in modules_attr(anonymous)
    mine = scim.get("/Schemas")
    assert modules_attr(mine)["canonicalValues"] == ["Engage", "Hybrid", "Unify"]
