"""The sync's notifications, raised where they happen: real rounds against the loopback
fake Graph, through `SyncService.run` and the approval action."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from azure_sync import decisions
from connector import notify
from connector.models import NotifyCondition, NotifyOutbox, Tenant
from tests.azure_sync.harness import Sync
from tests.support.clients import make_admin


def conditions(sync: Sync) -> dict[str, bool]:
    """kind → standing, for the tenant."""
    with sync.session() as s:
        return {c.kind: c.cleared_at is None for c in s.scalars(
            select(NotifyCondition).where(NotifyCondition.tenant_id == sync.tenant_id))}


def test_failing_rounds_then_quarantine_notify_and_a_success_clears(sync: Sync) -> None:
    make_admin(sync.engine, "ta@synced.example", "tenant", sync.tenant_id)
    sync.entra.seed_users(3)
    sync.graph.deny(sync.app.client_id)
    for _ in range(2):
        assert sync.run(quarantine_after=4).status == "failed"
    assert conditions(sync) == {}
    assert sync.run(quarantine_after=4).status == "failed"
    assert conditions(sync) == {"rounds_failing": True}
    assert sync.run(quarantine_after=4).status == "failed"
    assert conditions(sync) == {"rounds_failing": True, "quarantined": True}
    with sync.session() as s:  # one e-mail per condition to the tenant's one admin
        assert len(list(s.scalars(select(NotifyOutbox)))) == 2
    sync.graph.allow(sync.app.client_id)
    assert sync.run().status == "succeeded"
    assert conditions(sync) == {"rounds_failing": False, "quarantined": False}


def test_a_held_round_notifies_and_approving_it_clears(sync: Sync) -> None:
    ids = [sync.entra.add_user(f"u{i}@contoso.example") for i in range(40)]
    sync.run()
    for user_id in ids[:10]:  # 25 % of the tenant, over the default 20 %
        sync.entra.disable_user(user_id)
    held = sync.run()
    assert held.status == "awaiting_approval"
    assert conditions(sync) == {"round_held": True}
    with sync.session() as s:
        [condition] = notify.standing(s, [sync.tenant_id], dt.datetime.now(dt.UTC))
        assert condition.key == str(held.run_id)
        tenant = s.get(Tenant, sync.tenant_id)
        assert tenant is not None
        decisions.approve_held(s, tenant, held.run_id, dt.datetime.now(dt.UTC))
        s.commit()
    assert conditions(sync) == {"round_held": False}
