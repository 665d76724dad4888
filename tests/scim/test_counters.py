"""The live-user counter always equals the users table, whatever SCIM does."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connector import counters
from connector.models import User
from scim.schemas import BULK_REQUEST
from tests.scim.factories import user
from tests.support.clients import ScimClient

OPS = st.lists(st.sampled_from(["create", "create", "delete", "duplicate", "bulk_mixed",
                                "disable"]), min_size=1, max_size=12)


def live_in_table(session: Session, tenant_id: str) -> int:
    session.rollback()  # a fresh snapshot: the app committed in other connections
    return session.scalar(select(func.count()).select_from(User).where(
        User.tenant_id == tenant_id, User.removed_at.is_(None))) or 0


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_counter_follows_every_create_and_delete(scim: ScimClient, session: Session,
                                                 ops: list[str]) -> None:
    ids: list[str] = [u["id"] for u in scim.get("/Users?count=1000").json["Resources"]]
    for n, op in enumerate(ops):
        if op == "create":
            r = scim.post("/Users", user())
            assert r.status_code == 201
            ids.append(r.json["id"])
        elif op == "delete" and ids:
            assert scim.delete(f"/Users/{ids.pop(0)}").status_code == 204
        elif op == "duplicate" and ids:
            taken = scim.get(f"/Users/{ids[-1]}").json["userName"]
            assert scim.post("/Users", user(taken)).status_code == 409
        elif op == "disable" and ids:
            scim.patch(f"/Users/{ids[-1]}", {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "active", "value": False}]})
        elif op == "bulk_mixed":
            body = {"schemas": [BULK_REQUEST], "Operations": [
                {"method": "POST", "path": "/Users", "bulkId": f"a{n}", "data": user()},
                {"method": "POST", "path": "/Users", "bulkId": f"b{n}",
                 "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}},
            ]}
            result = scim.post("/Bulk", body).json["Operations"]
            ids += [o["location"].rsplit("/", 1)[1] for o in result if o["status"] == "201"]
        expected = live_in_table(session, scim.tenant_id)
        assert counters.live_users(session, scim.tenant_id) == expected
        assert scim.get("/Users?count=0").json["totalResults"] == expected


def test_a_missing_counter_rebuilds_itself(scim: ScimClient, session: Session) -> None:
    for _ in range(3):
        scim.post("/Users", user())
    session.execute(counters.TenantCounter.__table__.delete())
    session.commit()
    assert scim.get("/Users?count=0").json["totalResults"] == 3
    scim.post("/Users", user())
    assert counters.live_users(session, scim.tenant_id) == 4
