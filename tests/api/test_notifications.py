"""The notifications in the admin API: the caller's opt-outs (/me/notifications) and
the conditions of the tenants the caller may see (/notifications)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask
from sqlalchemy import Engine, select

from connector import notify, scim_health
from connector.db import make_sessionmaker
from connector.models import AuditEntry, NotifyOptOut
from tests.support.clients import ApiClient, ScimClient, make_tenant


def raise_close_failure(engine: Engine, tenant_id: str, month: str = "2026-11") -> None:
    with make_sessionmaker(engine)() as s:
        notify.raise_condition(s, tenant_id, "month_close_failed", f"{month}: boom",
                               dt.datetime.now(dt.UTC), month)
        s.commit()


def test_an_admin_chooses_which_notifications_to_skip(
        partner: ApiClient, engine: Engine) -> None:
    assert partner.get("/me/notifications").get_json()["optOut"] == []
    answer = partner.put("/me/notifications", {"optOut": ["scim_errors", "round_held"]})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["optOut"] == ["round_held", "scim_errors"]
    assert {k["kind"] for k in body["kinds"]} == set(notify.KINDS)
    with make_sessionmaker(engine)() as s:
        assert set(s.scalars(select(NotifyOptOut.kind))) == {"round_held", "scim_errors"}
        assert s.scalar(select(AuditEntry.action).where(
            AuditEntry.action == "notifications.opt_out")) is not None
    assert partner.put("/me/notifications", {"optOut": ["*"]}).get_json()["optOut"] == ["*"]


def test_an_unknown_kind_is_a_problem_and_changes_nothing(partner: ApiClient,
                                                          engine: Engine) -> None:
    partner.put("/me/notifications", {"optOut": ["round_held"]})
    answer = partner.put("/me/notifications", {"optOut": ["round_held", "everything"]})
    assert answer.status_code == 400
    assert answer.content_type.startswith("application/problem+json")
    assert partner.get("/me/notifications").get_json()["optOut"] == ["round_held"]


def test_a_tenant_admin_sees_only_its_tenants_conditions(
        app: Flask, partner: ApiClient, tenant_admin: ApiClient, scim: ScimClient,
        engine: Engine) -> None:
    other, _ = make_tenant(engine, "Other Corp")
    raise_close_failure(engine, scim.tenant_id)
    raise_close_failure(engine, other)
    mine: list[dict[str, Any]] = tenant_admin.get("/notifications").get_json()["items"]
    assert [(n["tenantId"], n["kind"], n["key"]) for n in mine] == [
        (scim.tenant_id, "month_close_failed", "2026-11")]
    assert mine[0]["page"] == f"/admin/tenants/{scim.tenant_id}/billing"
    assert mine[0]["cleared"] is None and mine[0]["detail"] == "2026-11: boom"
    assert len(partner.get("/notifications").get_json()["items"]) == 2


def test_scim_answers_are_counted_per_tenant(app: Flask, scim: ScimClient,
                                            engine: Engine) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    scim.post("/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                         "userName": "a@x.io"})
    scim.post("/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                         "userName": "a@x.io"})  # 409: routine, not an error
    scim.post("/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]})  # 400
    scim.get("/Users/does-not-exist")  # 404: routine
    app.extensions["scim_counts"].flush()
    with make_sessionmaker(engine)() as s:
        counts = scim_health.window_counts(s, before, dt.datetime.now(dt.UTC)
                                           + dt.timedelta(minutes=1))
    assert counts == {scim.tenant_id: (4, 1)}
