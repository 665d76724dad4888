"""The round lease's checks, on SQLite and PostgreSQL: who holds a tenant's round."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from azure_sync import lease
from connector.db import make_sessionmaker
from connector.models import SyncState
from tests.conftest import make_tenant

NOW = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


def leased(engine: Engine, owner: str, run_id: int | None) -> str:
    """A tenant whose round `run_id` `owner` holds for 300 s from NOW."""
    tenant_id, _ = make_tenant(engine)
    maker = make_sessionmaker(engine)
    lease.ensure_state(maker, tenant_id)
    with maker() as s:
        assert lease.take_lease(s, tenant_id, owner, NOW, 300)
        state = s.get(SyncState, tenant_id)
        assert state is not None
        state.run_id = run_id
        s.commit()
    return tenant_id


@pytest.mark.parametrize("lock", [False, True])
def test_the_holder_gets_the_state(engine: Engine, lock: bool) -> None:
    tenant_id = leased(engine, "me", 7)
    with make_sessionmaker(engine)() as s:
        state = lease.held_state(s, tenant_id, 7, "me", lock=lock)
        assert (state.tenant_id, state.lease_owner, state.run_id) == (tenant_id, "me", 7)


@pytest.mark.parametrize(("owner", "run_id"), [("other", 7), ("me", 8)])
def test_another_owner_or_another_round_means_the_lease_is_lost(
        engine: Engine, owner: str, run_id: int) -> None:
    tenant_id = leased(engine, owner, run_id)
    with make_sessionmaker(engine)() as s, pytest.raises(lease.LeaseLost, match="lost"):
        lease.held_state(s, tenant_id, 7, "me", lock=True)


def test_a_released_lease_is_lost_and_free_to_take(engine: Engine) -> None:
    tenant_id = leased(engine, "me", 7)
    maker = make_sessionmaker(engine)
    with maker() as s:
        lease.release_lease(s, tenant_id, "me")
        s.commit()
    with maker() as s:
        with pytest.raises(lease.LeaseLost):
            lease.held_state(s, tenant_id, 7, "me")
        assert lease.take_lease(s, tenant_id, "other", NOW, 300)


def test_renewing_moves_the_end_and_keeps_others_out(engine: Engine) -> None:
    tenant_id = leased(engine, "me", 7)
    maker = make_sessionmaker(engine)
    later = NOW + dt.timedelta(seconds=250)
    with maker() as s:
        lease.renew_lease(lease.held_state(s, tenant_id, 7, "me", lock=True), later, 300)
        s.commit()
    with maker() as s:
        # Past the first 300 s, within the renewed ones: still held.
        assert not lease.take_lease(s, tenant_id, "other", NOW + dt.timedelta(seconds=400),
                                    300)
        assert lease.take_lease(s, tenant_id, "other", NOW + dt.timedelta(seconds=551), 300)
        s.commit()
    with maker() as s, pytest.raises(lease.LeaseLost):
        lease.held_state(s, tenant_id, 7, "me")
