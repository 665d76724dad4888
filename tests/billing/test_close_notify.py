"""A month close that fails raises the "month close failed" notification from the
scheduler's pass (billing/scheduler.py); the pass that closes it clears it."""

from __future__ import annotations

from sqlalchemy import Engine, select, update

from billing import scheduler
from connector.config import BillingSettings
from connector.models import NotifyCondition, NotifyOutbox, Tenant
from tests.billing.history import History, at
from tests.support.clients import make_admin

SETTINGS = BillingSettings()


def test_a_failed_close_notifies_once_and_the_close_clears_it(engine: Engine) -> None:
    broken = History(engine, "2026-09-10T09:00:00", "Broken", time_zone="Mars/Olympus")
    make_admin(engine, "ta@broken.example", "tenant", broken.tenant_id)
    for day in ("2026-11-01T02:00:00", "2026-11-01T02:15:00"):
        scheduler.run_due(broken.maker, SETTINGS, clock=lambda day=day: at(day))
    with broken.maker() as s:
        [condition] = s.scalars(select(NotifyCondition))
        assert (condition.tenant_id, condition.kind, condition.cleared_at) == \
            (broken.tenant_id, "month_close_failed", None)
        assert "Mars/Olympus" in condition.detail
        assert len(list(s.scalars(select(NotifyOutbox)))) == 1  # the pass repeated: one
        s.execute(update(Tenant).where(Tenant.id == broken.tenant_id)
                  .values(time_zone="Europe/Amsterdam"))
        s.commit()
    scheduler.run_due(broken.maker, SETTINGS, clock=lambda: at("2026-11-01T03:00:00"))
    with broken.maker() as s:
        [condition] = s.scalars(select(NotifyCondition))
        assert condition.cleared_at == at("2026-11-01T03:00:00")
