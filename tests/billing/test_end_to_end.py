"""Billing end to end, on both databases, with the clock frozen by time-machine.

Two tenants live through September and October 2026 on the real surfaces:

- Acme, fed over SCIM, billed in Europe/Amsterdam (its September ends at 22:00 UTC on
  30 September, its October at 23:00 UTC on 31 October, after DST);
- Contoso, fed by Entra ID sync from the fake Entra and fake Graph over real HTTPS, in UTC,
  whose months also wait for a sync round that started after their boundary.

The scheduler's pass (`billing.scheduler.run_due`, as the job calls it) closes the months
and sends the e-mail reports to an SMTP server on loopback; the closed months are read
through the admin API (every answer checked against openapi.json), their exports
downloaded and parsed, and the reporting API read with a provisioning key.
"""

from __future__ import annotations

import csv
import datetime as dt
import email.message
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openpyxl
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from azure_sync import rounds, secrets
from azure_sync.service import SyncService, register
from billing import scheduler
from connector.config import AzureSyncSettings, BillingSettings
from connector.db import make_sessionmaker
from connector.events import WriteContext
from connector.models import BillingClose, Event, Group, SyncRun, User
from connector.status import Source
from scim.schemas import CONNECTOR_USER
from tests.billing import test_mail as mailtest
from tests.billing.history import at
from tests.billing.test_api import Checked, download
from tests.conftest import ApiClient, ScimClient, make_tenant
from tests.fakes.fixtures import (  # noqa: F401  (pytest finds fixtures by name)
    FakeApp,
    fake_app,
    fake_entra,
    fake_graph,
    fake_tls,
)
from tests.fakes.graph import FakeGraph
from tests.fakes.tls import LoopbackTLS
from tests.scim.factories import patch, user

inbox = mailtest.inbox  # the plain SMTP server on loopback of the e-mail report's tests

SEP, OCT = "2026-09", "2026-10"
ACME_PRICES = [{"unit": "Hybrid", "plan": "standard", "price": "5.00"},
               {"unit": "Engage", "plan": "standard", "price": "3.00"},
               {"unit": "Unify", "plan": "standard", "price": "4.00"}]
CONTOSO_PRICES = [{"unit": "Hybrid", "plan": "standard", "price": "6.50"}]


@contextmanager
def frozen(start: str) -> Iterator[Any]:
    """Time stands still at `start` (UTC) until the traveller is moved on."""
    with time_machine.travel(at(start), tick=False) as traveller:
        yield traveller


def now() -> dt.datetime:
    """The scheduler's clock: the frozen now."""
    return dt.datetime.now(dt.UTC)


def person(user_name: str, given: str, family: str, modules: tuple[str, ...] = (),
           guest: bool = False) -> dict[str, Any]:
    """A SCIM user with the connector extension (modules, guest) when it has any."""
    body = user(user_name, name={"givenName": given, "familyName": family},
                displayName=f"{given} {family}")
    ext: dict[str, Any] = {}
    if modules:
        ext["modules"] = list(modules)
    if guest:
        ext["guest"] = True
    if ext:
        body["schemas"] = [*body["schemas"], CONNECTOR_USER]
        body[CONNECTOR_USER] = ext
    return body


def set_active(value: bool) -> dict[str, Any]:
    return patch({"op": "replace", "path": "active", "value": value})


def lines(api: Checked, tenant_id: str, month: str) -> dict[str, tuple[Any, ...]]:
    """userName -> (billable, reason, audience, units) of a closed month, via the API."""
    got = api.get(f"/tenants/{tenant_id}/billing/months/{month}/lines?per_page=100")
    assert got.status_code == 200, got.json
    return {i["userName"]: (i["billable"], i["reason"], i["audience"], tuple(i["units"]))
            for i in got.json["items"]}


def closed_months(maker: Any, tenant_id: str) -> list[str]:
    with maker() as s:
        return list(s.scalars(select(BillingClose.month).where(
            BillingClose.tenant_id == tenant_id, BillingClose.state == "closed")
            .order_by(BillingClose.month)))


