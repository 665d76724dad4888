"""Sync rounds against the fake Entra and fake Graph (real HTTPS on loopback), applied
to real SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from azure_sync import decisions, secrets
from azure_sync.service import SyncService, register
from connector import sync_status
from connector.config import AzureSyncSettings
from connector.db import make_sessionmaker
from connector.events import WriteContext
from connector.models import Event, Group, Membership, SyncRun, SyncState, Tenant
from connector.status import Source
from tests.azure_sync.harness import Sync
from tests.conftest import make_tenant
from tests.fakes.graph import FakeGraph


def test_initial_round_creates_everyone_with_status_and_guests(sync: Sync) -> None:
    ann = sync.entra.add_user("ann@contoso.example", givenName="Ann", surname="Lee",
                              employeeId="E1")
    off = sync.entra.add_user("off@contoso.example", accountEnabled=False)
    guest = sync.entra.add_user("g_ext#EXT#@contoso.example", userType="Guest")
    sync.entra.seed_users(450)
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert result.counts["created"] == 453 and result.pages >= 3
    users = sync.users()
    assert len(users) == 453
    assert users[ann].data["name"] == {"givenName": "Ann", "familyName": "Lee"}
    assert (users[off].active, users[off].in_deleted_list) == (False, True)
    assert users[guest].guest and users[ann].origin == "entra_sync"
    with sync.session() as s:
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None and state.users_delta_link and state.run_id is None
        created = s.scalar(select(func.count()).select_from(Event).where(
            Event.kind == "user.created", Event.correlation_id == f"sync-run:{result.run_id}"))
    assert created == 453


def test_incremental_rounds_apply_only_changes(sync: Sync) -> None:
    ann = sync.entra.add_user("ann@contoso.example", givenName="Ann")
    bob = sync.entra.add_user("bob@contoso.example")
    assert sync.run().status == "succeeded"
    sync.entra.update_user(ann, surname="Lee", displayName="Ann Lee")
    sync.entra.disable_user(bob)
    result = sync.run()
    assert result.status == "succeeded", result.error
    users = sync.users()
    assert users[ann].data["name"] == {"givenName": "Ann", "familyName": "Lee"}
    assert users[ann].display_name == "Ann Lee"
    assert (users[bob].active, users[bob].in_deleted_list) == (False, True)
    assert result.counts.get("disabled") == 1 and result.counts.get("created", 0) == 0
    sync.entra.enable_user(bob)
    assert sync.run().counts.get("enabled") == 1
    assert sync.users()[bob].active


def test_soft_delete_disables_and_a_restore_brings_the_same_user_back_active(
        sync: Sync) -> None:
    """The default, as Entra's own provisioning service: a soft-deleted user turns
    inactive (on the deleted-users list) and lets go of its name; a restore makes it
    active again under its name; a hard delete then removes it."""
    ann = sync.entra.add_user("ann@contoso.example")
    sync.run()
    before = sync.users()[ann].id
    sync.entra.soft_delete_user(ann)
    result = sync.run()
    assert (result.counts.get("disabled"), result.counts.get("deleted")) == (1, None), result
    user = sync.users()[ann]
    assert (user.id, user.active, user.in_deleted_list) == (before, False, True)
    assert user.user_name == ann.replace("-", "") + "ann@contoso.example"
    sync.entra.restore_user(ann)
    result = sync.run()
    assert result.counts.get("enabled") == 1, result
    user = sync.users()[ann]
    assert (user.id, user.active, user.user_name) == (before, True, "ann@contoso.example")
    sync.entra.hard_delete_user(ann)
    assert sync.run().counts.get("deleted") == 1
    assert ann not in sync.users()


def test_soft_delete_set_to_remove_removes_and_a_restore_brings_it_back(sync: Sync) -> None:
    sync.register(soft_delete="remove")
    ann = sync.entra.add_user("ann@contoso.example")
    sync.run()
    before = sync.users()[ann].id
    sync.entra.soft_delete_user(ann)
    assert sync.run().counts.get("deleted") == 1
    assert ann not in sync.users()
    sync.entra.restore_user(ann)
    result = sync.run()
    assert result.counts.get("restored") == 1, result
    assert sync.users()[ann].id == before
    with sync.session() as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.subject_id == before)
                               .order_by(Event.id)))
    assert kinds[:1] == ["user.created"] and "user.removed" in kinds
    assert kinds[-1] in ("user.restored", "user.profile")


def test_status_source_connector_records_but_does_not_apply(sync: Sync) -> None:
    bob = sync.entra.add_user("bob@contoso.example")
    sync.run()
    sync.set(status_source="connector")
    sync.entra.disable_user(bob)
    sync.run()
    user = sync.users()[bob]
    assert user.active and user.idp_active is False


def test_groups_and_members_split_over_pages_are_merged(sync: Sync) -> None:
    sync.graph.knobs.member_chunk_size = 7
    members = [sync.entra.add_user(f"m{i}@contoso.example") for i in range(30)]
    group = sync.entra.create_group("Sales", members=members)
    result = sync.run()
    assert result.status == "succeeded", result.error
    with sync.session() as s:
        stored = s.scalar(select(Group).where(Group.external_id == group))
        assert stored is not None and stored.display_name == "Sales"
        count = s.scalar(select(func.count()).select_from(Membership).where(
            Membership.group_id == stored.id))
    assert count == 30
    sync.entra.remove_members(group, members[:5])
    sync.run()
    with sync.session() as s:
        assert s.scalar(select(func.count()).select_from(Membership).where(
            Membership.group_id == stored.id)) == 25


def test_throttling_is_waited_out_with_retry_after(sync: Sync) -> None:
    sync.entra.seed_users(10)
    sync.graph.throttle(2, retry_after="1.5")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert 1.5 in sync.sleeps


def test_a_403_stops_with_what_to_grant(sync: Sync) -> None:
    sync.entra.seed_users(3)
    sync.graph.deny(sync.app.client_id)
    result = sync.run()
    assert result.status == "failed"
    assert "User.Read.All" in (result.error or "")
    assert sync.users() == {}


def test_resync_drops_the_cursor_and_sweeps_users_no_longer_there(sync: Sync) -> None:
    keep = sync.entra.add_user("keep@contoso.example")
    gone = sync.entra.add_user("gone@contoso.example")
    sync.run()
    sync.entra.hard_delete_user(gone)  # …and its @removed never reaches us:
    sync.graph.resync(410, "syncStateNotFound")
    with sync.session() as s:
        runs_before = s.scalar(select(func.count()).select_from(SyncRun))
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert set(sync.users()) == {keep}, result
    with sync.session() as s:
        runs = list(s.scalars(select(SyncRun).order_by(SyncRun.id)))
        assert len(runs) == (runs_before or 0) + 2
        # The run Graph's resync interrupted is replaced, not failed: nothing toward
        # quarantine, nothing for a failure notification to quote.
        assert (runs[-2].status, runs[-1].kind) == ("replaced", "full")
        assert f"Run {runs[-1].id} replaced this one." in (runs[-2].error or "")
        assert sync_status.health(s, sync.tenant_id) == sync_status.SyncHealth(
            None, 0, None, None)


def test_mass_disable_is_held_for_approval(sync: Sync) -> None:
    ids = [sync.entra.add_user(f"u{i}@contoso.example") for i in range(40)]
    sync.run()
    for user_id in ids[:10]:  # 25 % of the tenant, over the default 20 %
        sync.entra.disable_user(user_id)
    result = sync.run()
    assert result.status == "awaiting_approval", result
    assert all(u.active for u in sync.users().values())  # nothing applied
    again = sync.run()
    assert again.status == "skipped" and "approval" in (again.error or "")


def test_an_empty_full_round_sweeps_nobody(sync: Sync) -> None:
    sync.entra.seed_users(5)
    sync.run()
    with sync.session() as s:
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None
        state.users_delta_link = state.groups_delta_link = None  # force a full round
        s.commit()
    for user_id in list(sync.users()):
        sync.entra.hard_delete_user(user_id)
    result = sync.run()
    assert len(sync.users()) == 5, result  # an empty answer is not "delete everyone"


def test_a_crash_between_pages_resumes_without_loss(sync: Sync) -> None:
    sync.entra.seed_users(600)

    def crash_after(n: int) -> Callable[[int, str], None]:
        def hook(pages: int, phase: str) -> None:
            if pages == n:
                raise KeyboardInterrupt  # as abrupt as it gets inside the process
        return hook

    with pytest.raises(KeyboardInterrupt):
        sync.run(after_page=crash_after(2))
    assert len(sync.users()) == 400  # two pages committed
    with sync.session() as s:
        s.execute(SyncState.__table__.update().values(lease_owner=None, lease_until=None))
        s.commit()
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert len(sync.users()) == 600
    with sync.session() as s:
        created = s.scalar(select(func.count()).select_from(Event).where(
            Event.kind == "user.created", Event.tenant_id == sync.tenant_id))
    assert created == 600  # nothing created twice


def test_a_synced_tenant_refuses_scim_writes(sync: Sync, client: Any) -> None:
    from connector import tenants as tenant_service

    with sync.session() as s:
        issued = tenant_service.rotate_token(s, sync.tenant_id, dt.datetime.now(dt.UTC))
        s.commit()
    headers = {"Authorization": f"Bearer {issued.token}"}
    refused = client.post("/scim/v2/Users", json={
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x@y.io"},
        headers=headers)
    assert refused.status_code == 403 and "Entra ID sync" in refused.json["detail"]
    assert client.get("/scim/v2/Users", headers=headers).status_code == 200  # reads work


def test_registering_a_tenant_fed_by_scim_is_refused(engine: Engine, scim: Any) -> None:
    from connector.errors import StateConflict

    scim.post("/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                         "userName": "scim@x.io"})
    settings = AzureSyncSettings(encryption_key=secrets.new_key())
    with make_sessionmaker(engine)() as s, pytest.raises(StateConflict, match="SCIM"):
        register(s, settings, WriteContext(scim.tenant_id, Source.ADMIN, "t", "t",
                                           dt.datetime.now(dt.UTC)),
                 directory_id="d", client_id="c", secret="s")


def test_domain_scope_syncs_only_those_domains_and_drops_leavers(sync: Sync) -> None:
    with sync.session() as s:
        from connector.models import EntraRegistration

        registration = s.get(EntraRegistration, sync.tenant_id)
        assert registration is not None
        registration.scope_domains = ["contoso.example"]
        s.commit()
    inside = sync.entra.add_user("in@contoso.example")
    outside = sync.entra.add_user("out@fabrikam.example")
    result = sync.run()
    assert set(sync.users()) == {inside} and result.counts["out_of_scope"] == 1
    sync.entra.update_user(inside, userPrincipalName="in@fabrikam.example")
    sync.run()
    assert sync.users() == {}  # it left the scope: removed, history kept
    del outside


def test_repeated_failures_quarantine_and_a_success_clears_it(sync: Sync) -> None:
    sync.entra.seed_users(3)
    sync.graph.deny(sync.app.client_id)
    for _ in range(5):
        assert sync.run(quarantine_after=5).status == "failed"
    with sync.session() as s:
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None and state.failures == 5 and state.quarantined_until
    sync.graph.allow(sync.app.client_id)
    assert sync.run().status == "succeeded"
    with sync.session() as s:
        state = s.get(SyncState, sync.tenant_id)
        assert state is not None and state.failures == 0 and state.quarantined_until is None


def test_a_spent_retry_budget_fails_the_round_and_the_next_resumes(sync: Sync) -> None:
    sync.entra.seed_users(450)
    sync.graph.fail(503, count=30, after=1)  # the first page arrives, then 503s
    failed = sync.run()
    assert failed.status == "failed" and "repeated failures" in (failed.error or "")
    assert len(sync.users()) == 200  # what was committed stays
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert len(sync.users()) == 450
    # The same round, resumed from its cursor in a new run: the log keeps both, the
    # failed one as failed.
    assert result.run_id != failed.run_id
    with sync.session() as s:
        first, resumed = s.get(SyncRun, failed.run_id), s.get(SyncRun, result.run_id)
        assert first is not None and resumed is not None
        assert (first.status, resumed.round_id) == ("failed", first.id)
        assert f"went on in run {resumed.id}" in (first.error or "")
        assert first.counts.get("created", 0) + resumed.counts.get("created", 0) == 450


def test_a_refusal_from_graph_says_graphs_own_words(sync: Sync) -> None:
    """A 400 that is neither throttling nor a resync fails the round with what Graph
    said of it, not only its status and code."""
    sync.entra.seed_users(3)
    sync.graph.fail(400, path="/v1.0/users/delta", code="Request_UnsupportedQuery",
                    message="Unsupported Query.\n The $select is too long.")
    result = sync.run()
    assert result.status == "failed"
    assert result.error == ("Graph answered 400 Request_UnsupportedQuery for "
                            "/v1.0/users/delta: Unsupported Query. The $select is too long.")
    with sync.session() as s:
        run = s.get(SyncRun, result.run_id)
        assert run is not None and run.error == result.error


@pytest.mark.parametrize("status", [503, 429])
def test_a_passing_failure_of_the_sign_in_service_is_retried_within_the_round(
        sync: Sync, fake_entra: Any, status: int) -> None:
    """Entra's token endpoint failing once (a 5xx, which msal raises; a 429 "transient
    error", which it returns) is retried like Graph's 503, not a failed round."""
    sync.entra.seed_users(3)
    fake_entra.fail_next(status)
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert len(sync.users()) == 3 and len(sync.sleeps) == 1 and sync.sleeps[0] >= 5
    assert result.counts["retries"] == 1 and result.counts["retry_wait_seconds"] >= 5


