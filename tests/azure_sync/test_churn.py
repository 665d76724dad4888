"""Entra sync under directory churn: names reused, swapped and chained, re-hires,
existing accounts adopted, items that fail kept and retried (never swept), a crashed
round failed and counted, nested groups in any order, and a user entering the scope
with all its groups. Against the fake Graph on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from azure_sync import decisions, pending, staging
from connector.commands import IndexedValue, UserFields
from connector.directory import Directory
from connector.events import WriteContext
from connector.models import Event, Group, Membership, SyncPending, SyncRun, SyncState, Tenant
from connector.status import Source
from tests.azure_sync.harness import Sync

CONTOSO = "contoso.example"


def names(sync: Sync) -> dict[str, str]:
    """Live users: object id → userName."""
    return {oid: u.user_name for oid, u in sync.users().items()}


def kept(sync: Sync) -> dict[str, SyncPending]:
    with sync.session() as s:
        rows = s.scalars(select(SyncPending).where(SyncPending.tenant_id == sync.tenant_id,
                                                   SyncPending.kind == pending.USER))
        found = {r.object_id: r for r in rows}
        for row in found.values():
            s.expunge(row)
        return found


def admin_user(sync: Sync, user_name: str, mail: str | None = None,
               employee_id: str | None = None) -> str:
    """An account an admin created in the connector (linked to no Entra object)."""
    data: dict[str, Any] = {}
    values: tuple[IndexedValue, ...] = ()
    if mail:
        data["emails"] = [{"value": mail, "type": "work", "primary": True}]
        values = (IndexedValue("emails", 0, mail, "work", True),)
    if employee_id:
        data["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] = {
            "employeeNumber": employee_id}
    with sync.session() as s:
        tenant = s.get(Tenant, sync.tenant_id)
        assert tenant is not None
        directory = Directory(s, tenant, WriteContext(sync.tenant_id, Source.ADMIN, "admin",
                                                      "test", dt.datetime.now(dt.UTC)))
        user = directory.create_user(UserFields(user_name=user_name, external_id=None,
                                                data=data, values=values, active=True))
        s.commit()
        return user.id


def group_members(sync: Sync, group_oid: str) -> set[str]:
    """The Graph object ids of a synced group's members (users and groups)."""
    with sync.session() as s:
        group = s.scalar(select(Group).where(Group.tenant_id == sync.tenant_id,
                                             Group.external_id == group_oid))
        assert group is not None, f"group {group_oid} not synced"
        ids = list(s.scalars(select(Membership.member_id).where(
            Membership.tenant_id == sync.tenant_id, Membership.group_id == group.id)))
        users = {u.id: oid for oid, u in sync.users().items()}
        groups = dict(s.execute(select(Group.id, Group.external_id).where(
            Group.tenant_id == sync.tenant_id)).all())
        return {users.get(i) or groups.get(i) or i for i in ids}


# -- names reused after a deletion ------------------------------------------------------------


@pytest.mark.parametrize("deletion", ["hard", "soft"])
def test_a_name_reused_in_the_same_round_as_the_deletion_lands(sync: Sync,
                                                               deletion: str) -> None:
    """Defects 1 and 2: X deleted and a new user with X's name, in one round. The old
    holder lets go of the name when the round's staged changes apply; the new user,
    kept until then, is created in the same round, and nothing is lost."""
    old = sync.entra.add_user(f"x@{CONTOSO}")
    sync.entra.seed_users(20)
    assert sync.run().status == "succeeded"
    (sync.entra.hard_delete_user if deletion == "hard" else sync.entra.soft_delete_user)(old)
    new = sync.entra.add_user(f"x@{CONTOSO}")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert names(sync)[new] == f"x@{CONTOSO}"
    assert result.counts.get("kept", 0) == 0 and not kept(sync)
    if deletion == "soft":  # disabled and renamed as Entra renames it, not removed
        assert names(sync)[old] == old.replace("-", "") + f"x@{CONTOSO}"
        assert not sync.users()[old].active
    else:
        assert old not in sync.users()
    # The next round has nothing left to do.
    again = sync.run()
    assert again.status == "succeeded" and not again.counts.get("created")