def invoice_fields(text: str) -> dict[str, str]:
    """The field/value rows of an invoice CSV (before its line table)."""
    fields: dict[str, str] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) == 2:
            fields.setdefault(row[0], row[1])
    return fields


def invoice_lines(text: str) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(text)))
    start = rows.index(["kind", "description", "month corrected", "unit", "audience", "plan",
                        "quantity", "unit price", "amount"])
    header = rows[start]
    return [dict(zip(header, r, strict=True)) for r in rows[start + 1:] if len(r) == len(header)]


def test_two_tenants_through_september_and_october(
        app: Flask, client: FlaskClient, engine: Engine, partner: ApiClient,
        inbox: tuple[mailtest.Inbox, int], fake_app: FakeApp,  # noqa: F811
        fake_graph: FakeGraph, fake_tls: LoopbackTLS) -> None:  # noqa: F811
    box, port = inbox
    billing = BillingSettings(
        mail_host=mailtest.LOOPBACK, mail_port=port, mail_security="none",
        mail_from="billing@partner.example", mail_recipients="ops@partner.example",
        mail_timeout_seconds=5)
    assert billing.grace_minutes == 60  # the default collection window
    write_maker = app.extensions["write_sessionmaker"]
    maker = make_sessionmaker(engine)
    api = Checked(partner)
    entra = fake_graph.directory(fake_app.tenant_id)
    # Rounds here are weeks apart, not every few minutes: keep the delta links alive.
    fake_graph.knobs.delta_token_lifetime = 90 * 86_400
    sync_settings = AzureSyncSettings(encryption_key=secrets.new_key(), retry_budget=20,
                                      allow_private_hosts=True,
                                      graph_scope="https://graph.microsoft.com/.default")
    service = SyncService(sync_settings, maker, make_sessionmaker(engine, writes=True),
                          verify=str(fake_tls.ca_path))

    def sync_round() -> rounds.RoundResult:
        result = service.run(contoso, "schedule", rounds.RoundOptions(), sleep=lambda _: None)
        assert result.status == "succeeded", result.error
        return result

    with frozen("2026-09-01T08:00:00") as clock:
        # -- Acme: a SCIM tenant, billed in Amsterdam time -------------------------------
        acme, token = make_tenant(engine, "Acme")
        scim = ScimClient(client, token, acme)
        info = api.put(f"/tenants/{acme}/billing", {
            "companyName": "Acme BV", "referenceNumber": "R-1001", "customerType": "SMB",
            "industry": "Retail", "poNumber": "PO-2026-09", "timeZone": "Europe/Amsterdam",
            "prices": ACME_PRICES})
        assert info.status_code == 200, info.json

        # -- Contoso: synced from Entra ID, billed in UTC --------------------------------
        clock.move_to(at("2026-09-01T09:00:00"), tick=False)
        contoso, _ = make_tenant(engine, "Contoso")
        with maker() as s:
            register(s, sync_settings, WriteContext(contoso, Source.ADMIN, "test", "test", now()),
                     directory_id=fake_app.tenant_id, client_id=fake_app.client_id,
                     secret=fake_app.client_secret, authority_host=fake_app.authority_host,
                     graph_base_url=fake_app.graph_base_url)
            s.commit()
        assert api.put(f"/tenants/{contoso}/billing", {
            "companyName": "Contoso Ltd", "poNumber": "PO-C-7",
            "prices": CONTOSO_PRICES}).status_code == 200
        amy = entra.add_user("amy@contoso.example", givenName="Amy", surname="Adams")
        bob = entra.add_user("bob@contoso.example", givenName="Bob", surname="Brown")
        carl = entra.add_user("carl@contoso.example", givenName="Carl", surname="Cole")
        gina = entra.add_user("gina_fabrikam.example#EXT#@contoso.example", userType="Guest",
                              givenName="Gina", surname="Green")
        licensed = entra.create_group("Licensed", members=[amy, bob, carl, gina])

        # -- September ------------------------------------------------------------------
        def scim_at(when: str, method: str, path: str, body: Any = None,
                    status: int = 200) -> Any:
            clock.move_to(at(when), tick=False)
            answer = scim.request(method, path, body)
            assert answer.status_code == status, answer.get_data(as_text=True)
            return answer.json

        ids = {}
        for when, name, given, family, modules, guest in (
                ("2026-09-02T09:00:00", "ann@acme.example", "Ann", "Archer",
                 ("Hybrid", "Engage"), False),
                ("2026-09-02T09:05:00", "gus@partner.example", "Gus", "Grant", ("Hybrid",),
                 True),
                ("2026-09-03T10:00:00", "cat@acme.example", "Cat", "Cruz", ("Hybrid",), False),
                ("2026-09-04T10:00:00", "dan@acme.example", "Dan", "Diaz", (), False),
                ("2026-09-05T10:00:00", "eve@acme.example", "Eve", "Evans", ("Unify",), False),
                ("2026-09-06T10:00:00", "fay@acme.example", "Fay", "Ford", ("Engage",), False)):
            ids[name] = scim_at(when, "POST", "/Users",
                                person(name, given, family, modules, guest), 201)["id"]

        clock.move_to(at("2026-09-02T10:00:00"), tick=False)
        first = sync_round()
        assert first.counts["created"] == 4
        with maker() as s:
            group_id = s.scalar(select(Group.id).where(Group.tenant_id == contoso,
                                                       Group.external_id == licensed))
            synced = {u.external_id: u.id for u in s.scalars(
                select(User).where(User.tenant_id == contoso))}
        clock.move_to(at("2026-09-02T10:05:00"), tick=False)
        modules = api.put(f"/tenants/{contoso}/groups/{group_id}/modules",
                          {"modules": ["Hybrid"]})
        assert modules.status_code == 200, modules.json

        scim_at("2026-09-15T12:00:00", "PATCH", f"/Users/{ids['cat@acme.example']}",
                set_active(False))
        entra.disable_user(carl)
        clock.move_to(at("2026-09-15T12:00:00"), tick=False)
        assert sync_round().counts.get("disabled") == 1
        scim_at("2026-09-20T12:00:00", "DELETE", f"/Users/{ids['eve@acme.example']}",
                status=204)
        scim_at("2026-09-25T08:00:00", "PATCH", f"/Users/{ids['fay@acme.example']}",
                set_active(False))
        scim_at("2026-09-28T08:00:00", "PATCH", f"/Users/{ids['fay@acme.example']}",
                set_active(True))
        # Bob is disabled in Entra on the 30th, but no round runs until after midnight.
        clock.move_to(at("2026-09-30T18:00:00"), tick=False)
        entra.disable_user(bob)
        # 23:59:59 in Amsterdam: still September there.
        scim_at("2026-09-30T21:59:59", "PATCH", f"/Users/{ids['dan@acme.example']}",
                patch({"op": "add", "path": f"{CONNECTOR_USER}:modules", "value": ["Engage"]}))
        # 00:00 on 1 October in Amsterdam: October's, even though it is 30 September in UTC.
        scim_at("2026-09-30T22:00:00", "PATCH", f"/Users/{ids['cat@acme.example']}",
                set_active(True))
        # Inside the collection window: recorded before the close, but in October.
        ids["hal@acme.example"] = scim_at(
            "2026-09-30T22:30:00", "POST", "/Users",
            person("hal@acme.example", "Hal", "Hart", ("Hybrid",)), 201)["id"]

        # -- the scheduler's passes after September -------------------------------------
        clock.move_to(at("2026-09-30T22:59:00"), tick=False)
        scheduler.run_due(write_maker, billing, clock=now)
        assert closed_months(maker, acme) == []  # Amsterdam's window ends at 23:00 UTC
        clock.move_to(at("2026-09-30T23:00:00"), tick=False)
        scheduler.run_due(write_maker, billing, clock=now)
        assert closed_months(maker, acme) == [SEP]
        assert closed_months(maker, contoso) == []  # UTC: its month has not even ended
        assert len(box.messages) == 1

        # After Contoso's boundary and window, but before any round that started after
        # the boundary: the pass closes nothing of Contoso's, and says why when asked.
        clock.move_to(at("2026-10-01T01:30:00"), tick=False)
        scheduler.run_due(write_maker, billing, clock=now)
        assert closed_months(maker, contoso) == [] and len(box.messages) == 1
        assert api.get(f"/tenants/{contoso}/billing/months/{SEP}").status_code == 404
        waiting = api.post(f"/tenants/{contoso}/billing/months/{SEP}/close")
        assert waiting.status_code == 409 and "Entra sync round" in waiting.json["detail"]

        clock.move_to(at("2026-10-01T02:00:00"), tick=False)
        seen = sync_round()
        assert seen.counts.get("disabled") == 1
        with maker() as s:
            (disabled_at,) = s.execute(select(Event.effective_at).where(
                Event.tenant_id == contoso, Event.subject_id == synced[bob],
                Event.kind == "user.status")).one()
            round_started = s.scalar(select(SyncRun.started_at).where(
                SyncRun.id == seen.run_id))
        # A Graph page has no timestamp: the disable is dated when the round saw it.
        assert disabled_at == at("2026-10-01T02:00:00") == round_started
        clock.move_to(at("2026-10-01T02:05:00"), tick=False)
        scheduler.run_due(write_maker, billing, clock=now)
        assert closed_months(maker, contoso) == [SEP]
        assert len(box.messages) == 2

        # -- what the closes say ---------------------------------------------------------
        acme_sep = api.get(f"/tenants/{acme}/billing/months/{SEP}").json
        assert (acme_sep["windowStart"], acme_sep["windowEnd"], acme_sep["cutoff"]) == (
            "2026-08-31T22:00:00+00:00", "2026-09-30T22:00:00+00:00",
            "2026-09-30T23:00:00+00:00")
        assert acme_sep["closedBy"] == "scheduler" and acme_sep["version"] == 1
        assert lines(api, acme, SEP) == {
            "ann@acme.example": (True, "active_with_module", "regular", ("Engage", "Hybrid")),
            "gus@partner.example": (True, "active_with_module", "guest", ("Hybrid",)),
            "cat@acme.example": (False, "inactive_at_end", "regular", ()),
            "dan@acme.example": (True, "active_with_module", "regular", ("Engage",)),
            "eve@acme.example": (False, "removed", "regular", ()),
            # deactivated on the 25th, back on the 28th: active at the month's end
            "fay@acme.example": (True, "active_with_module", "regular", ("Engage",)),
        }  # hal was created in October (Amsterdam): no line
        assert (acme_sep["usersCounted"], acme_sep["usersBillable"]) == (6, 4)
        assert {(t["unit"], t["audience"], t["plan"]): t["count"]
                for t in acme_sep["totals"]} == {
            ("Engage", "regular", "standard"): 3, ("Hybrid", "regular", "standard"): 1,
            ("Hybrid", "guest", "standard"): 1}
        invoice = acme_sep["invoice"]
        assert {(i["unit"], i["audience"], i["quantity"], i["unitPrice"], i["amount"])
                for i in invoice["lines"]} == {
            ("Engage", "regular", 3, "3.00", "9.00"), ("Hybrid", "regular", 1, "5.00", "5.00"),
            ("Hybrid", "guest", 1, "5.00", "5.00")}
        assert (invoice["subtotal"], invoice["adjustmentsTotal"], invoice["total"],
                invoice["poNumber"], invoice["invoicePaymentEligible"]) == \
            ("19.00", "0.00", "19.00", "PO-2026-09", False)

        contoso_sep = api.get(f"/tenants/{contoso}/billing/months/{SEP}").json
        # It closed once the round that started after the boundary was done, with what
        # that round brought in as its cut-off.
        assert contoso_sep["cutoff"] == "2026-10-01T02:00:00+00:00"
        assert contoso_sep["windowEnd"] == "2026-10-01T00:00:00+00:00"
        assert lines(api, contoso, SEP) == {
            "amy@contoso.example": (True, "active_with_module", "regular", ("Hybrid",)),
            # disabled in Entra on the 30th, seen on 1 October: billed for September
            "bob@contoso.example": (True, "active_with_module", "regular", ("Hybrid",)),
            "carl@contoso.example": (False, "inactive_at_end", "regular", ()),
            "gina_fabrikam.example#EXT#@contoso.example":
                (True, "active_with_module", "guest", ("Hybrid",)),
        }
        assert contoso_sep["invoice"]["total"] == "19.50"  # 3 Hybrid at 6.50

        # -- exports through the admin API -----------------------------------------------
        base = f"/tenants/{acme}/billing/months/{SEP}"
        billed_csv = download(api, f"{base}/billed-users.csv")
        rows = list(csv.DictReader(io.StringIO(billed_csv.decode())))
        assert {r["username"]: (r["first name"], r["last name"], r["e-mail"], r["billable"],
                                r["reason"], r["audience"], r["billed units"])
                for r in rows} == {
            "ann@acme.example": ("Ann", "Archer", "ann@acme.example", "true",
                                 "active_with_module", "regular", "Engage;Hybrid"),
            "gus@partner.example": ("Gus", "Grant", "gus@partner.example", "true",
                                    "active_with_module", "guest", "Hybrid"),
            "cat@acme.example": ("Cat", "Cruz", "cat@acme.example", "false",
                                 "inactive_at_end", "regular", ""),
            "dan@acme.example": ("Dan", "Diaz", "dan@acme.example", "true",
                                 "active_with_module", "regular", "Engage"),
            "eve@acme.example": ("Eve", "Evans", "eve@acme.example", "false", "removed",
                                 "regular", ""),
            "fay@acme.example": ("Fay", "Ford", "fay@acme.example", "true",
                                 "active_with_module", "regular", "Engage"),
        }
        assert {r["user id"] for r in rows} == {v for k, v in ids.items()
                                                if k != "hal@acme.example"}
        book = openpyxl.load_workbook(io.BytesIO(download(api, f"{base}/billed-users.xlsx")))
        sheet = book.active
        table = list(sheet.iter_rows(values_only=True))
        assert table[0] == ("username", "first name", "last name", "e-mail", "user id",
                            "billable", "reason", "plan", "audience", "modules",
                            "billed units")
        assert sorted((r[0], r[5], r[6]) for r in table[1:]) == sorted(
            (r["username"], r["billable"] == "true", r["reason"]) for r in rows)
        invoice_csv = download(api, f"{base}/invoice.csv").decode()
        fields = invoice_fields(invoice_csv)
        assert {k: fields[k] for k in ("tenant", "company name", "reference number",
                                       "customer type", "industry", "PO number", "month",
                                       "version", "hash", "subtotal", "total", "currency",
                                       "tax")} == {
            "tenant": "Acme", "company name": "Acme BV", "reference number": "R-1001",
            "customer type": "SMB", "industry": "Retail", "PO number": "PO-2026-09",
            "month": SEP, "version": "1", "hash": acme_sep["hash"], "subtotal": "19.00",
            "total": "19.00", "currency": "USD", "tax": "excluded"}
        assert {(r["unit"], r["audience"], r["quantity"], r["unit price"], r["amount"])
                for r in invoice_lines(invoice_csv)} == {
            ("Engage", "regular", "3", "3.00", "9.00"),
            ("Hybrid", "regular", "1", "5.00", "5.00"),
            ("Hybrid", "guest", "1", "5.00", "5.00")}

        # -- the e-mail reports -----------------------------------------------------------
        acme_mail, contoso_mail = box.messages
        assert acme_mail["Subject"] == "Billing 2026-09 for Acme BV: USD 19.00"
        assert contoso_mail["Subject"] == "Billing 2026-09 for Contoso Ltd: USD 19.50"
        assert box.recipients == [["ops@partner.example"]] * 2
        body = acme_mail.get_body(("plain",))
        assert isinstance(body, email.message.EmailMessage)
        text = body.get_content()
        assert "Total: USD 19.00 (tax excluded)" in text and acme_sep["hash"] in text
        files = mailtest.attachments(acme_mail)
        assert sorted(files) == ["billed-users-acme-2026-09.csv",
                                 "billed-users-acme-2026-09.xlsx", "invoice-acme-2026-09.csv"]
        # The same exports as the admin API's downloads, byte for byte for the CSVs.
        assert files["billed-users-acme-2026-09.csv"] == billed_csv
        assert files["invoice-acme-2026-09.csv"].decode() == invoice_csv
        mailed = openpyxl.load_workbook(io.BytesIO(files["billed-users-acme-2026-09.xlsx"]))
        assert list(mailed.active.iter_rows(values_only=True)) == table

        # -- the reporting API, with a provisioning key -------------------------------------
        made = api.post("/reporting-keys", {"name": "Power BI"})
        assert made.status_code == 201, made.json
        auth = {"Authorization": f"Bearer {made.json['key']}"}
        tenants = client.get(f"/reporting/v1/months/{SEP}/tenants", headers=auth)
        assert tenants.status_code == 200
        assert tenants.headers["X-Total-Count"] == "2"
        by_tenant = {r["tenantName"]: r for r in tenants.json["items"]}
        assert {name: (r["companyName"], r["referenceNumber"], r["poNumber"], r["timeZone"],
                       r["usersCounted"], r["usersBillable"], r["total"], r["hash"])
                for name, r in by_tenant.items()} == {
            "Acme": ("Acme BV", "R-1001", "PO-2026-09", "Europe/Amsterdam", 6, 4, "19.00",
                     acme_sep["hash"]),
            "Contoso": ("Contoso Ltd", "", "PO-C-7", "UTC", 4, 3, "19.50",
                        contoso_sep["hash"])}
        as_csv = client.get(f"/reporting/v1/months/{SEP}/tenants.csv", headers=auth)
        csv_rows = list(csv.DictReader(io.StringIO(as_csv.get_data(as_text=True))))
        assert [r["tenantName"] for r in csv_rows] == [r["tenantName"]
                                                       for r in tenants.json["items"]]
        assert list(csv_rows[0]) == tenants.json["columns"]
        assert {r["tenantName"]: (r["total"], r["usersBillable"]) for r in csv_rows} == {
            "Acme": ("19.00", "4"), "Contoso": ("19.50", "3")}
        counts = client.get(f"/reporting/v1/months/{SEP}/counts", headers=auth)
        assert sorted((r["tenantName"], r["unit"], r["audience"], r["count"], r["amount"])
                      for r in counts.json["items"]) == [
            ("Acme", "Engage", "regular", 3, "9.00"), ("Acme", "Hybrid", "guest", 1, "5.00"),
            ("Acme", "Hybrid", "regular", 1, "5.00"),
            ("Contoso", "Hybrid", "guest", 1, "6.50"),
            ("Contoso", "Hybrid", "regular", 2, "13.00")]
        etags = {path: client.get(path, headers=auth).headers["ETag"]
                 for path in (f"/reporting/v1/months/{SEP}/tenants",
                              f"/reporting/v1/months/{SEP}/tenants.csv",
                              f"/reporting/v1/months/{SEP}/counts")}
        for path, etag in etags.items():
            again = client.get(path, headers={**auth, "If-None-Match": etag})
            assert again.status_code == 304, path

        # -- October: the changes after the boundary land there -----------------------------
        clock.move_to(at("2026-11-01T02:00:00"), tick=False)
        sync_round()
        clock.move_to(at("2026-11-01T02:05:00"), tick=False)
        scheduler.run_due(write_maker, billing, clock=now)
        assert closed_months(maker, acme) == [SEP, OCT]
        assert closed_months(maker, contoso) == [SEP, OCT]
        assert len(box.messages) == 4
        acme_oct = api.get(f"/tenants/{acme}/billing/months/{OCT}").json
        assert acme_oct["windowEnd"] == "2026-10-31T23:00:00+00:00"  # CET again
        october = lines(api, acme, OCT)
        assert october["cat@acme.example"] == (True, "active_with_module", "regular",
                                               ("Hybrid",))
        assert october["hal@acme.example"] == (True, "active_with_module", "regular",
                                               ("Hybrid",))
        assert "eve@acme.example" not in october  # no account at any instant of October
        assert lines(api, contoso, OCT)["bob@contoso.example"] == (
            False, "inactive_at_end", "regular", ())
        # Nothing of September changed, and a poller is told so.
        for path, etag in etags.items():
            again = client.get(path, headers={**auth, "If-None-Match": etag})
            assert again.status_code == 304, path
        assert api.get(f"/tenants/{acme}/billing/months/{SEP}").json["hash"] == \
            acme_sep["hash"]