def test_a_round_that_waited_out_throttling_says_so_in_its_counts(sync: Sync) -> None:
    """429 (Retry-After 3), 503 and 504 retried within the round: it succeeds, and its
    run counts the retries and the seconds waited, which is why it took long. (The
    harness's sleeps return at once, so the shared pause is waited out again.)"""
    sync.entra.seed_users(3)
    sync.graph.throttle(1, retry_after="3")
    sync.graph.fail(503, 1)
    sync.graph.fail(504, 1, path="/v1.0/groups")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert result.counts["retries"] == 3
    # Every wait: the retries' and the pause Retry-After set for the app registration.
    assert result.counts["retry_wait_seconds"] == round(sum(sync.sleeps)) >= 3
    with sync.session() as s:
        run = s.get(SyncRun, result.run_id)
        assert run is not None and run.counts["retries"] == 3
    assert "retries" not in sync.run().counts  # a quiet round counts none


def test_a_sign_in_service_that_keeps_failing_fails_the_round_in_plain_words(
        sync: Sync, fake_entra: Any) -> None:
    sync.entra.seed_users(3)
    fault = fake_entra.fail_next(503, count=100)
    result = sync.run()
    assert result.status == "failed"
    assert (result.error or "").startswith(
        f"Entra ID's sign-in service at {sync.app.authority_host} failed (HTTP Error: 503); "
        "a temporary failure")
    assert "internal error" not in (result.error or "")
    assert len(sync.sleeps) == 20  # the round's retry budget (harness: 20)
    fake_entra.faults.clear()
    assert fault.count < 100 and sync.run().status == "succeeded"


