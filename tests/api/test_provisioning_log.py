"""The provisioning log over the admin API: filters, paging, one entry, the CSV export,
each response checked against openapi.json; tenants see only their own log."""

from __future__ import annotations

import csv
import io
from typing import Any

from connector.api import PREFIX
from tests.api.contract import check_response
from tests.scim.factories import user
from tests.support.clients import ApiClient, ScimClient


def call(api: ApiClient, method: str, path: str, **kw: Any) -> Any:
    response = api.request(method, path, **kw)
    check_response(method, PREFIX + path, response)
    return response


def seed(scim: ScimClient) -> str:
    uid = scim.post("/Users", user("ann@example.com", externalId="=cmd|calc")).json["id"]
    scim.post("/Users", user("bob@example.com"))
    scim.patch(f"/Users/{uid}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                 "Operations": [{"op": "replace", "path": "active",
                                                 "value": False}]})
    assert scim.post("/Users", user("ANN@example.com")).status_code == 409
    return uid


def test_list_filter_page_and_detail(partner: ApiClient, scim: ScimClient) -> None:
    uid = seed(scim)
    base = f"/tenants/{scim.tenant_id}/provisioning-log"
    everything = call(partner, "GET", base).json
    assert everything["total"] == 4
    assert [e["operation"] for e in everything["items"]] == ["create", "disable", "create",
                                                             "create"]
    newest = everything["items"][0]
    assert (newest["result"], newest["code"], newest["request"]["status"]) == (
        "failure", "uniqueness", 409)
    failures = call(partner, "GET", base, query_string={"result": "failure"}).json
    assert [e["id"] for e in failures["items"]] == [newest["id"]]
    mine = call(partner, "GET", base, query_string={"user": "ann@example.com"}).json
    assert {e["userId"] for e in mine["items"]} == {uid}
    assert mine["total"] == 2
    assert call(partner, "GET", base, query_string={"user": uid}).json["total"] == 2
    assert call(partner, "GET", base, query_string={"operation": "disable",
                                                    "source": "scim"}).json["total"] == 1
    assert call(partner, "GET", base, query_string={"source": "entra"}).json["total"] == 0
    assert call(partner, "GET", base, query_string={"since": "2999-01-01"}).json["total"] == 0
    assert call(partner, "GET", base, query_string={"until": "2999-01-01T00:00:00Z"}
                ).json["total"] == 4
    paged = call(partner, "GET", base, query_string={"per_page": 3, "page": 2}).json
    assert (paged["pages"], len(paged["items"])) == (2, 1)
    disabled = mine["items"][0]
    one = call(partner, "GET", f"{base}/{disabled['id']}").json
    assert one == disabled and one["changes"]["active"] == [True, False]
    assert call(partner, "GET", f"{base}/999999").status_code == 404
    assert call(partner, "GET", f"{base}/nope").status_code == 404


def test_bad_filters_are_problems(partner: ApiClient, scim: ScimClient) -> None:
    base = f"/tenants/{scim.tenant_id}/provisioning-log"
    for args in ({"result": "maybe"}, {"since": "yesterday"}, {"run": "x"},
                 {"operation": "explode"}):
        r = call(partner, "GET", base, query_string=args)
        assert r.status_code == 400, args
        assert r.mimetype == "application/problem+json"
        assert next(iter(args)) in r.json["detail"]


def test_another_tenants_log_is_not_found(tenant_admin: ApiClient, scim: ScimClient,
                                          other_scim: ScimClient) -> None:
    other_scim.post("/Users", user())
    assert call(tenant_admin, "GET", f"/tenants/{other_scim.tenant_id}/provisioning-log"
                ).status_code == 404
    assert call(tenant_admin, "GET", f"/tenants/{scim.tenant_id}/provisioning-log"
                ).json["total"] == 0


def test_a_failed_requests_entry_keeps_no_token_from_its_query_string(
        partner: ApiClient, scim: ScimClient) -> None:
    """A client that put its token in the query string as well (`access_token=`, as some
    APIs take it) had it written into the failed request's entry, for every admin of the
    tenant to read."""
    failed = scim.get("/Users", query_string={"filter": "nickName xx 1",
                                              "access_token": scim.token})
    assert failed.status_code == 400
    [entry] = call(partner, "GET", f"/tenants/{scim.tenant_id}/provisioning-log").json["items"]
    assert entry["request"]["path"].startswith("/scim/v2/Users?")
    assert "access_token=[redacted]" in entry["request"]["path"]
    assert scim.token.removeprefix("scim_") not in str(entry)


def test_a_password_of_the_wrong_type_is_not_repeated_in_the_answer_or_the_log(
        partner: ApiClient, scim: ScimClient) -> None:
    """`"password": {"value": "…"}` was refused with the password in the error's detail,
    which the provisioning log keeps as the failure's reason."""
    secret = "Tr0ub4dor&3-horse"
    refused = scim.post("/Users", {**user("pw@example.com"), "password": {"value": secret}})
    assert refused.status_code == 400
    assert refused.json["detail"] == "'password' must be of type string; got a dict."
    [entry] = call(partner, "GET", f"/tenants/{scim.tenant_id}/provisioning-log").json["items"]
    assert entry["result"] == "failure" and secret not in str(entry)
    other = scim.post("/Users", {**user("pw@example.com"), "active": "maybe"})
    assert "got 'maybe'" in other.json["detail"]  # other values are still quoted


def test_csv_export_with_filters_and_formulas_defused(partner: ApiClient, scim: ScimClient
                                                      ) -> None:
    seed(scim)
    r = call(partner, "GET", f"/tenants/{scim.tenant_id}/exports/provisioning-log.csv",
             query_string={"result": "success"})
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"].endswith('.csv"')
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert rows[0][:6] == ["time", "source", "source ref", "client", "operation", "result"]
    assert [row[4] for row in rows[1:]] == ["create", "create", "disable"]
    assert rows[1][9] == "'=cmd|calc"  # CSV injection defused
    assert call(partner, "GET", f"/tenants/{scim.tenant_id}/exports/provisioning-log.csv",
                query_string={"result": "no"}).status_code == 400