@pytest.mark.parametrize("deletion", ["hard", "soft"])
def test_a_name_reused_a_round_later_lands(sync: Sync, deletion: str) -> None:
    old = sync.entra.add_user(f"x@{CONTOSO}")
    sync.run()
    (sync.entra.hard_delete_user if deletion == "hard" else sync.entra.soft_delete_user)(old)
    assert sync.run().status == "succeeded"
    new = sync.entra.add_user(f"x@{CONTOSO}", givenName="Rehired")
    result = sync.run()
    assert result.status == "succeeded" and result.counts.get("created") == 1, result
    assert names(sync)[new] == f"x@{CONTOSO}"
    if deletion == "soft":  # the old account waits, disabled, under its released name
        assert not sync.users()[old].active


def test_a_rehire_landing_at_a_full_rounds_end_keeps_its_groups(sync: Sync) -> None:
    """X deleted and re-hired under its name, then a full round (restart provisioning,
    or Graph's resync): the new X lands only at the round's end, once the sweep freed
    its name, after the group pages whose membership of it went unknown. Its groups
    are read then; no later round would bring them (the group did not change)."""
    old = sync.entra.add_user(f"x@{CONTOSO}")
    ann = sync.entra.add_user(f"ann@{CONTOSO}")
    sales = sync.entra.create_group("Sales", members=[old, ann])
    assert sync.run().status == "succeeded"
    sync.entra.hard_delete_user(old)
    new = sync.entra.add_user(f"x@{CONTOSO}")
    sync.entra.add_members(sales, [new])
    with sync.session() as s:
        decisions.restart(s, sync.tenant_id, dt.datetime.now(dt.UTC))
        s.commit()
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert names(sync) == {new: f"x@{CONTOSO}", ann: f"ann@{CONTOSO}"}
    assert result.counts.get("memberships_joined") == 1, result.counts
    assert group_members(sync, sales) == {new, ann}
    again = sync.run()
    assert again.status == "succeeded" and group_members(sync, sales) == {new, ann}
    with sync.session() as s:
        assert not s.scalars(select(SyncPending).where(
            SyncPending.tenant_id == sync.tenant_id)).all()


def test_a_rehire_with_the_old_name_in_remove_mode_on_one_page(sync: Sync) -> None:
    sync.register(soft_delete="remove")
    old = sync.entra.add_user(f"ann@{CONTOSO}")
    sync.run()
    sync.entra.soft_delete_user(old)
    new = sync.entra.add_user(f"ann@{CONTOSO}", givenName="Ann", surname="Again")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert names(sync) == {new: f"ann@{CONTOSO}"}


# -- names that move between users ------------------------------------------------------------


def test_two_users_swapping_names_in_one_round_both_land(sync: Sync) -> None:
    """Defect 3: a swap is a ring of two; it lands together at the round's end."""
    a = sync.entra.add_user(f"a@{CONTOSO}")
    b = sync.entra.add_user(f"b@{CONTOSO}")
    sync.run()
    sync.entra.update_user(a, userPrincipalName=f"tmp@{CONTOSO}")
    sync.entra.update_user(b, userPrincipalName=f"a@{CONTOSO}")
    sync.entra.update_user(a, userPrincipalName=f"b@{CONTOSO}", displayName="Was A")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert names(sync) == {a: f"b@{CONTOSO}", b: f"a@{CONTOSO}"}
    assert sync.users()[a].display_name == "Was A"
    assert not kept(sync)
    # Later changes to either user apply as usual (defect 3: they stuck before).
    sync.entra.update_user(b, displayName="Bea")
    assert sync.run().counts.get("updated") == 1
    assert sync.users()[b].display_name == "Bea"


def test_a_swap_split_over_two_pages_lands(sync: Sync) -> None:
    a = sync.entra.add_user(f"a@{CONTOSO}")
    sync.entra.seed_users(5)
    b = sync.entra.add_user(f"b@{CONTOSO}")
    sync.run()
    sync.graph.knobs.page_size = 1
    sync.entra.update_user(a, userPrincipalName=f"tmp@{CONTOSO}")
    sync.entra.update_user(b, userPrincipalName=f"a@{CONTOSO}")
    sync.entra.update_user(a, userPrincipalName=f"b@{CONTOSO}")
    result = sync.run()
    assert result.status == "succeeded" and result.pages >= 2, result
    assert (names(sync)[a], names(sync)[b]) == (f"b@{CONTOSO}", f"a@{CONTOSO}")