def test_the_scheduler_keeps_one_job_per_registration(sync: Sync) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler


    jobs = BackgroundScheduler(timezone=dt.UTC)
    jobs.start(paused=True)  # running, as in a process, but firing nothing here
    try:
        _check_jobs(jobs, sync)
    finally:
        jobs.shutdown(wait=False)


def _check_jobs(jobs: Any, sync: Sync) -> None:
    from azure_sync import scheduler

    scheduler.sync_jobs(jobs, sync.service)
    job = jobs.get_job(scheduler.job_id(sync.tenant_id))
    assert job is not None and job.max_instances == 1 and job.coalesce
    assert job.trigger.interval == dt.timedelta(minutes=10)
    with sync.session() as s:
        from connector.models import EntraRegistration

        registration = s.get(EntraRegistration, sync.tenant_id)
        assert registration is not None
        registration.interval_minutes = 3
        s.commit()
    scheduler.sync_jobs(jobs, sync.service)
    assert jobs.get_job(scheduler.job_id(sync.tenant_id)).trigger.interval == \
        dt.timedelta(minutes=3)
    with sync.session() as s:
        s.delete(s.get(EntraRegistration, sync.tenant_id))
        s.commit()
    scheduler.sync_jobs(jobs, sync.service)
    assert jobs.get_job(scheduler.job_id(sync.tenant_id)) is None


