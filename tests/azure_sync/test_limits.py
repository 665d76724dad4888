"""An over-long value from Graph (docs/scim.md, "Maximum lengths") is an item kept with
its reason, never a crashed round: the rest of the page lands, and the item applies once
Entra ID sends a value that fits. Against the fake Graph, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from azure_sync import pending
from connector import limits
from connector.models import Group, SyncPending
from tests.azure_sync.harness import Sync

CONTOSO = "contoso.example"


def kept(sync: Sync) -> dict[str, SyncPending]:
    with sync.session() as s:
        rows = list(s.scalars(select(SyncPending).where(
            SyncPending.tenant_id == sync.tenant_id)))
        for row in rows:
            s.expunge(row)
        return {r.object_id: r for r in rows}


def test_an_over_long_value_from_graph_is_kept_with_its_reason(sync: Sync) -> None:
    ann = sync.entra.add_user(f"ann@{CONTOSO}", displayName="Ann")
    long = sync.entra.add_user(f"long@{CONTOSO}", displayName="L" * (limits.NAME + 1))
    bob = sync.entra.add_user(f"bob@{CONTOSO}", jobTitle="t" * 100_000)
    team = sync.entra.create_group("G" * (limits.NAME + 1), members=[ann])
    result = sync.run()
    assert result.status == "succeeded", result.error
    users = sync.users()
    assert ann in users and long not in users and bob not in users
    items = kept(sync)
    assert items[long].kind == pending.USER and items[long].code == "value_too_long"
    assert "'displayName' is 257 characters long" in items[long].reason
    assert items[bob].code == "value_too_long" and "title" in items[bob].reason
    assert items[team].code == "value_too_long" and "'displayName'" in items[team].reason
    with sync.session() as s:
        assert s.scalar(select(Group).where(Group.external_id == team)) is None

    sync.entra.update_user(long, displayName="Long")
    sync.entra.update_user(bob, jobTitle="Engineer")
    sync.entra.update_group(team, displayName="Team")
    later = sync.run()
    assert later.status == "succeeded", later.error
    users = sync.users()
    assert users[long].display_name == "Long" and bob in users
    assert not kept(sync)