def test_a_ring_of_three_and_an_open_chain_land(sync: Sync) -> None:
    a, b, c = (sync.entra.add_user(f"{n}@{CONTOSO}") for n in "abc")
    d, e = (sync.entra.add_user(f"{n}@{CONTOSO}") for n in "de")
    sync.run()
    for user, name in ((a, "tmp-a"), (b, "tmp-b"), (c, "tmp-c")):
        sync.entra.update_user(user, userPrincipalName=f"{name}@{CONTOSO}")
    # A→B, B→C, C→A (a ring), and D→E while E→F (a chain whose end is free).
    for user, name in ((a, "b"), (b, "c"), (c, "a"), (d, "e"), (e, "f")):
        sync.entra.update_user(user, userPrincipalName=f"{name}@{CONTOSO}")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert names(sync) == {a: f"b@{CONTOSO}", b: f"c@{CONTOSO}", c: f"a@{CONTOSO}",
                           d: f"e@{CONTOSO}", e: f"f@{CONTOSO}"}
    assert not kept(sync)
    with sync.session() as s:  # the ring's placeholders never reach the event log
        profiles = [e.new_value for e in s.scalars(select(Event).where(
            Event.tenant_id == sync.tenant_id, Event.kind == "user.profile"))]
    assert not any("moving:" in str(value) for value in profiles)


def test_two_renames_to_one_free_name_on_a_page_keep_one_and_apply_the_rest(
        sync: Sync) -> None:
    """A page's renames to names nobody holds are written without a lookup each: when
    two of them take the same name (a page read while Entra moved it), the unique index
    refuses the second, the page goes again one item at a time, and only that item is
    kept; the page's other changes land."""
    a = sync.entra.add_user(f"a@{CONTOSO}")
    b = sync.entra.add_user(f"b@{CONTOSO}")
    c = sync.entra.add_user(f"c@{CONTOSO}")
    sync.run()
    sync.entra.update_user(a, userPrincipalName=f"x@{CONTOSO}")
    sync.entra.update_user(b, userPrincipalName=f"x@{CONTOSO}")
    sync.entra.update_user(c, displayName="Cee")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert result.counts.get("failed") == 1, result.counts
    assert names(sync)[a] == f"x@{CONTOSO}" and names(sync)[b] == f"b@{CONTOSO}"
    assert sync.users()[c].display_name == "Cee"
    assert set(kept(sync)) == {b} and kept(sync)[b].code == "name_taken"


def test_a_rename_that_only_changes_case_applies(sync: Sync) -> None:
    a = sync.entra.add_user(f"ann@{CONTOSO}")
    sync.run()
    sync.entra.update_user(a, userPrincipalName=f"Ann@{CONTOSO}")
    assert sync.run().status == "succeeded"
    assert names(sync)[a] == f"Ann@{CONTOSO}"


# -- items that fail: kept, retried, never swept ------------------------------------------


def test_an_item_that_keeps_failing_is_kept_reported_and_never_swept(sync: Sync) -> None:
    """Defect 3's second half: a full round (after a resync) never deletes a user it
    failed to apply; the kept item applies once the name is free."""
    admin_id = admin_user(sync, f"boss@{CONTOSO}")
    with sync.session() as s:  # linked elsewhere, so not adoptable: a real clash
        from connector.models import User

        user = s.get(User, (sync.tenant_id, admin_id))
        assert user is not None
        user.external_id = "not-an-entra-object"
        s.commit()
    x = sync.entra.add_user(f"x@{CONTOSO}")
    sync.run()
    sync.entra.update_user(x, userPrincipalName=f"boss@{CONTOSO}", displayName="X")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert result.counts.get("failed") == 1 and result.counts.get("kept") == 1, result
    row = kept(sync)[x]
    assert row.code == "name_taken" and f"boss@{CONTOSO}" in row.reason
    # A resync: a full round reads X, fails it again, and must not sweep X.
    with sync.session() as s:
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None
        state.users_delta_link = state.groups_delta_link = None
        s.commit()
    full = sync.run()
    assert full.status == "succeeded", full.error
    assert full.counts.get("sweep_staged", 0) == 0 and x in sync.users(), full
    # The name is freed: the next round applies the kept item, with its other changes.
    with sync.session() as s:
        from connector.models import User

        user = s.get(User, (sync.tenant_id, admin_id))
        assert user is not None
        user.user_name, user.user_name_norm = f"former-boss@{CONTOSO}", f"former-boss@{CONTOSO}"
        s.commit()
    later = sync.run()
    assert later.status == "succeeded" and not kept(sync), later
    assert (names(sync)[x], sync.users()[x].display_name) == (f"boss@{CONTOSO}", "X")