def test_the_token_cache_hits_and_a_401_refreshes_once(sync: Sync, fake_entra: Any) -> None:
    sync.entra.seed_users(1000)  # 5 pages
    assert sync.run().status == "succeeded"
    assert fake_entra.token_requests == 1  # one token for the whole round
    sync.graph.expire_token_after(1)
    sync.entra.seed_users(10)
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert fake_entra.token_requests == 2  # the 401 dropped it; one new token


def test_a_delta_link_older_than_seven_days_resyncs(sync: Sync, fake_entra: Any) -> None:
    ann = sync.entra.add_user("ann@contoso.example")
    sync.run()
    fake_entra.clock.advance(days=8)
    sync.entra.update_user(ann, displayName="Ann Again")
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert sync.users()[ann].display_name == "Ann Again"
    with sync.session() as s:
        kinds = [(r.kind, r.trigger) for r in s.scalars(select(SyncRun).order_by(SyncRun.id))]
    assert kinds[-1] == ("full", "resync")


def test_a_certificate_credential_signs_in(engine: Engine, fake_graph: FakeGraph,
                                           fake_entra: Any, fake_tls: Any) -> None:
    from tests.fakes.entra_token import generate_app_certificate

    certificate = generate_app_certificate()
    directory_id, client_id = str(uuid.uuid4()), str(uuid.uuid4())
    fake_entra.add_app(directory_id, client_id, certificate_pem=certificate.certificate_pem)
    fake_graph.directory(directory_id).seed_users(3)
    settings = AzureSyncSettings(encryption_key=secrets.new_key(), allow_private_hosts=True,
                                 graph_scope="https://graph.microsoft.com/.default")
    tenant_id, _ = make_tenant(engine, "Cert")
    maker = make_sessionmaker(engine)
    with maker() as s:
        registration = register(
            s, settings, WriteContext(tenant_id, Source.ADMIN, "t", "t", dt.datetime.now(dt.UTC)),
            directory_id=directory_id, client_id=client_id,
            certificate_pem=certificate.private_key_pem + certificate.certificate_pem,
            authority_host=fake_entra.url, graph_base_url=fake_graph.url)
        assert registration.certificate_thumbprint and registration.secret_encrypted is None
        assert certificate.private_key_pem not in (registration.certificate_encrypted or "")
        s.commit()
    service = SyncService(settings, maker, make_sessionmaker(engine, writes=True),
                          verify=str(fake_tls.ca_path))
    result = service.run(tenant_id, "manual")
    assert result.status == "succeeded", result.error
    assert result.counts["created"] == 3


