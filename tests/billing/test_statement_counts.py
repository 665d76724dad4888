"""Statement counts of the billing lists: 50 closed months or 50 lines of a month cost the
statements that 5 do."""

from __future__ import annotations

import datetime as dt
import itertools

from sqlalchemy import Engine

from connector.db import make_sessionmaker
from connector.models import BillingClose, BillingLine
from tests.support.clients import ApiClient, ScimClient
from tests.support.statements import assert_flat

AT = dt.datetime(2026, 11, 3, 2, tzinfo=dt.UTC)
INVOICE = {"currency": "USD", "subtotal": "10.00", "adjustmentsTotal": "0.00", "total": "10.00"}


def close_row(tenant_id: str, n: int) -> BillingClose:
    """A closed month as the month close leaves it: months counted back from 2026-10."""
    year, month = divmod(2026 * 12 + 9 - n, 12)
    return BillingClose(tenant_id=tenant_id, month=f"{year}-{month + 1:02d}", version=1,
                        state="closed", started_at=AT, closed_at=AT, closed_by="scheduler",
                        window_start=AT, window_end=AT, cutoff=AT, content_hash="0" * 64,
                        users_counted=2, users_billable=1, invoice=INVOICE,
                        totals=[{"unit": "Hybrid", "count": 1}])


def add_closes(engine: Engine, tenant_id: str, numbers: itertools.count[int], k: int) -> None:
    with make_sessionmaker(engine)() as s:
        s.add_all(close_row(tenant_id, next(numbers)) for _ in range(k))
        s.commit()


def test_closed_months(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    numbers = itertools.count()

    def read(n: int) -> None:
        response = partner.get(f"/tenants/{scim.tenant_id}/billing/months")
        assert response.status_code == 200 and len(response.json["items"]) == n

    assert_flat(engine, lambda k: add_closes(engine, scim.tenant_id, numbers, k), read)


def test_lines_of_a_month(partner: ApiClient, scim: ScimClient, engine: Engine) -> None:
    with make_sessionmaker(engine)() as s:
        close = close_row(scim.tenant_id, 0)
        s.add(close)
        s.commit()
        close_id, month = close.id, close.month
    users = itertools.count(1)

    def add(k: int) -> None:
        with make_sessionmaker(engine)() as s:
            for n in itertools.islice(users, k):
                s.add(BillingLine(close_id=close_id, user_id=f"u{n:04d}",
                                  user_name=f"user{n:04d}@example.com", billable=n % 2 == 0,
                                  reason="active_with_module", plan="standard",
                                  audience="regular", modules="Hybrid\x1fEngage",
                                  units="Hybrid"))
            s.commit()

    def read(n: int) -> None:
        response = partner.get(f"/tenants/{scim.tenant_id}/billing/months/{month}/lines"
                               "?per_page=200")
        assert response.status_code == 200 and len(response.json["items"]) == n

    assert_flat(engine, add, read)