def test_a_new_user_without_a_name_is_kept_until_graph_sends_one(sync: Sync) -> None:
    sync.run()
    with sync.session() as s:
        tenant = s.get(Tenant, sync.tenant_id)
        run = s.get(SyncRun, 1) or s.scalars(select(SyncRun)).first()
        assert tenant is not None and run is not None
        from azure_sync.applier import apply_page
        from azure_sync.scope import Scope

        applier = apply_page(s, tenant, run.id, False, "users",
                             [{"id": "obj-1", "displayName": "No Name"}], Scope(),
                             dt.datetime.now(dt.UTC))
        assert applier.counts["failed"] == 1
        s.commit()
    assert kept(sync)["obj-1"].code == "missing_user_name"
    with sync.session() as s:
        tenant = s.get(Tenant, sync.tenant_id)
        assert tenant is not None
        applier = apply_page(s, tenant, run.id, False, "users",
                             [{"id": "obj-1", "userPrincipalName": f"n@{CONTOSO}"}], Scope(),
                             dt.datetime.now(dt.UTC))
        s.commit()
    assert not kept(sync)
    user = sync.users()["obj-1"]
    assert (user.user_name, user.display_name) == (f"n@{CONTOSO}", "No Name")


# -- adopting existing accounts -------------------------------------------------------------


def test_a_first_full_round_adopts_existing_accounts_by_user_principal_name(
        sync: Sync) -> None:
    admin_id = admin_user(sync, f"Ann@{CONTOSO}")
    ann = sync.entra.add_user(f"ann@{CONTOSO}", givenName="Ann")
    sync.entra.seed_users(30)
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert result.counts.get("adopted") == 1 and result.counts.get("created") == 30, result
    user = sync.users()[ann]
    assert (user.id, user.origin, user.user_name) == (admin_id, "entra_sync", f"ann@{CONTOSO}")
    with sync.session() as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.subject_id == admin_id)
                               .order_by(Event.id)))
    assert kinds[0] == "user.created" and "user.adopted" in kinds


@pytest.mark.parametrize("attribute", ["mail", "employeeId"])
def test_adoption_by_mail_or_employee_id(sync: Sync, attribute: str) -> None:
    sync.register(matching_attribute=attribute)
    admin_id = admin_user(sync, "ann.lee", mail=f"ann.lee@{CONTOSO}", employee_id="E-17")
    other_id = admin_user(sync, "someone.else", mail=f"else@{CONTOSO}", employee_id="E-99")
    ann = sync.entra.add_user(f"ann@{CONTOSO}", mail=f"Ann.Lee@{CONTOSO}", employeeId="E-17")
    result = sync.run()
    assert result.status == "succeeded" and result.counts.get("adopted") == 1, result
    assert sync.users()[ann].id == admin_id
    assert names(sync)[ann] == f"ann@{CONTOSO}"
    assert other_id not in {u.id for u in sync.users().values() if u.external_id}


def test_an_ambiguous_match_is_a_reported_conflict_not_a_guess(sync: Sync) -> None:
    sync.register(matching_attribute="mail")
    admin_user(sync, "one", mail=f"shared@{CONTOSO}")
    admin_user(sync, "two", mail=f"shared@{CONTOSO}")
    x = sync.entra.add_user(f"x@{CONTOSO}", mail=f"shared@{CONTOSO}")
    sync.entra.seed_users(5)
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert result.counts.get("failed") == 1 and result.counts.get("created") == 5, result
    row = kept(sync)[x]
    assert row.code == "match_ambiguous" and "2 existing accounts" in row.reason
    assert x not in sync.users()