def test_a_full_round_removes_groups_and_memberships_it_no_longer_sees(sync: Sync) -> None:
    members = [sync.entra.add_user(f"m{i}@contoso.example") for i in range(4)]
    kept = sync.entra.create_group("Kept", members=members)
    gone = sync.entra.create_group("Gone", members=members[:2])
    assert sync.run().status == "succeeded"
    # Changes whose delta entries we never see: the resync's full round must find them.
    sync.entra.remove_members(kept, members[:1])
    sync.entra.delete_group(gone)
    sync.graph.resync(410, "syncStateNotFound")
    result = sync.run()
    assert result.status == "succeeded", result.error
    with sync.session() as s:
        groups = {g.external_id: g for g in s.scalars(select(Group).where(
            Group.tenant_id == sync.tenant_id))}
        assert set(groups) == {kept}
        count = s.scalar(select(func.count()).select_from(Membership).where(
            Membership.group_id == groups[kept].id))
    assert count == 3 and result.counts.get("groups_swept") == 1
    assert result.counts.get("memberships_swept") == 1


def test_empty_pages_and_replayed_objects_change_nothing_twice(sync: Sync) -> None:
    sync.graph.knobs.empty_pages_between = 2
    sync.graph.knobs.replay_last_object = True
    sync.entra.seed_users(450)
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert len(sync.users()) == 450 and result.counts["created"] == 450
    with sync.session() as s:
        created = s.scalar(select(func.count()).select_from(Event).where(
            Event.kind == "user.created", Event.tenant_id == sync.tenant_id))
    assert created == 450


