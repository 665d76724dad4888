"""Entra sync rounds write the provisioning log from the directory's write path: every
user created, updated, disabled, deleted, and every membership, filed under the run."""

from __future__ import annotations

from sqlalchemy import select

from connector import provlog
from connector.models import ProvisioningEntry
from tests.azure_sync.harness import Sync


def log_of(sync: Sync, run_id: int) -> list[ProvisioningEntry]:
    with sync.session() as s:
        return list(s.scalars(select(ProvisioningEntry).where(
            ProvisioningEntry.tenant_id == sync.tenant_id,
            ProvisioningEntry.source_ref == f"sync-run:{run_id}")
            .order_by(ProvisioningEntry.id)))


def test_a_round_logs_what_it_created_and_updated(sync: Sync) -> None:
    ann = sync.entra.add_user("ann@contoso.example", givenName="Ann")
    bob = sync.entra.add_user("bob@contoso.example")
    sync.entra.seed_users(60)  # a page of 50 or more goes out with COPY on PostgreSQL
    first = sync.run()
    assert first.status == "succeeded", first.error
    created = log_of(sync, first.run_id)
    users = sync.users()
    assert len([e for e in created if e.operation == "create"]) == 62
    by_object = {e.object_id: e for e in created}
    assert by_object[ann].user_id == users[ann].id
    assert (by_object[ann].source, by_object[ann].result, by_object[ann].name) == (
        "entra", "success", "ann@contoso.example")
    assert by_object[ann].client == "entra-sync"

    sync.entra.update_user(ann, displayName="Ann Lee", userPrincipalName="ann.lee@contoso.example")
    sync.entra.disable_user(bob)
    second = sync.run()
    assert second.status == "succeeded", second.error
    later = {e.object_id: e for e in log_of(sync, second.run_id)}
    assert later[ann].operation == "update"
    assert later[ann].changes["userName"] == ["ann@contoso.example", "ann.lee@contoso.example"]
    assert later[ann].changes["displayName"][1] == "Ann Lee"
    assert later[bob].operation == "disable"
    assert later[bob].changes["active"] == [True, False]
    with sync.session() as s:
        assert provlog.run_failures(s, sync.tenant_id, second.run_id) == []


def test_memberships_and_deletes_are_logged(sync: Sync) -> None:
    ann = sync.entra.add_user("ann@contoso.example")
    sales = sync.entra.create_group("Sales")
    sync.entra.add_members(sales, [ann])
    first = sync.run()
    assert first.status == "succeeded", first.error
    ops = {(e.operation, e.object_id) for e in log_of(sync, first.run_id)}
    assert ("membership_add", ann) in ops
    sync.entra.hard_delete_user(ann)
    second = sync.run()
    assert second.status == "succeeded", second.error
    ops = {(e.operation, e.object_id) for e in log_of(sync, second.run_id)}
    assert ("delete", ann) in ops


def test_an_item_that_fails_is_logged_under_its_run(sync: Sync) -> None:
    x = sync.entra.add_user("x@contoso.example")
    assert sync.run().status == "succeeded"
    with sync.entra.lock:  # a duplicate name, as a directory mid-change may show
        twin = sync.entra.add_user("tmp@contoso.example")
        sync.entra.update_user(twin, userPrincipalName="X@contoso.example")
    result = sync.run()
    assert result.counts.get("failed") == 1
    with sync.session() as s:
        [failed] = provlog.run_failures(s, sync.tenant_id, result.run_id)
    assert (failed.object_id, failed.code, failed.name, failed.source) == (
        twin, "name_taken", "X@contoso.example", "entra")
    assert x in failed.reason


def test_a_failed_item_is_a_create_or_an_update_as_it_was_and_says_what_to_do(
        sync: Sync) -> None:
    """A new object that could not land was a creation, not an update of a user the
    connector does not have; an over-long value says to shorten it in Entra ID."""
    ann = sync.entra.add_user("ann@contoso.example")
    long = sync.entra.add_user("long@contoso.example", displayName="L" * 300)
    first = sync.run()
    assert first.status == "succeeded", first.error
    sync.entra.update_user(ann, jobTitle="t" * 100_000)
    second = sync.run()
    assert second.status == "succeeded", second.error
    with sync.session() as s:
        [new] = provlog.run_failures(s, sync.tenant_id, first.run_id)
        [changed] = provlog.run_failures(s, sync.tenant_id, second.run_id)
    assert (new.object_id, new.operation, new.code) == (long, "create", "value_too_long")
    assert new.reason == ("'displayName' is 300 characters long; it may have at most 256. "
                          "Shorten it in Entra ID: the object is kept and retried when it "
                          "changes.")
    assert (changed.object_id, changed.operation, changed.code) == (ann, "update",
                                                                    "value_too_long")
    assert changed.reason.startswith("'title' is 100,000 characters long")


def test_a_soft_delete_is_logged_as_a_disable(
        sync: Sync) -> None:
    """An admin filtering the log on "disable" finds a user soft-deleted in Entra ID,
    renamed and disabled in one change; the other attributes changed are listed with
    it."""
    ann = sync.entra.add_user("ann@contoso.example", displayName="Ann")
    bob = sync.entra.add_user("bob@contoso.example", displayName="Bob")
    sync.entra.seed_users(3)
    assert sync.run().status == "succeeded"
    sync.entra.soft_delete_user(ann)
    sync.entra.update_user(bob, accountEnabled=False, displayName="Bob (left)")
    second = sync.run()
    assert second.status == "succeeded", second.error
    entries = log_of(sync, second.run_id)
    [soft] = [e for e in entries if e.object_id == ann]
    assert (soft.operation, soft.reason) == ("disable", "Disabled."), soft.changes
    assert soft.changes["active"] == [True, False] and "userName" in soft.changes
    # Bob's rename lands with its page, the disable at the round's end (it is staged
    # under the deletion threshold): two entries.
    assert sorted((e.operation, sorted(e.changes)) for e in entries if e.object_id == bob) \
        == [("disable", ["active", "inDeletedList"]), ("update", ["displayName"])]
