"""Statement counts of the Entra ID run log: 50 rounds cost the statements that 5 do."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from connector.db import make_sessionmaker
from connector.models import SyncRun
from tests.support.clients import ApiClient, ScimClient
from tests.support.statements import assert_flat


def add_runs(engine: Engine, tenant_id: str, k: int) -> None:
    """k finished rounds, as the run log keeps them."""
    start = dt.datetime(2026, 5, 1, 9, tzinfo=dt.UTC)
    with make_sessionmaker(engine)() as s:
        s.add_all(SyncRun(tenant_id=tenant_id, kind="incremental", status="succeeded",
                          trigger="schedule", started_at=start + dt.timedelta(minutes=i),
                          finished_at=start + dt.timedelta(minutes=i, seconds=3), pages=2,
                          counts={"created": 1, "updated": 2}) for i in range(k))
        s.commit()


def test_the_run_log(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    def read(n: int) -> None:
        response = partner.get(f"/tenants/{scim.tenant_id}/entra/runs?per_page=200")
        assert response.status_code == 200 and len(response.json["items"]) == n

    assert_flat(engine, lambda k: add_runs(engine, scim.tenant_id, k), read)