@pytest.mark.parametrize("knob", ["loop_next_link", "next_link_host"])
def test_looping_or_foreign_next_links_stop_the_round(sync: Sync, knob: str) -> None:
    sync.entra.seed_users(450)
    setattr(sync.graph.knobs, knob, True if knob == "loop_next_link" else "evil.example")
    result = sync.run()
    assert result.status == "failed"
    assert "loop" in (result.error or "") or "another host" in (result.error or "")
    setattr(sync.graph.knobs, knob, False if knob == "loop_next_link" else None)
    assert sync.run().status == "succeeded"  # the next round starts clean
    assert len(sync.users()) == 450


# -- the round's clock ----------------------------------------------------------------------

T1 = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


def _stamps(sync: Sync, run_id: int | None) -> set[tuple[dt.datetime, dt.datetime]]:
    """(effective_at, recorded_at) of the events a round wrote."""
    with sync.session() as s:
        rows = s.execute(select(Event.effective_at, Event.recorded_at).where(
            Event.tenant_id == sync.tenant_id, Event.correlation_id == f"sync-run:{run_id}"))
        return {(effective, recorded) for effective, recorded in rows}


def test_a_round_takes_every_time_from_its_clock(sync: Sync) -> None:
    ann = sync.entra.add_user("ann@contoso.example")
    bob = sync.entra.add_user("bob@contoso.example")
    sync.entra.create_group("Staff", members=[ann, bob])
    first = sync.run(clock=lambda: T1)
    assert first.status == "succeeded", first.error
    assert first.counts["created"] == 2 and first.counts["memberships"] == 2
    assert _stamps(sync, first.run_id) == {(T1, T1)}
    with sync.session() as s:
        run = s.get(SyncRun, first.run_id)
        state = s.get(SyncState, sync.tenant_id)
        assert run is not None and state is not None
        assert (run.started_at, run.finished_at) == (T1, T1)
        assert (state.last_started_at, state.last_success_at) == (T1, T1)
    assert {u.created_at for u in sync.users().values()} == {T1}

    t2 = T1 + dt.timedelta(days=1)  # a disable is staged, then applied at the round's end
    sync.entra.update_user(ann, displayName="Ann Lee")
    sync.entra.disable_user(bob)
    second = sync.run(clock=lambda: t2)
    assert second.status == "succeeded", second.error
    assert second.counts["updated"] == 1 and second.counts["disabled"] == 1
    assert _stamps(sync, second.run_id) == {(t2, t2)}
    users = sync.users()
    assert (users[ann].modified_at, users[bob].modified_at) == (t2, t2)


def test_a_held_round_is_applied_at_the_approval_time(sync: Sync) -> None:
    ann = sync.entra.add_user("ann@contoso.example")
    assert sync.run(clock=lambda: T1).status == "succeeded"
    sync.register(threshold_count=0)  # any disable is held
    sync.entra.disable_user(ann)
    t2, t3 = T1 + dt.timedelta(hours=1), T1 + dt.timedelta(hours=2)
    held = sync.run(clock=lambda: t2)
    assert held.status == "awaiting_approval", held
    with sync.session() as s:
        run = s.get(SyncRun, held.run_id)
        assert run is not None and run.finished_at == t2
        tenant = s.get(Tenant, sync.tenant_id)
        assert decisions.approve_held(s, tenant, held.run_id, t3) == {"disabled": 1}
        s.commit()
    assert _stamps(sync, held.run_id) == {(t3, t3)}  # the page changed nobody else
    assert sync.users()[ann].active is False



def test_a_full_round_refreshes_the_search_words_statistics(sync: Sync) -> None:
    """Never analysed, user_search_words made the next round's DELETE of the changed
    users' words scan the tenant's words (PostgreSQL planned it without statistics)."""
    def analyses() -> int:
        with sync.session() as s:
            if s.get_bind().dialect.name != "postgresql":
                pytest.skip("statistics are PostgreSQL's")
            return int(s.scalar(text(
                "SELECT analyze_count FROM pg_stat_user_tables "
                "WHERE relname = 'user_search_words'")) or 0)

    before = analyses()
    sync.entra.seed_users(450)
    result = sync.run()
    assert result.status == "succeeded", result.error
    assert result.pages >= 3 and analyses() > before
