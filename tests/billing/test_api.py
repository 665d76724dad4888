"""The billing admin API, the activity endpoint and the reporting API, on both databases."""

from __future__ import annotations

import csv
import io
import re
from urllib.parse import unquote

import openpyxl
import requests
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from connector import events
from connector.db import make_sessionmaker
from connector.models import Event, Tenant
from tests.api.contract import check_response
from tests.billing.history import History
from tests.conftest import API, ApiClient, HttpVerbs, ScimClient
from tests.support.app import LiveServer
from tests.support.clients import make_admin


class Checked(HttpVerbs):
    """An admin API client whose every answer is checked against openapi.json."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def request(self, method: str, path: str, body: object = None, **kw: object) -> object:
        response = self.api.request(method, path, body, **kw)
        check_response(method, API + path, response)
        return response

PRICES = [{"unit": "Hybrid", "plan": "standard", "price": "5.00"},
          {"unit": "user", "plan": "standard", "price": "2.00"}]


def closed_history(engine: Engine, tenant_id: str | None = None) -> History:
    h = History(engine, "2026-09-01T09:00:00")
    h.billing(prices=PRICES, company_name="Acme BV", po_number="PO-1")
    a = h.create("2026-09-02T10:00:00", "a@x.io", modules=("Hybrid",))
    h.create("2026-09-02T10:00:00", "b@x.io", guest=True, modules=("Hybrid",))
    h.create("2026-09-03T10:00:00", "c@x.io")
    h.set_active("2026-10-15T10:00:00", a, False)
    return h


def test_billing_info_tenant_admins_fill_in_the_invoice_fields(
        partner: ApiClient, tenant_admin: ApiClient, scim: ScimClient) -> None:
    partner = Checked(partner)  # type: ignore[assignment]
    tenant_admin = Checked(tenant_admin)  # type: ignore[assignment]
    base = f"/tenants/{scim.tenant_id}/billing"
    got = tenant_admin.get(base)
    assert got.status_code == 200 and got.json["policy"] == "active_with_module"
    ok = tenant_admin.put(base, {"companyName": "Acme BV", "poNumber": "PO-9"})
    assert ok.status_code == 200 and ok.json["companyName"] == "Acme BV"
    refused = tenant_admin.put(base, {"prices": PRICES})
    assert refused.status_code == 403
    assert partner.get(base).json["prices"] == []
    bad = partner.put(base, {"prices": [{"unit": "Hybrid", "plan": "gold", "price": "1"}]})
    assert bad.status_code == 400 and "plan" in bad.json["detail"]
    assert partner.put(base, {"timeZone": "Mars/Olympus"}).status_code == 400
    assert partner.put(base, {"policy": "everyone"}).status_code == 400
    done = partner.put(base, {"prices": PRICES, "policy": "whole_month",
                              "trialEndsOn": "2026-10-18", "timeZone": "Europe/Amsterdam"})
    assert done.status_code == 200
    assert (done.json["policy"], done.json["timeZone"], done.json["trialEndsOn"]) == \
        ("whole_month", "Europe/Amsterdam", "2026-10-18")
    # Nothing of a refused request was applied.
    assert partner.get(base).json["companyName"] == "Acme BV"


def test_a_price_for_a_unit_that_does_not_exist_is_refused(
        partner: ApiClient, scim: ScimClient) -> None:
    """A typo ("Hybird") was stored silently, and the invoice line of the real module
    then said "no price set"."""
    partner = Checked(partner)  # type: ignore[assignment]
    base = f"/tenants/{scim.tenant_id}/billing"
    typo = partner.put(base, {"companyName": "Acme BV", "prices": [
        {"unit": "Hybird", "plan": "standard", "price": "5.00"}]})
    assert typo.status_code == 400 and typo.mimetype == "application/problem+json"
    assert "'Hybird' is neither \"user\" nor a module of this tenant's catalogue" in \
        typo.json["detail"]
    assert "Price one of: user, Engage, Hybrid, Unify." in typo.json["detail"]
    assert partner.get(base).json["prices"] == [] and partner.get(base).json[
        "companyName"] == ""  # nothing of the request applied
    # A module of the catalogue in another case is stored in the catalogue's spelling.
    done = partner.put(base, {"prices": [{"unit": "hybrid", "plan": "standard", "price": "5"},
                                         {"unit": "USER", "plan": "standard", "price": "2"}]})
    assert done.status_code == 200
    assert [(p["unit"], p["price"]) for p in done.json["prices"]] == [("Hybrid", "5"),
                                                                       ("user", "2")]


def test_months_close_show_lines_and_reissue(partner: ApiClient, engine: Engine) -> None:
    partner = Checked(partner)  # type: ignore[assignment]
    h = closed_history(engine)
    base = f"/tenants/{h.tenant_id}/billing"
    assert partner.get(f"{base}/months/2026-10").status_code == 404
    assert partner.post(f"{base}/months/2099-01/close").status_code == 409
    assert partner.post(f"{base}/months/13-2026/close").status_code == 400
    closed = partner.post(f"{base}/months/2026-10/close")
    assert closed.status_code == 201, closed.json
    assert closed.json["invoice"]["total"] == "5.00"  # b (guest, Hybrid); a inactive
    again = partner.post(f"{base}/months/2026-10/close")
    assert again.status_code == 200 and again.json["hash"] == closed.json["hash"]
    months = partner.get(f"{base}/months").json["items"]
    assert [m["month"] for m in months] == ["2026-10"]
    detail = partner.get(f"{base}/months/2026-10").json
    assert detail["versions"][0]["state"] == "closed" and detail["adjustments"] == []
    lines = partner.get(f"{base}/months/2026-10/lines?billable=false").json
    assert {(i["userName"], i["reason"]) for i in lines["items"]} == {
        ("a@x.io", "inactive_at_end"), ("c@x.io", "no_module")}
    assert partner.get(f"{base}/months/2026-10/lines?billable=maybe").status_code == 400
    assert partner.post(f"{base}/months/2026-10/reissue", {"reason": " "}).status_code == 400
    re = partner.post(f"{base}/months/2026-10/reissue", {"reason": "PO number fixed"})
    assert re.status_code == 201 and re.json["version"] == 2
    preview = partner.get(f"{base}/preview").json
    assert preview["policy"] == "active_with_module"
    overview = partner.get(f"{base}/overview").json
    assert overview["modules"] == [{"module": "Hybrid", "regular": 0, "guest": 1}]
    assert overview["activeUsers"] == {"regular": 1, "guest": 1, "inactive": 1}


def test_tenant_admins_cannot_close_or_reissue(tenant_admin: ApiClient, scim: ScimClient
                                               ) -> None:
    tenant_admin = Checked(tenant_admin)  # type: ignore[assignment]
    base = f"/tenants/{scim.tenant_id}/billing/months/2026-10"
    assert tenant_admin.post(f"{base}/close").status_code == 403
    assert tenant_admin.post(f"{base}/reissue", {"reason": "x"}).status_code == 403


def test_activity_is_checked_whole_before_anything_is_stored(
        tenant_admin: ApiClient, scim: ScimClient) -> None:
    tenant_admin = Checked(tenant_admin)  # type: ignore[assignment]
    user = scim.post("/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                "userName": "a@x.io"}).json["id"]
    url = f"/tenants/{scim.tenant_id}/activity"
    good = {"userId": user, "type": "sign_in", "occurredAt": "2026-11-03T08:00:00Z"}
    for bad in ({"userId": user, "type": "email_opened", "occurredAt": "2026-11-03T08:00:00Z"},
                {"userId": user, "type": "visit", "occurredAt": "yesterday"},
                {"userId": user, "type": "visit", "occurredAt": "2026-11-03T08:00:00"},
                {"userId": "nobody", "type": "chat", "occurredAt": "2026-11-03T08:00:00Z"},
                {"userId": user, "type": "chat", "occurredAt": "2999-01-01T00:00:00Z"}):
        answer = tenant_admin.post(url, {"activity": [good, bad]})
        assert answer.status_code == 400, bad
        assert answer.json["type"] == "urn:connector:problem:invalid-request"
    accepted = tenant_admin.post(url, {"activity": [good, {**good, "type": "notification"}]})
    assert accepted.status_code == 202 and accepted.json == {"accepted": 2}


def test_invite_claim_and_frontline(tenant_admin: ApiClient, scim: ScimClient) -> None:
    tenant_admin = Checked(tenant_admin)  # type: ignore[assignment]
    user = scim.post("/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                "userName": "a@x.io"}).json["id"]
    base = f"/tenants/{scim.tenant_id}/users/{user}"
    invited = tenant_admin.post(f"{base}/invite")
    assert invited.status_code == 200 and invited.json["invitedAt"]
    claimed = tenant_admin.post(f"{base}/claim").json
    assert claimed["claimedAt"] and claimed["invitedAt"] == invited.json["invitedAt"]
    front = tenant_admin.put(f"{base}/frontline", {"desklessPercent": 50,
                                                   "frontlineRole": "medical"})
    assert front.status_code == 200
    assert front.json["frontline"] == {"desklessPercent": 50, "frontlineRole": "medical"}
    assert tenant_admin.put(f"{base}/frontline", {"desklessPercent": 150}).status_code == 400
    assert tenant_admin.put(f"{base}/frontline", {"frontlineRole": "pilot"}).status_code == 400
    assert tenant_admin.post(f"/tenants/{scim.tenant_id}/users/nobody/invite"
                             ).status_code == 404


def test_reporting_api_with_a_provisioning_key(partner: ApiClient, client: FlaskClient,
                                               engine: Engine) -> None:
    partner = Checked(partner)  # type: ignore[assignment]
    h = closed_history(engine)
    assert partner.post(f"/tenants/{h.tenant_id}/billing/months/2026-10/close"
                        ).status_code == 201
    made = partner.post("/reporting-keys", {"name": "Power BI"})
    assert made.status_code == 201 and made.json["key"].startswith("rk_")
    key = made.json["key"]
    assert partner.get("/reporting-keys").json["items"][0]["hint"] == "…" + key[-4:]
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/reporting/v1/months").status_code == 401
    assert client.get("/reporting/v1/months",
                      headers={"Authorization": "Bearer rk_nope"}).status_code == 401
    months = client.get("/reporting/v1/months", headers=auth)
    assert months.status_code == 200 and months.json["items"][0]["month"] == "2026-10"
    rows = client.get("/reporting/v1/months/2026-10/tenants", headers=auth)
    (row,) = rows.json["items"]
    assert (row["companyName"], row["poNumber"], row["total"], row["usersBillable"]) == \
        ("Acme BV", "PO-1", "5.00", 1)
    etag = rows.headers["ETag"]
    again = client.get("/reporting/v1/months/2026-10/tenants",
                       headers={**auth, "If-None-Match": etag})
    assert again.status_code == 304
    counts = client.get("/reporting/v1/months/2026-10/counts.csv", headers=auth)
    table = list(csv.DictReader(io.StringIO(counts.get_data(as_text=True))))
    assert [(r["unit"], r["audience"], r["count"], r["amount"]) for r in table] == \
        [("Hybrid", "guest", "1", "5.00")]
    empty = client.get("/reporting/v1/months/2026-08/tenants.csv", headers=auth)
    header = next(csv.reader(io.StringIO(empty.get_data(as_text=True))))
    full = client.get("/reporting/v1/months/2026-10/tenants.csv", headers=auth)
    assert header == next(csv.reader(io.StringIO(full.get_data(as_text=True))))
    bad_month = client.get("/reporting/v1/months/2026-13/tenants", headers=auth)
    assert bad_month.status_code == 400 and bad_month.mimetype == "application/problem+json"
    # about:blank problems carry the status's reason phrase as title (RFC 9457 §4.2.1)
    assert bad_month.json["type"] == "about:blank" and bad_month.json["title"] == "Bad Request"
    assert bad_month.json["detail"].startswith("Invalid month: ")
    unauthorized = client.get("/reporting/v1/months")
    assert unauthorized.json["title"] == "Unauthorized"
    assert unauthorized.json["detail"].startswith("Provisioning key required: ")
    assert client.get("/reporting/v1/months/2026-10/tenants?per_page=0",
                      headers=auth).status_code == 400
    key_id = made.json["id"]
    assert partner.delete(f"/reporting-keys/{key_id}").status_code == 204
    assert client.get("/reporting/v1/months", headers=auth).status_code == 401


def test_exports_of_a_closed_month(partner: ApiClient, engine: Engine) -> None:
    partner = Checked(partner)  # type: ignore[assignment]
    h = closed_history(engine)
    base = f"/tenants/{h.tenant_id}/billing/months/2026-10"
    assert partner.get(f"{base}/billed-users.csv").status_code == 404  # not closed yet
    partner.post(f"{base}/close")
    billed = partner.get(f"{base}/billed-users.csv")
    assert billed.headers["Content-Disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(billed.get_data(as_text=True))))
    billed.close()
    assert {(r["username"], r["billable"], r["reason"]) for r in rows} == {
        ("a@x.io", "false", "inactive_at_end"), ("b@x.io", "true", "active_with_module"),
        ("c@x.io", "false", "no_module")}
    book = openpyxl.load_workbook(io.BytesIO(download(partner, f"{base}/invoice.xlsx")))
    cells = [c for row in book.active.iter_rows(values_only=True) for c in row if c]
    assert "PO-1" in cells and "Acme BV" in cells
    invoice = download(partner, f"{base}/invoice.csv").decode()
    assert "5.00" in invoice
    users = openpyxl.load_workbook(io.BytesIO(
        download(partner, f"/tenants/{h.tenant_id}/exports/users.xlsx")))
    header = next(users.active.iter_rows(values_only=True))
    assert header[:4] == ("first name", "last name", "e-mail", "username")


def download(api: Checked, path: str) -> bytes:
    """The body of a download; the response is closed, as a server closes it (which
    closes the temporary file an XLSX is sent from)."""
    response = api.get(path)
    try:
        assert response.status_code == 200
        return bytes(response.get_data())
    finally:
        response.close()


def test_the_time_zone_is_tenant_policy_recorded_apart_from_the_billing_info(
        partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    base = f"/tenants/{scim.tenant_id}/billing"
    assert partner.put(base, {"timeZone": "Europe/Oslo", "companyName": "Nord AS"}
                       ).status_code == 200
    assert partner.put(base, {"timeZone": "Europe/Oslo"}).status_code == 200  # no change
    with make_sessionmaker(engine)() as s:
        rows = s.execute(select(Event.kind, Event.old_value, Event.new_value)
                         .where(Event.tenant_id == scim.tenant_id,
                                Event.kind.in_((events.TENANT_SETTINGS,
                                                events.BILLING_PROFILE)))
                         .order_by(Event.id)).all()
    assert [(kind, old, new) for kind, old, new in rows[:2]] == [
        (events.TENANT_SETTINGS, {"time_zone": "UTC"}, {"time_zone": "Europe/Oslo"}),
        (events.BILLING_PROFILE, {"companyName": "", "version": 0},
         {"companyName": "Nord AS", "version": 1})]
    assert [kind for kind, _old, _new in rows[2:]] == [events.BILLING_PROFILE]  # version


def test_a_back_dated_correction_over_the_api(partner: ApiClient, tenant_admin: ApiClient,
                                              scim: ScimClient) -> None:
    partner = Checked(partner)  # type: ignore[assignment]
    tenant_admin = Checked(tenant_admin)  # type: ignore[assignment]
    made = partner.post(f"/tenants/{scim.tenant_id}/users", {"userName": "cleo@x.io"}).json
    base = f"/tenants/{scim.tenant_id}/users/{made['id']}"
    body = {"kind": "status", "value": "inactive", "effectiveAt": made["created"],
            "reason": "left on the 28th; the IdP sync was down"}
    assert tenant_admin.post(f"{base}/corrections", body).status_code == 403
    r = partner.post(f"{base}/corrections", body)
    assert r.status_code == 201, r.json
    assert r.json["currentStateChanged"] is True and r.json["user"]["status"] == "inactive"
    assert [(e["kind"], e["new"], e["reason"]) for e in r.json["events"]] == [
        ("user.status", False, body["reason"])]
    history = partner.get(f"{base}/history").json["items"]
    assert history[0]["reason"] == body["reason"]
    again = partner.post(f"{base}/corrections", body)
    assert again.status_code == 409 and "already says inactive" in again.json["detail"]
    future = partner.post(f"{base}/corrections", {**body, "effectiveAt": "2999-01-01T00:00:00Z"})
    assert future.status_code == 400 and "not in the past" in future.json["detail"]
    early = partner.post(f"{base}/corrections", {**body, "effectiveAt": "2000-01-01T00:00:00Z"})
    assert early.status_code == 400 and "before the" in early.json["detail"]
    no_reason = partner.post(f"{base}/corrections", {**body, "reason": ""})
    assert no_reason.status_code == 400
    assert partner.post(f"/tenants/{scim.tenant_id}/users/nobody/corrections",
                        body).status_code == 404


def test_external_company_guest_over_the_admin_api(tenant_admin: ApiClient,
                                                   scim: ScimClient) -> None:
    tenant_admin = Checked(tenant_admin)  # type: ignore[assignment]
    made = tenant_admin.post(f"/tenants/{scim.tenant_id}/users",
                             {"userName": "dan@x.io", "externalCompanyGuest": True})
    assert made.status_code == 201 and made.json["externalCompanyGuest"] is True
    base = f"/tenants/{scim.tenant_id}/users/{made.json['id']}"
    off = tenant_admin.patch(base, {"externalCompanyGuest": False})
    assert off.status_code == 200 and off.json["externalCompanyGuest"] is False
    assert tenant_admin.get(f"{base}/history").json["items"][0]["kind"] == "user.external_guest"
    assert tenant_admin.patch(base, {"externalCompanyGuest": "yes"}).status_code == 400


def test_a_trial_given_by_its_start(partner: ApiClient, tenant_admin: ApiClient,
                                    scim: ScimClient) -> None:
    """Issue 17, item 13: a trial is 30 days, so its start gives its last free day."""
    partner = Checked(partner)  # type: ignore[assignment]
    path = f"/tenants/{scim.tenant_id}/billing"
    assert tenant_admin.put(path, {"trialStartsOn": "2026-10-03"}).status_code == 403
    done = partner.put(path, {"trialStartsOn": "2026-10-03"})
    assert done.status_code == 200 and done.json["trialEndsOn"] == "2026-11-01"
    agree = partner.put(path, {"trialStartsOn": "2026-02-01", "trialEndsOn": "2026-03-02"})
    assert agree.status_code == 200 and agree.json["trialEndsOn"] == "2026-03-02"
    clash = partner.put(path, {"trialStartsOn": "2026-02-01", "trialEndsOn": "2026-03-31",
                               "companyName": "Kept out"})
    assert clash.status_code == 400 and "ends on 2026-03-02" in clash.json["detail"]
    bad = partner.put(path, {"trialStartsOn": "soon"})
    assert bad.status_code == 400
    after = partner.get(path).json
    assert (after["trialEndsOn"], after["companyName"]) == ("2026-03-02", "")


def test_downloads_of_a_tenant_named_outside_latin_1(
        partner: ApiClient, engine: Engine, live_server: LiveServer) -> None:
    """A tenant called "Dvořák s.r.o." (ř is not Latin-1): every CSV download used to put
    the name as it is into Content-Disposition, which a WSGI server cannot send (a 500
    under gunicorn, a dropped answer here); the users CSV's name also lacked ".csv", and
    billing's CSVs said their charset twice. Real HTTP, so the server's encoding of the
    headers is what is tested."""
    h = closed_history(engine)
    with make_sessionmaker(engine)() as s:
        tenant = s.get(Tenant, h.tenant_id)
        assert tenant is not None
        tenant.name = "Dvořák s.r.o."
        s.commit()
    month = f"/tenants/{h.tenant_id}/billing/months/2026-10"
    assert partner.post(f"{month}/close").status_code == 201
    _, token = make_admin(engine, "clerk@partner.example")
    auth = {"Authorization": f"Bearer {token}"}
    downloads = {f"/tenants/{h.tenant_id}/exports/users.csv": "users-dvořák-s-r-o-",
                 f"/tenants/{h.tenant_id}/exports/provisioning-log.csv":
                     "provisioning-log-dvořák-s-r-o-",
                 f"{month}/billed-users.csv": "billed-users-dvořák-s-r-o-2026-10.csv",
                 f"{month}/invoice.csv": "invoice-dvořák-s-r-o-2026-10.csv",
                 f"{month}/invoice.xlsx": "invoice-dvořák-s-r-o-2026-10.xlsx"}
    for path, name in downloads.items():
        response = requests.get(live_server.url + API + path, headers=auth, timeout=30)
        assert response.status_code == 200, path
        disposition = response.headers["Content-Disposition"]
        assert disposition.isascii(), disposition
        ascii_name = re.search(r'filename="?([^";]+)', disposition)
        utf8_name = re.search(r"filename\*=UTF-8''(\S+)", disposition)
        assert ascii_name and ascii_name.group(1).startswith(
            name.replace("ř", "r").replace("á", "a")), disposition
        assert utf8_name and unquote(utf8_name.group(1)).startswith(name), disposition
        extension = name.rsplit(".", 1)[-1] if "." in name else "csv"
        assert unquote(utf8_name.group(1)).endswith("." + extension), disposition
        if extension == "csv":
            assert response.headers["Content-Type"] == "text/csv; charset=utf-8", path


def test_reporting_counts_leave_an_unset_price_empty(
        client: FlaskClient, partner: ApiClient, engine: Engine) -> None:
    """A unit without a price was reported with unitPrice "0", which a BI tool sums as
    free of charge; the invoice says "no price set". Now null (an empty CSV cell)."""
    h = History(engine, "2026-09-01T09:00:00")
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"}])
    h.create("2026-09-02T10:00:00", "a@x.io", modules=("Hybrid", "Engage"))
    assert partner.post(f"/tenants/{h.tenant_id}/billing/months/2026-10/close"
                        ).status_code == 201
    key = partner.post("/reporting-keys", {"name": "BI"}).json["key"]
    auth = {"Authorization": f"Bearer {key}"}
    rows = client.get("/reporting/v1/months/2026-10/counts", headers=auth).json["items"]
    assert {r["unit"]: r["unitPrice"] for r in rows} == {"Engage": None, "Hybrid": "5.00"}
    table = csv.DictReader(io.StringIO(client.get(
        "/reporting/v1/months/2026-10/counts.csv", headers=auth).get_data(as_text=True)))
    assert {r["unit"]: (r["unitPrice"], r["amount"]) for r in table} == {
        "Engage": ("", "0.00"), "Hybrid": ("5.00", "5.00")}