def test_a_new_object_whose_name_a_linked_user_holds_waits(sync: Sync) -> None:
    """The name belongs to another synced user who keeps it: a reported clash, kept,
    and no crash (defect 1 on PostgreSQL)."""
    sync.entra.add_user(f"x@{CONTOSO}")
    sync.run()
    # Entra would refuse a duplicate; a directory mid-change can still show one.
    with sync.entra.lock:
        twin = sync.entra.add_user(f"tmp@{CONTOSO}")
        sync.entra.update_user(twin, userPrincipalName=f"X@{CONTOSO}")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert kept(sync)[twin].code == "name_taken" and result.counts.get("kept") == 1


# -- a crashed round ------------------------------------------------------------------------


def test_a_crash_inside_the_round_fails_it_counts_and_quarantines(
        sync: Sync, monkeypatch: pytest.MonkeyPatch) -> None:
    sync.entra.seed_users(10)

    def broken(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(staging, "stage_sweep", broken)
    for attempt in range(1, 4):
        result = sync.run(quarantine_after=3)
        assert result.status == "failed", result
        assert "internal error of the connector (RuntimeError: disk on fire)" in (
            result.error or "")
        with sync.session() as s:
            state = s.get(SyncState, sync.tenant_id)
            assert state is not None and state.failures == attempt
    assert state.quarantined_until is not None
    monkeypatch.undo()
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert len(sync.users()) == 10
    with sync.session() as s:
        statuses = [r.status for r in s.scalars(select(SyncRun).where(
            SyncRun.tenant_id == sync.tenant_id).order_by(SyncRun.id))]
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None and state.failures == 0 and state.quarantined_until is None
    assert statuses == ["failed", "failed", "failed", "succeeded"]


# -- groups ---------------------------------------------------------------------------------


def test_a_nested_group_arriving_after_its_parent_is_a_member(sync: Sync) -> None:
    """Defect 4: the parent first, its nested group later in the round."""
    parent = sync.entra.create_group("Parent")
    ann = sync.entra.add_user(f"ann@{CONTOSO}")
    child = sync.entra.create_group("Child", members=[ann])
    sync.entra.add_members(parent, [child])
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert group_members(sync, parent) == {child}
    assert group_members(sync, child) == {ann}
    # A full round later still lists it (marked seen, not swept).
    with sync.session() as s:
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None
        state.users_delta_link = state.groups_delta_link = None
        s.commit()
    assert sync.run().status == "succeeded"
    assert group_members(sync, parent) == {child}


def test_a_nested_group_arriving_in_a_later_round_is_a_member(sync: Sync) -> None:
    parent = sync.entra.create_group("Parent")
    sync.run()
    child = sync.entra.create_group("Child")
    sync.entra.add_members(parent, [child])
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert group_members(sync, parent) == {child}


def test_a_user_entering_the_scope_gets_all_its_groups(sync: Sync) -> None:
    """Defect 5: the user joins the scope in an incremental round; its groups did not
    change, so /groups/delta says nothing of them: its memberships are read."""
    sync.register(scope_domains=[CONTOSO])
    outsider = sync.entra.add_user("pat@fabrikam.example")
    ann = sync.entra.add_user(f"ann@{CONTOSO}")
    sales = sync.entra.create_group("Sales", members=[outsider, ann])
    ops = sync.entra.create_group("Ops", members=[outsider])
    assert sync.run().status == "succeeded"
    assert group_members(sync, sales) == {ann} and group_members(sync, ops) == set()
    sync.entra.update_user(outsider, userPrincipalName=f"pat@{CONTOSO}")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert result.counts.get("created") == 1 and result.counts.get("memberships_joined") == 2
    assert group_members(sync, sales) == {ann, outsider}
    assert group_members(sync, ops) == {outsider}
    with sync.session() as s:
        assert not s.scalars(select(SyncPending).where(
            SyncPending.tenant_id == sync.tenant_id)).all()
