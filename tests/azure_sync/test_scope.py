"""Scoping Entra sync by group membership (direct or transitive) and by domain, against
the fake Graph's member listings, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from azure_sync import decisions, secrets
from connector.errors import InvalidSetting
from connector.models import Event, SyncRun, Tenant, User
from tests.azure_sync.harness import Sync


def people(sync: Sync, *names: str, domain: str = "contoso.example") -> list[str]:
    return [sync.entra.add_user(f"{name}@{domain}") for name in names]


def test_direct_scope_syncs_direct_members_only(sync: Sync) -> None:
    ann, bob, cat, dan = people(sync, "ann", "bob", "cat", "dan")
    inner = sync.entra.create_group("Inner", members=[cat])
    scoped = sync.entra.create_group("Scoped", members=[ann, bob, inner])
    sync.register(scope_groups=[scoped])
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert set(sync.users()) == {ann, bob}  # cat only through a nested group, dan not at all
    assert result.counts["out_of_scope"] == 2
    del dan


def test_transitive_scope_follows_nested_groups(sync: Sync) -> None:
    ann, bob, cat, dan = people(sync, "ann", "bob", "cat", "dan")
    deepest = sync.entra.create_group("Deepest", members=[cat])
    inner = sync.entra.create_group("Inner", members=[bob, deepest])
    scoped = sync.entra.create_group("Scoped", members=[ann, inner])
    sync.entra.add_members(deepest, [scoped])  # a cycle: listed once, no endless walk
    sync.register(scope_groups=[scoped], scope_group_mode="transitive")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert set(sync.users()) == {ann, bob, cat}
    assert dan not in sync.users()
    listed = sync.graph.requests_to(f"/v1.0/groups/{scoped}/transitiveMembers")
    assert listed and "$select" in listed[0].query and listed[0].query["$top"] == "999"


def test_joining_and_leaving_a_scoped_group_between_rounds(sync: Sync) -> None:
    ann, bob, cat = people(sync, "ann", "bob", "cat")
    inner = sync.entra.create_group("Inner", members=[])
    scoped = sync.entra.create_group("Scoped", members=[ann, bob, inner])
    sync.register(scope_groups=[scoped], scope_group_mode="transitive")
    assert sync.run().status == "succeeded"
    bob_id = sync.users()[bob].id
    # cat joins through the nested group; /users/delta has nothing about cat.
    sync.entra.add_members(inner, [cat])
    joined = sync.run()
    assert joined.status == "succeeded", joined.error
    assert set(sync.users()) == {ann, bob, cat}
    assert joined.counts["entered_scope"] == 1 and joined.counts["created"] == 1
    with sync.session() as s:
        assert s.get(SyncRun, joined.run_id).kind == "incremental"
    # bob leaves: removed at the round's end, under the threshold; history kept.
    sync.entra.remove_members(scoped, [bob])
    left = sync.run()
    assert left.status == "succeeded", left.error
    assert set(sync.users()) == {ann, cat}
    assert left.counts["left_scope_staged"] == 1 and left.counts["deleted"] == 1
    # …and comes back as the same user when he rejoins.
    sync.entra.add_members(scoped, [bob])
    back = sync.run()
    assert back.counts["restored"] == 1, back
    assert sync.users()[bob].id == bob_id
    with sync.session() as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.subject_id == bob_id)
                               .order_by(Event.id)))
    assert kinds[0] == "user.created" and "user.removed" in kinds


def test_groups_and_domains_together_need_both(sync: Sync) -> None:
    ann, bob = people(sync, "ann", "bob")
    (far,) = people(sync, "far", domain="fabrikam.example")
    outside = sync.entra.add_user("out@contoso.example")
    scoped = sync.entra.create_group("Scoped", members=[ann, bob, far])
    sync.register(scope_groups=[scoped], scope_domains=["contoso.example"])
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert set(sync.users()) == {ann, bob}
    sync.entra.update_user(bob, userPrincipalName="bob@fabrikam.example")
    sync.entra.add_members(scoped, [outside])
    result = sync.run()
    assert set(sync.users()) == {ann, outside}, result


def test_empty_or_missing_scope_groups_never_remove_anyone(sync: Sync) -> None:
    ann, bob = people(sync, "ann", "bob")
    scoped = sync.entra.create_group("Scoped", members=[ann, bob])
    sync.register(scope_groups=[scoped])
    assert sync.run().status == "succeeded"
    sync.entra.remove_members(scoped, [ann, bob])  # emptied, by mistake or by a fault
    emptied = sync.run()
    assert emptied.status == "failed" and "rather than remove every user" in emptied.error
    assert set(sync.users()) == {ann, bob}
    sync.entra.delete_group(scoped)  # gone: Graph answers 404 for its members
    gone = sync.run()
    assert gone.status == "failed" and "not found" in gone.error
    assert set(sync.users()) == {ann, bob}
    with sync.session() as s:
        assert s.scalar(select(func.count()).select_from(User).where(
            User.tenant_id == sync.tenant_id, User.removed_at.is_not(None))) == 0
    # One missing group among others is just an empty one.
    kept = sync.entra.create_group("Kept", members=[ann])
    sync.register(scope_groups=[scoped, kept])
    partial = sync.run()
    assert partial.status == "succeeded", partial.error
    assert set(sync.users()) == {ann} and partial.counts["scope_groups_missing"] == 1


def test_a_scope_change_that_removes_many_is_held_for_approval(sync: Sync) -> None:
    ids = people(sync, *(f"u{i}" for i in range(40)))
    assert sync.run().counts["created"] == 40
    scoped = sync.entra.create_group("Pilot", members=ids[:10])
    sync.register(scope_groups=[scoped])
    held = sync.run()
    assert held.status == "awaiting_approval", held
    assert held.counts["left_scope_staged"] == 30
    assert len(sync.users()) == 40  # nothing removed yet
    with sync.session() as s:
        staged = decisions.staged_changes(s, held.run_id)
        assert {c["action"] for c in staged} == {"out_of_scope"} and len(staged) == 30
        tenant = s.get(Tenant, sync.tenant_id)
        applied = decisions.approve_held(s, tenant, held.run_id, sync.service_now())
        s.commit()
    assert applied["deleted"] == 30 and set(sync.users()) == set(ids[:10])


def test_a_domain_change_makes_the_next_round_full_and_stages_each_leaver_once(
        sync: Sync) -> None:
    inside = people(sync, "a", "b", "c")
    outside = people(sync, "x", "y", domain="fabrikam.example")
    assert sync.run().counts["created"] == 5
    assert not sync.register(scope_groups=[]).full_round_due  # nothing widened
    registration = sync.register(scope_domains=["contoso.example"])
    assert registration.full_round_due
    result = sync.run()
    assert result.status == "succeeded", result.error
    with sync.session() as s:
        run = s.get(SyncRun, result.run_id)
        assert run.kind == "full"
    assert set(sync.users()) == set(inside)
    # Seen out of scope and not marked seen: staged once, not again by the sweep.
    assert result.counts["delete_staged"] == 2 and result.counts["sweep_staged"] == 0
    assert result.counts["deleted"] == 2
    assert not sync.register().full_round_due
    del outside


def test_scope_settings_are_checked(sync: Sync) -> None:
    with pytest.raises(InvalidSetting, match="object ids"):
        sync.register(scope_groups=["Sales"])
    with pytest.raises(InvalidSetting, match="transitive"):
        sync.register(scope_group_mode="nested")
    group = "6F1C7D2E-0000-4000-8000-00000000000A"
    registration = sync.register(scope_groups=[group, group.lower(), " "])
    assert registration.scope_groups == [group.lower()]


def test_preview_and_one_user_respect_the_group_scope(sync: Sync) -> None:
    ann, bob = people(sync, "ann", "bob")
    scoped = sync.entra.create_group("Scoped", members=[ann])
    sync.register(scope_groups=[scoped])
    assert set(sync.users()) == set() and sync.run().status == "succeeded"
    sync.entra.add_members(scoped, [bob])
    sync.entra.remove_members(scoped, [ann])
    client = sync.service.client_for(sync.registration(), sleep=sync.sleeps.append)
    preview = decisions.preview_round(sync.service.write_maker, sync.tenant_id, client)
    assert preview.counts["entered_scope"] == 1 and preview.counts["left_scope_staged"] == 1
    assert set(sync.users()) == {ann}  # a preview changes nothing
    counts = decisions.sync_one_user(sync.service.write_maker, sync.tenant_id, client, ann)
    assert counts["deleted"] == 1 and sync.users() == {}


@pytest.mark.slow  # the command in a new interpreter
def test_the_cli_sets_the_group_scope(database_url: str, engine: object, tmp_path: Path
                                      ) -> None:
    from connector.db import make_sessionmaker
    from connector.models import EntraRegistration
    from tests.conftest import make_tenant
    from tests.connector.test_cli import connector

    tenant_id, _ = make_tenant(engine, "Scoped")  # type: ignore[arg-type]
    group = "0b6c1c5e-3f0a-4c1e-9d55-2f1e8a7b9c01"
    env_key = secrets.new_key()
    result = subprocess.run(
        [sys.executable, "-m", "connector.cli", "sync", "register", "--tenant", tenant_id,
         "--directory-id", "d", "--client-id", "c", "--secret-stdin",
         "--scope-group", group, "--scope-group-mode", "transitive"],
        input="s3cret\n", capture_output=True, text=True, timeout=60, check=False,
        cwd=tmp_path, env={**os.environ, "CONNECTOR_DATABASE__URL": database_url,
                           "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
                           "CONNECTOR_AZURE_SYNC__ENCRYPTION_KEY": env_key})
    assert result.returncode == 0, result.stderr
    with make_sessionmaker(engine)() as s:  # type: ignore[arg-type]
        found = s.get(EntraRegistration, tenant_id)
        assert found is not None
        assert (found.scope_groups, found.scope_group_mode) == ([group], "transitive")
    refused = connector(database_url, "sync", "register", "--tenant", tenant_id,
                        "--directory-id", "d", "--client-id", "c", "--scope-group", "Sales",
                        cwd=tmp_path)
    assert refused.returncode != 0 and "object ids" in refused.stderr
    assert "error: --scope-group: " in refused.stderr  # the option, not the form's field
    # A first registration without its credential names the two options that give one.
    bare_id, _ = make_tenant(engine, "Bare")  # type: ignore[arg-type]
    bare = connector(database_url, "sync", "register", "--tenant", bare_id,
                     "--directory-id", "d", "--client-id", "c", cwd=tmp_path)
    assert bare.returncode == 1
    # (its last line: the one before notes that CONNECTOR_CONFIG names no file)
    assert bare.stderr.strip().splitlines()[-1] == ("error: --secret-stdin or --certificate: A new "
                                   "registration needs a client secret or a certificate.")
