"""Sync rounds: read Graph delta pages and apply them through the directory.

A round reads `/users/delta` then `/groups/delta`, each from its stored deltaLink (or
from scratch: a full round). Every page is applied in ONE transaction together with the
cursor that follows it, so a process killed at any moment resumes from the last page it
committed: a page is applied again at worst, and applying is an idempotent upsert by
Graph object id. The deltaLinks replace the old ones only when the round completes.

Destructive changes (a disable, a delete, the sweep of users a full round did not see)
are not applied page by page: they are staged and, when the round completes, applied
together if they stay under the tenant's threshold (count or percentage), or held for
an admin's approval if not. So a misconfigured scope or a bad night in the IdP never
mass-disables people.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from azure_sync import mapping
from azure_sync import scope as scoping
from azure_sync.errors import ResyncRequired, SyncError, UnsafeLink
from azure_sync.graph import GraphClient
from connector import logs
from connector.commands import GroupFields, MemberChange
from connector.directory import Directory
from connector.errors import Conflict, DomainError, NotFound, StateConflict
from connector.events import WriteContext
from connector.models import (
    EntraRegistration,
    Group,
    Membership,
    SyncRun,
    SyncStaged,
    SyncState,
    Tenant,
    User,
)
from connector.status import Source

log = logging.getLogger("connector.sync")
DESTRUCTIVE = ("disable", "soft_delete", "hard_delete", "sweep")


@dataclass
class RoundResult:
    run_id: int | None
    status: str  # succeeded | failed | awaiting_approval | skipped | busy
    counts: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RoundOptions:
    lease_seconds: int = 300
    max_pages: int = 100_000
    quarantine_after: int = 5
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    # Test seam: called after each committed page (index, phase); a crash test kills
    # the process here to prove a round resumes.
    after_page: Callable[[int, str], None] | None = None


def held_run_id(s: Session, tenant_id: str) -> int | None:
    """The tenant's round awaiting approval, if any (no round starts while one is)."""
    return s.scalar(select(SyncRun.id).where(SyncRun.tenant_id == tenant_id,
                                             SyncRun.status == "awaiting_approval"))


# -- leases ------------------------------------------------------------------------------


def _ensure_state(maker: sessionmaker[Session], tenant_id: str) -> None:
    with maker() as s:
        if s.get(SyncState, tenant_id) is None:
            s.add(SyncState(tenant_id=tenant_id, full_round=False, failures=0))
            try:
                s.commit()
            except IntegrityError:  # another process made it
                s.rollback()


def take_lease(s: Session, tenant_id: str, owner: str, now: dt.datetime, seconds: int) -> bool:
    """Hold the tenant's round for `seconds` (a row update, so it is exclusive across
    processes): taken when free, expired, or already ours."""
    result = s.execute(
        update(SyncState).where(
            SyncState.tenant_id == tenant_id,
            or_(SyncState.lease_owner.is_(None), SyncState.lease_until < now,
                SyncState.lease_owner == owner))
        .values(lease_owner=owner, lease_until=now + dt.timedelta(seconds=seconds)))
    return result.rowcount == 1  # type: ignore[attr-defined]


def release_lease(s: Session, tenant_id: str, owner: str) -> None:
    s.execute(update(SyncState).where(SyncState.tenant_id == tenant_id,
                                      SyncState.lease_owner == owner)
              .values(lease_owner=None, lease_until=None))


# -- the round ------------------------------------------------------------------------------


def run_round(maker: sessionmaker[Session], tenant_id: str, client: GraphClient,
              options: RoundOptions, trigger: str = "schedule") -> RoundResult:
    """Run (or resume) one round for the tenant. Never raises for Graph trouble: the
    result and the run log say what happened."""
    _ensure_state(maker, tenant_id)
    with maker() as s:
        now = options.clock()
        if not take_lease(s, tenant_id, options.owner, now, options.lease_seconds):
            return RoundResult(None, "busy", error="Another process is running this "
                               "tenant's round.")
        s.commit()
    try:
        return _run_leased(maker, tenant_id, client, options, trigger)
    finally:
        with maker() as s:
            release_lease(s, tenant_id, options.owner)
            s.commit()


def _run_leased(maker: sessionmaker[Session], tenant_id: str, client: GraphClient,
                options: RoundOptions, trigger: str) -> RoundResult:
    with maker() as s:
        tenant = s.get(Tenant, tenant_id)
        state = s.get(SyncState, tenant_id)
        assert tenant is not None and state is not None
        if tenant.provisioning_paused:
            return RoundResult(None, "skipped", error="Provisioning is paused.")
        held = held_run_id(s, tenant_id)
        if held is not None:
            return RoundResult(held, "skipped", error=f"Round {held} awaits an admin's "
                               "approval of its deletions; no new round runs until then.")
        if state.run_id is None:
            _start(s, state, client, options.clock(), trigger)
        else:  # a round a crash or a failure interrupted: carry on from its cursor
            run = s.get(SyncRun, state.run_id)
            if run is not None and run.status != "running":
                run.status, run.error = "running", f"resumed after: {run.error}"
        run_id = state.run_id
        s.commit()
    assert run_id is not None
    try:
        return _guarded_pages(maker, tenant_id, run_id, client, options, may_resync=True)
    except ResyncRequired as exc:
        log_event(tenant_id, run_id, "resync", exc.message)
        with maker() as s:
            state = s.get(SyncState, tenant_id)
            assert state is not None
            _finish(s, run_id, "failed", options.clock(), f"{exc.message}")
            state.users_delta_link = state.groups_delta_link = None
            state.run_id = None
            _start(s, state, client, options.clock(), "resync")
            run_id = state.run_id
            s.commit()
        assert run_id is not None
        return _guarded_pages(maker, tenant_id, run_id, client, options, may_resync=False)


def _guarded_pages(maker: sessionmaker[Session], tenant_id: str, run_id: int,
                   client: GraphClient, options: RoundOptions, may_resync: bool
                   ) -> RoundResult:
    """Run the round's pages; turn what Graph or the lease did into the result. A
    resync request goes up to the caller once (`may_resync`); a second one fails."""
    try:
        return _pages(maker, tenant_id, run_id, client, options)
    except LeaseLost as exc:
        return _lost(tenant_id, run_id, exc)
    except ResyncRequired as exc:
        if may_resync:
            raise
        return _failed(maker, tenant_id, run_id, exc, options)
    except UnsafeLink as exc:
        return _failed(maker, tenant_id, run_id, exc, options, resume=False)
    except SyncError as exc:
        return _failed(maker, tenant_id, run_id, exc, options)


class LeaseLost(SyncError):
    """Another process took the tenant's round over while this one stalled."""


def _lost(tenant_id: str, run_id: int, exc: LeaseLost) -> RoundResult:
    """Step aside without touching the round or the state: they are the new holder's."""
    log_event(tenant_id, run_id, "lease lost", exc.message)
    return RoundResult(run_id, "busy", error=exc.message)


def _start(s: Session, state: SyncState, client: GraphClient, now: dt.datetime,
           trigger: str) -> None:
    registration = s.get(EntraRegistration, state.tenant_id)
    due = registration is not None and registration.full_round_due
    if registration is not None and due:
        registration.full_round_due = False  # taken: this round reads every user
    full = state.users_delta_link is None or due
    run = SyncRun(tenant_id=state.tenant_id, kind="full" if full else "incremental",
                  status="running", trigger=trigger, started_at=now, pages=0, counts={})
    s.add(run)
    s.flush()
    state.run_id = run.id
    state.phase = "users"
    state.full_round = full
    state.pending_users_delta_link = None
    state.next_link = (None if full else state.users_delta_link) or client.url(
        "users/delta", {"$select": ",".join(mapping.USER_SELECT)})
    state.last_started_at = now


def _pages(maker: sessionmaker[Session], tenant_id: str, run_id: int, client: GraphClient,
           options: RoundOptions) -> RoundResult:
    scope = _round_scope(maker, tenant_id, run_id, client, options)
    seen_links: set[str] = set()
    pages = 0
    while True:
        with maker() as s:
            state = s.get(SyncState, tenant_id)
            assert state is not None
            if state.run_id != run_id or state.lease_owner != options.owner:
                raise LeaseLost("This process lost the tenant's lease (it stalled past "
                                "it); the process that took it over carries on.")
            phase, link, full = state.phase, state.next_link, state.full_round
        if phase == "done":
            return _complete(maker, tenant_id, run_id, options, scope)
        assert link is not None and phase in ("users", "groups")
        if link in seen_links:
            raise UnsafeLink("Graph sent a nextLink this round already followed (a loop); "
                             "the round stops.")
        if pages >= options.max_pages:
            raise UnsafeLink(f"The round read {pages} pages without reaching a deltaLink; "
                             "it stops as runaway (azure_sync.max_pages_per_round).")
        seen_links.add(link)
        page = client.get(link)
        items = page.get("value")
        next_link = page.get("@odata.nextLink")
        delta_link = page.get("@odata.deltaLink")
        if not isinstance(items, list) or not (isinstance(next_link, str)
                                               or isinstance(delta_link, str)):
            raise UnsafeLink("A Graph page had neither items nor a next or delta link.")
        with maker() as s:
            state = s.get(SyncState, tenant_id, with_for_update=True)
            tenant = s.get(Tenant, tenant_id)
            run = s.get(SyncRun, run_id)
            assert state is not None and tenant is not None and run is not None
            if state.lease_owner != options.owner or state.run_id != run_id:
                raise LeaseLost("This process lost the tenant's lease (it stalled past "
                                "it); the process that took it over carries on.")
            applier = apply_page(s, tenant, run_id, state.full_round, phase, items, scope)
            if isinstance(next_link, str):
                state.next_link = client.check_link(next_link)
            elif phase == "users":
                state.pending_users_delta_link = client.check_link(delta_link)
                state.phase = "groups"
                state.next_link = state.groups_delta_link or client.url(
                    "groups/delta", {"$select": ",".join(mapping.GROUP_SELECT)})
                if state.full_round:  # the groups' members must all be read again too
                    state.next_link = client.url(
                        "groups/delta", {"$select": ",".join(mapping.GROUP_SELECT)})
            else:
                state.groups_delta_link = client.check_link(delta_link)
                state.phase = "done"
                state.next_link = None
            run.pages += 1
            run.counts = _add(run.counts, applier.counts)
            if scope.missing_groups:
                run.counts = {**run.counts, "scope_groups_missing": len(scope.missing_groups)}
            now = options.clock()
            state.lease_until = now + dt.timedelta(seconds=options.lease_seconds)
            s.commit()
        pages += 1
        if full and phase == "users" and pages in REFRESH_STATISTICS_AT:
            _refresh_statistics(maker)
        if options.after_page is not None:
            options.after_page(pages, phase)


def apply_page(s: Session, tenant: Tenant, run_id: int, full_round: bool, phase: str,
               items: list[Any], scope: scoping.Scope) -> PageApplier:
    """Apply a page in the caller's transaction, the fast way first; if some item fails,
    again one item at a time, so that one bad object is skipped and counted instead of
    stopping the round."""
    applier = PageApplier(s, tenant, run_id, full_round, scope=scope)
    try:
        with s.begin_nested():
            applier.apply(phase, items, careful=False)
    except (DomainError, IntegrityError):
        applier = PageApplier(s, tenant, run_id, full_round, scope=scope)
        applier.apply(phase, items, careful=True)
    return applier


def _round_scope(maker: sessionmaker[Session], tenant_id: str, run_id: int,
                 client: GraphClient, options: RoundOptions) -> scoping.Scope:
    """Read the round's scope (again, when a round resumes). With group scope, an
    incremental round creates, page by page, the members who are not synced users yet:
    they joined a chosen group, which /users/delta does not report. A full round reads
    every user anyway, so it only collects the members."""
    with maker() as s:
        settings = scoping.settings_of(s.get(EntraRegistration, tenant_id))
        state = s.get(SyncState, tenant_id)
        full = bool(state and state.full_round)
    domains_only = scoping.Scope(settings.domains)

    def renew_and_apply(users: list[dict[str, Any]]) -> None:
        with maker() as s:
            state = s.get(SyncState, tenant_id, with_for_update=True)
            assert state is not None
            if state.lease_owner != options.owner or state.run_id != run_id:
                raise LeaseLost("This process lost the tenant's lease (it stalled past "
                                "it); the process that took it over carries on.")
            state.lease_until = options.clock() + dt.timedelta(seconds=options.lease_seconds)
            entering = [] if full else _not_synced(s, tenant_id, users)
            if entering:
                tenant = s.get(Tenant, tenant_id)
                run = s.get(SyncRun, run_id)
                assert tenant is not None and run is not None
                applier = apply_page(s, tenant, run_id, False, "users", entering,
                                     domains_only)
                run.counts = _add(run.counts, _entered(applier.counts))
            s.commit()

    return scoping.read_scope(client, settings, renew_and_apply)


def _not_synced(s: Session, tenant_id: str, users: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
    """The members among `users` who are not live users of the tenant."""
    ids = [user["id"] for user in users]
    live = set(s.scalars(select(User.external_id).where(
        User.tenant_id == tenant_id, User.external_id.in_(ids), User.removed_at.is_(None))))
    return [user for user in users if user["id"] not in live]


def _entered(counts: Counter[str]) -> dict[str, int]:
    """A scope page's counts, with what it created or restored also counted as entering."""
    entered = dict(counts)
    joined = counts.get("created", 0) + counts.get("restored", 0)
    if joined:
        entered["entered_scope"] = joined
    return entered


def _leavers(s: Session, tenant_id: str, run_id: int, scope: scoping.Scope
             ) -> list[tuple[str, str, str | None]]:
    """Synced users outside the round's group scope (they left the chosen groups, or the
    groups changed), except those the round staged already."""
    if not scope.by_groups:
        return []
    staged = select(SyncStaged.user_id).where(SyncStaged.run_id == run_id,
                                              SyncStaged.user_id.is_not(None))
    rows = s.execute(select(User.id, User.external_id, User.user_name).where(
        User.tenant_id == tenant_id, User.removed_at.is_(None),
        User.origin == Source.ENTRA_SYNC, User.id.not_in(staged)))
    return [(oid or "", "out_of_scope", uid) for uid, oid, user_name in rows
            if not scope.admits(oid or "", user_name)]


# A full round loads many users into a small table: PostgreSQL planned the foreign-key
# checks of user_values while users was nearly empty (a sequential scan) and kept that
# plan, so each page's check read every user (a page cost 5 ms at first, 200 ms after
# 20,000 users). ANALYZE at these page counts refreshes the statistics, which also
# drops the cached plans. Only in full rounds: an incremental round changes a few rows,
# and ANALYZE of a million-row table cost it most of a second.
REFRESH_STATISTICS_AT = frozenset({2, 10, 50, 250, 1250, 6250})


def _refresh_statistics(maker: sessionmaker[Session]) -> None:
    with maker() as s:
        if s.get_bind().dialect.name != "postgresql":
            return
        for table in ("users", "user_values", "events"):
            s.execute(text(f"ANALYZE {table}"))
        s.commit()


def _complete(maker: sessionmaker[Session], tenant_id: str, run_id: int,
              options: RoundOptions, scope: scoping.Scope) -> RoundResult:
    """The round has read everything: sweep (full rounds), then apply the staged
    destructive changes or hold them over the threshold."""
    with maker() as s:
        state = s.get(SyncState, tenant_id, with_for_update=True)
        tenant = s.get(Tenant, tenant_id)
        run = s.get(SyncRun, run_id)
        registration = s.get(EntraRegistration, tenant_id)
        assert state is not None and tenant is not None and run is not None
        counts = dict(run.counts)
        leavers = _leavers(s, tenant_id, run_id, scope)
        if leavers:
            _stage(s, tenant_id, run_id, leavers)
            counts = _add(counts, {"left_scope_staged": len(leavers)})
        if state.full_round:
            counts = _add(counts, _sweep_groups(s, tenant, run_id, counts))
            swept = _stage_sweep(s, tenant_id, run_id, counts)
            counts["sweep_staged"] = swept
        staged = s.scalar(select(func.count()).select_from(SyncStaged)
                          .where(SyncStaged.run_id == run_id)) or 0
        limit_count = registration.threshold_count if registration else 500
        limit_percent = registration.threshold_percent if registration else 20
        synced = _synced_users(s, tenant_id, _users_that_decide(staged, limit_percent))
        over = is_over_threshold(staged, synced, limit_count, limit_percent)
        if staged and over:
            synced = _synced_users(s, tenant_id)  # the exact number, for the admin
        state.users_delta_link = state.pending_users_delta_link or state.users_delta_link
        state.pending_users_delta_link = None
        state.run_id = None
        state.phase = None
        state.next_link = None
        now = options.clock()
        if staged and over:
            run.counts = counts
            run.status = "awaiting_approval"
            run.finished_at = now
            run.error = (f"{staged} disables/deletions exceed the threshold ({limit_count} "
                         f"users or {limit_percent} % of {synced}); held for approval.")
            state.failures = 0
            s.commit()
            log_event(tenant_id, run_id, "held", run.error)
            return RoundResult(run_id, "awaiting_approval", counts, run.pages, run.error)
        counts = _add(counts, apply_staged(s, tenant, run_id))
        run.counts = counts
        run.status = "succeeded"
        run.finished_at = now
        state.failures = 0
        state.quarantined_until = None
        state.last_success_at = now
        s.commit()
        log_event(tenant_id, run_id, "succeeded", str(counts))
        return RoundResult(run_id, "succeeded", counts, run.pages)


# Below this many disables/deletions the percentage rule does not apply: in a tenant of
# 8 users, 2 leavers are 25 %, and that is ordinary life, not an accident.
PERCENT_RULE_FROM = 10


def _users_that_decide(staged: int, limit_percent: int) -> int:
    """How many synced users the percentage rule needs counted: with at least this many,
    `staged` is not over `limit_percent` % (counting a million users cost an
    incremental round on PostgreSQL a tenth of a second, for a yes/no answer)."""
    if staged < PERCENT_RULE_FROM or limit_percent <= 0:
        return 0
    return staged * 100 // limit_percent + 1


def _synced_users(s: Session, tenant_id: str, at_most: int | None = None) -> int:
    """The tenant's live users synced from Entra ID, counted up to `at_most`."""
    if at_most == 0:
        return 0
    users = select(User.id).where(User.tenant_id == tenant_id, User.removed_at.is_(None),
                                  User.origin == Source.ENTRA_SYNC)
    if at_most is not None:
        users = users.limit(at_most)
    return s.scalar(select(func.count()).select_from(users.subquery())) or 0


def is_over_threshold(staged: int, synced: int, limit_count: int, limit_percent: int) -> bool:
    """Accidental-deletion prevention: more than `limit_count` destructive changes, or
    (from PERCENT_RULE_FROM on) more than `limit_percent` % of the synced users."""
    if staged > limit_count:
        return True
    return staged >= PERCENT_RULE_FROM and staged * 100 > limit_percent * max(synced, 1)


def _sweep_groups(s: Session, tenant: Tenant, run_id: int, counts: dict[str, int]
                  ) -> dict[str, int]:
    """After a full round: remove the synced groups, and the memberships of synced
    groups, that it did not list (gone from Entra ID). A round that listed no group
    removes nothing (an empty answer is more likely a fault)."""
    if counts.get("groups_seen", 0) == 0:
        return {}
    directory = Directory(s, tenant, _ctx(tenant.id, run_id))
    swept: Counter[str] = Counter()
    for group in s.scalars(select(Group).where(
            Group.tenant_id == tenant.id, Group.origin == Source.ENTRA_SYNC,
            or_(Group.seen_in_run.is_(None), Group.seen_in_run != run_id))).all():
        directory.remove_group(group)
        swept["groups_swept"] += 1
    stale = s.execute(
        select(Membership.group_id, Membership.member_id)
        .join(Group, (Group.tenant_id == Membership.tenant_id)
              & (Group.id == Membership.group_id))
        .where(Membership.tenant_id == tenant.id, Group.origin == Source.ENTRA_SYNC,
               or_(Membership.seen_in_run.is_(None), Membership.seen_in_run != run_id))
    ).all()
    by_group: dict[str, list[str]] = {}
    for group_id, member_id in stale:
        by_group.setdefault(group_id, []).append(member_id)
    for group_id, members in by_group.items():
        group = s.get(Group, (tenant.id, group_id))
        if group is None:
            continue
        fields = GroupFields(display_name=group.display_name, external_id=group.external_id,
                             data=dict(group.data or {}))
        directory.update_group(group, fields, [MemberChange("remove", tuple(members))])
        swept["memberships_swept"] += len(members)
    s.flush()
    return dict(swept)


def _stage_sweep(s: Session, tenant_id: str, run_id: int, counts: dict[str, int]) -> int:
    """Stage the removal of synced users this full round did not see. A round that saw
    nobody sweeps nobody: an empty answer is more likely a fault than an empty tenant."""
    if counts.get("seen", 0) == 0:
        return 0
    staged = select(SyncStaged.user_id).where(SyncStaged.run_id == run_id,
                                              SyncStaged.user_id.is_not(None))
    missing = s.execute(select(User.id, User.external_id).where(
        User.tenant_id == tenant_id, User.removed_at.is_(None),
        User.origin == Source.ENTRA_SYNC, User.id.not_in(staged),  # out of scope, staged
        or_(User.seen_in_run.is_(None), User.seen_in_run != run_id))).all()
    _stage(s, tenant_id, run_id, [(oid or "", "sweep", uid) for uid, oid in missing])
    return len(missing)


def _stage(s: Session, tenant_id: str, run_id: int,
           rows: Iterable[tuple[str, str, str | None]]) -> None:
    start = s.scalar(select(func.coalesce(func.max(SyncStaged.seq), 0))
                     .where(SyncStaged.run_id == run_id)) or 0
    s.add_all(SyncStaged(run_id=run_id, seq=start + i, tenant_id=tenant_id, object_id=oid,
                         action=action, user_id=uid)
              for i, (oid, action, uid) in enumerate(rows, 1))
    s.flush()  # sessions do not autoflush: the counts and reads that follow must see them


def apply_staged(s: Session, tenant: Tenant, run_id: int) -> dict[str, int]:
    """Apply a round's staged destructive changes (at completion, or on approval)."""
    directory = Directory(s, tenant, _ctx(tenant.id, run_id))
    with directory.batched_events():
        return _apply_staged(s, directory, tenant, run_id)


def _apply_staged(s: Session, directory: Directory, tenant: Tenant, run_id: int
                  ) -> dict[str, int]:
    counts: Counter[str] = Counter()
    staged = s.execute(select(SyncStaged.action, SyncStaged.user_id).where(
        SyncStaged.run_id == run_id, SyncStaged.tenant_id == tenant.id)
        .order_by(SyncStaged.seq)).all()
    users = _users_by_id(s, tenant.id, [row.user_id for row in staged if row.user_id])
    for row in staged:
        user = users.get(row.user_id) if row.user_id else None
        if user is None or user.removed_at is not None:
            counts["unchanged"] += 1
            continue
        if row.action == "disable":
            fields = mapping.user_fields(user.external_id or "", _stored(user),
                                         {"accountEnabled": False})
            assert fields is not None
            directory.update_user(user, fields)
            counts["disabled"] += 1
        else:
            directory.remove_user(user)
            counts["deleted"] += 1
    s.execute(delete(SyncStaged).where(SyncStaged.run_id == run_id,
                                       SyncStaged.tenant_id == tenant.id))
    s.flush()
    return dict(counts)


def _users_by_id(s: Session, tenant_id: str, ids: list[str]) -> dict[str, User]:
    """The users with these connector ids, locked, in a few statements (not one each)."""
    found: dict[str, User] = {}
    for start in range(0, len(ids), 1000):
        found.update((u.id, u) for u in s.scalars(select(User).where(
            User.tenant_id == tenant_id, User.id.in_(ids[start:start + 1000]))
            .with_for_update()))
    return found


def _failed(maker: sessionmaker[Session], tenant_id: str, run_id: int, exc: SyncError,
            options: RoundOptions, resume: bool = True) -> RoundResult:
    """Record the failure; repeated failures quarantine the tenant. The cursor stays
    where the last committed page left it, so the next round resumes there (Graph's skip
    tokens outlive a retry), unless the cursor itself is the problem (a bad link): then
    the next round starts again from the stored deltaLinks."""
    with maker() as s:
        state = s.get(SyncState, tenant_id, with_for_update=True)
        assert state is not None
        if state.lease_owner != options.owner:  # taken over meanwhile: not ours to mark
            return _lost(tenant_id, run_id, LeaseLost(exc.message))
        now = options.clock()
        state.failures += 1
        if state.failures >= options.quarantine_after:
            state.quarantined_until = now + dt.timedelta(days=1)
        run = s.get(SyncRun, run_id)
        pages = run.pages if run else 0
        counts = dict(run.counts) if run else {}
        if run is not None:
            run.status, run.finished_at, run.error = "failed", now, exc.message
        if not resume:
            _finish(s, run_id, "failed", now, exc.message)
            state.run_id = state.phase = state.next_link = None
            state.pending_users_delta_link = None
        s.commit()
    log_event(tenant_id, run_id, "failed", exc.message)
    return RoundResult(run_id, "failed", counts, pages, exc.message)


def _finish(s: Session, run_id: int, status: str, now: dt.datetime, error: str | None) -> None:
    run = s.get(SyncRun, run_id)
    if run is not None:
        run.status, run.finished_at, run.error = status, now, error
        s.query(SyncStaged).filter(SyncStaged.run_id == run_id).delete()


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    total = Counter(a)
    total.update(b)
    return dict(total)


def _ctx(tenant_id: str, run_id: int) -> WriteContext:
    return WriteContext(tenant_id, Source.ENTRA_SYNC, "entra-sync", f"sync-run:{run_id}",
                        dt.datetime.now(dt.UTC))


def _stored(user: User) -> mapping.StoredProfile:
    return mapping.StoredProfile(user.user_name, user.display_name, dict(user.data or {}),
                                 user.guest, user.admin, user.external_company_guest)


def log_event(tenant_id: str, run_id: int | None, what: str, detail: str) -> None:
    logs.log(log, logging.INFO, f"sync round {what}", tenant=tenant_id, run=run_id,
             detail=detail)


# -- applying one page --------------------------------------------------------------------


class PageApplier:
    """Apply one page's items in the caller's transaction; count what happened."""

    def __init__(self, s: Session, tenant: Tenant, run_id: int, full_round: bool,
                 mode: str = "round", scope: scoping.Scope | None = None) -> None:
        self.s = s
        self.tenant = tenant
        self.run_id = run_id
        self.full_round = full_round
        # round: destructive changes are staged for the round's end; immediate: applied
        # at once (an admin's "sync this user now"); preview: counted, nothing stored.
        self.mode = mode
        self.directory = Directory(s, tenant, _ctx(tenant.id, run_id))
        self.counts: Counter[str] = Counter()
        self.staged: list[tuple[str, str, str | None]] = []
        if scope is None:  # the domains only (no group scope read from Graph)
            scope = scoping.Scope(scoping.settings_of(s.get(EntraRegistration, tenant.id))
                                  .domains)
        self.scope = scope

    def apply(self, phase: str, items: list[Any], careful: bool) -> None:
        """Apply the page's items; `careful` puts each in its own savepoint so a failing
        one (a userPrincipalName clash…) is skipped and counted."""
        with self.directory.batched_events():
            self._apply(phase, items, careful)

    def _apply(self, phase: str, items: list[Any], careful: bool) -> None:
        if phase == "users" and not careful:
            self._users_batched(items)
            return
        parse = mapping.parse_user if phase == "users" else mapping.parse_group
        apply = self._user if phase == "users" else self._group
        for item in items:
            try:
                delta = parse(item)
            except mapping.MalformedItem:
                self.counts["skipped"] += 1
                continue
            if not careful:
                apply(delta)  # type: ignore[arg-type]
                continue
            try:
                with self.s.begin_nested():
                    apply(delta)  # type: ignore[arg-type]
            except (DomainError, IntegrityError) as exc:
                self.counts["errors"] += 1
                what = getattr(exc, "message", type(exc).__name__)
                log_event(self.tenant.id, self.run_id, "item skipped",
                          f"{phase[:-1]} {delta.object_id}: {what}")
        self._flush_staged()

    def _users_batched(self, items: list[Any]) -> None:
        """The page's users with one lookup for all, and its new users created with one
        INSERT per table: an initial round is nearly all creations."""
        deltas = []
        for item in items:
            try:
                deltas.append(mapping.parse_user(item))
            except mapping.MalformedItem:
                self.counts["skipped"] += 1
        ids = [d.object_id for d in deltas]
        if len(set(ids)) != len(ids):  # the same object twice in a page: in order, one by one
            for delta in deltas:
                self._user(delta)
        else:
            found = self._prefetch(ids)
            new = []
            for delta in deltas:
                if delta.object_id in found or delta.removed is not None:
                    self._user(delta, found.get(delta.object_id))
                    continue
                fields = mapping.user_fields(delta.object_id, None, delta.changes)
                if fields is None:
                    self.counts["skipped"] += 1
                elif not self.scope.admits(delta.object_id, fields.user_name):
                    self.counts["out_of_scope"] += 1
                else:
                    new.append(fields)
            self.directory.create_users(new, self.run_id if self.full_round else None)
            self.counts["created"] += len(new)
            if self.full_round:
                self.counts["seen"] += len(new)
        self._flush_staged()

    def _remove_or_stage(self, object_id: str, action: str, user: User) -> None:
        if self.mode == "immediate":
            self.directory.remove_user(user)
            self.counts["deleted"] += 1
        else:
            self.staged.append((object_id, action, user.id))
            self.counts["delete_staged"] += 1

    def _flush_staged(self) -> None:
        if self.staged and self.mode == "round":
            _stage(self.s, self.tenant.id, self.run_id, self.staged)
        self.staged = []

    def _prefetch(self, object_ids: list[str]) -> dict[str, User]:
        """The page's known users by object id (a live one before a removed one)."""
        if not object_ids:
            return {}
        rows = self.s.scalars(select(User).where(
            User.tenant_id == self.tenant.id, User.external_id.in_(object_ids),
            User.purged_at.is_(None)).order_by(User.removed_at.is_not(None))
            .with_for_update()).all()
        found: dict[str, User] = {}
        for user in rows:
            found.setdefault(user.external_id or "", user)
        return found

    def _find_user(self, object_id: str) -> User | None:
        return self.s.scalar(
            select(User).where(User.tenant_id == self.tenant.id, User.external_id == object_id,
                               User.purged_at.is_(None))
            .order_by(User.removed_at.is_not(None)).limit(1).with_for_update())

    def _user(self, delta: mapping.UserDelta, known: User | None = None) -> None:
        user = known if known is not None else self._find_user(delta.object_id)
        if delta.removed is not None:
            if user is None or user.removed_at is not None:
                self.counts["unchanged"] += 1
            else:
                action = "hard_delete" if delta.removed == "deleted" else "soft_delete"
                self._remove_or_stage(delta.object_id, action, user)
            return
        changes = dict(delta.changes)
        stored = _stored(user) if user is not None else None
        if user is not None and user.removed_at is not None:
            self.directory.revive_user(user)
            self.counts["restored"] += 1
        disable = (self.mode != "immediate" and user is not None
                   and changes.get("accountEnabled") is False and user.idp_active is not False)
        if disable:
            changes.pop("accountEnabled")  # staged: applied when the round completes
        fields = mapping.user_fields(delta.object_id, stored, changes)
        if fields is None:
            self.counts["skipped"] += 1  # a new user without a userPrincipalName
            return
        if not self.scope.admits(delta.object_id, fields.user_name):
            if user is not None and user.removed_at is None:
                # It left the scope (its domain changed, or the scope did): like a
                # deletion, staged under the threshold.
                self._remove_or_stage(delta.object_id, "out_of_scope", user)
            else:
                self.counts["out_of_scope"] += 1
            return
        if user is None:
            user = self.directory.create_user(fields)
            self.counts["created"] += 1
        else:
            before = (user.version, user.active)
            self.directory.update_user(user, fields)
            if user.active != before[1]:
                self.counts["enabled" if user.active else "disabled"] += 1
            elif user.version != before[0]:
                self.counts["updated"] += 1
            else:
                self.counts["unchanged"] += 1
        if disable:
            self.staged.append((delta.object_id, "disable", user.id))
            self.counts["disable_staged"] += 1
        if self.full_round:
            user.seen_in_run = self.run_id
            self.counts["seen"] += 1

    def _group(self, delta: mapping.GroupDelta) -> None:
        group = self.s.scalar(select(Group).where(Group.tenant_id == self.tenant.id,
                                                  Group.external_id == delta.object_id)
                              .with_for_update())
        if delta.removed is not None:
            if group is not None:
                self.directory.remove_group(group)
                self.counts["groups_deleted"] += 1
            return
        changes: list[MemberChange] = []
        added = self._resolve([oid for oid, _ in delta.added])
        if added:
            changes.append(MemberChange("add", tuple(added)))
        gone = self._resolve(list(delta.removed_members))
        if gone:
            changes.append(MemberChange("remove", tuple(gone)))
        self.counts["members_unknown"] += (len(delta.added) + len(delta.removed_members)
                                           - len(added) - len(gone))
        if group is None:
            name = delta.display_name or delta.object_id
            group = self._create_group(name, delta.object_id)
            self.counts["groups_created"] += 1
        if delta.display_name is not None and delta.display_name != group.display_name:
            self._rename(group, delta.display_name)
        if changes:
            fields = GroupFields(display_name=group.display_name,
                                 external_id=group.external_id, data=dict(group.data or {}))
            self.directory.update_group(group, fields, changes)
            self.counts["memberships"] += len(added) + len(gone)
        if self.full_round and self.mode == "round":
            group.seen_in_run = self.run_id
            self.counts["groups_seen"] += 1
            if added:
                self.s.flush()
                self.s.execute(update(Membership).where(
                    Membership.tenant_id == self.tenant.id, Membership.group_id == group.id,
                    Membership.member_id.in_(added)).values(seen_in_run=self.run_id))

    def _create_group(self, name: str, object_id: str) -> Group:
        try:
            with self.s.begin_nested():
                return self.directory.create_group(GroupFields(name, object_id))
        except Conflict:
            # Entra allows two groups with one name; the connector does not.
            return self.directory.create_group(GroupFields(f"{name} ({object_id[:8]})",
                                                           object_id))

    def _rename(self, group: Group, name: str) -> None:
        fields = GroupFields(display_name=name, external_id=group.external_id,
                             data=dict(group.data or {}))
        try:
            with self.s.begin_nested():
                self.directory.update_group(group, fields)
        except Conflict:
            self.directory.update_group(group, GroupFields(
                f"{name} ({(group.external_id or '')[:8]})", group.external_id,
                dict(group.data or {})))

    def _resolve(self, object_ids: list[str]) -> list[str]:
        """Connector ids of the live users and groups with these Graph object ids.
        Others (devices, contacts, users out of scope) are not members here."""
        if not object_ids:
            return []
        found = dict(self.s.execute(select(User.external_id, User.id).where(
            User.tenant_id == self.tenant.id, User.external_id.in_(object_ids),
            User.removed_at.is_(None))).all())
        rest = [o for o in object_ids if o not in found]
        if rest:
            found.update(self.s.execute(select(Group.external_id, Group.id).where(
                Group.tenant_id == self.tenant.id, Group.external_id.in_(rest))).all())
        return [found[o] for o in object_ids if o in found]


# -- admin decisions and one-offs ------------------------------------------------------------


@dataclass(frozen=True)
class StartRefusal:
    reason: str
    what_to_do: str


def start_refusal(s: Session, tenant_id: str, now: dt.datetime) -> StartRefusal | None:
    """Why a round asked for now would not run (None: it would). The round itself
    checks the same again under its lease; this is for answering the admin at once."""
    tenant = s.get(Tenant, tenant_id)
    if tenant is not None and tenant.provisioning_paused:
        return StartRefusal("Provisioning is paused, so Entra ID sync does not run.",
                            "Resume provisioning, then run a round.")
    held = held_run_id(s, tenant_id)
    if held is not None:
        return StartRefusal(f"Round {held} awaits approval of its disables and deletions; "
                            "no new round runs until it is decided.",
                            "Approve or reject it, then run a round.")
    state = s.get(SyncState, tenant_id)
    if state is not None and state.lease_owner and state.lease_until and \
            state.lease_until > now:
        return StartRefusal("A round of this tenant is running already.",
                            "Follow it in the run log.")
    return None


def approve_held(s: Session, tenant: Tenant, run_id: int, now: dt.datetime) -> dict[str, int]:
    """Apply the disables/deletions a round held over the threshold (an admin approved)."""
    run = _held_run(s, tenant.id, run_id)
    applied = apply_staged(s, tenant, run_id)
    run.counts = _add(run.counts, applied)
    run.status = "succeeded"
    run.error = f"approved at {now:%Y-%m-%d %H:%M} UTC: {run.error}"
    return applied


def reject_held(s: Session, tenant_id: str, run_id: int, now: dt.datetime) -> int:
    """Drop a held round's disables/deletions (an admin rejected them). The identity
    provider's word stays recorded nowhere else: a later change, or a full round, brings
    them up again."""
    run = _held_run(s, tenant_id, run_id)
    dropped = s.query(SyncStaged).filter(SyncStaged.run_id == run_id).delete()
    run.status = "rejected"
    run.error = f"rejected at {now:%Y-%m-%d %H:%M} UTC: {run.error}"
    return int(dropped)


def _held_run(s: Session, tenant_id: str, run_id: int) -> SyncRun:
    run = s.get(SyncRun, run_id, with_for_update=True)
    if run is None or run.tenant_id != tenant_id:
        raise NotFound(f"Sync round {run_id} not found for this tenant.")
    if run.status != "awaiting_approval":
        raise StateConflict(f"Sync round {run_id} is {run.status}, not awaiting approval.")
    return run


def staged_changes(s: Session, run_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    rows = s.execute(select(SyncStaged.seq, SyncStaged.object_id, SyncStaged.action,
                            SyncStaged.user_id, User.user_name)
                     .outerjoin(User, (User.tenant_id == SyncStaged.tenant_id)
                                & (User.id == SyncStaged.user_id))
                     .where(SyncStaged.run_id == run_id).order_by(SyncStaged.seq)
                     .limit(limit)).all()
    return [{"objectId": r.object_id, "action": r.action, "userId": r.user_id,
             "userName": r.user_name} for r in rows]


def preview_round(maker: sessionmaker[Session], tenant_id: str, client: GraphClient,
                  max_pages: int = 100_000) -> RoundResult:
    """What the next round would change, without changing anything: the pages from the
    stored deltaLinks are applied in transactions that are rolled back."""
    with maker() as s:
        state = s.get(SyncState, tenant_id)
        registration = s.get(EntraRegistration, tenant_id)
        settings = scoping.settings_of(registration)
        due = registration is not None and registration.full_round_due  # see _start
        users_link = state.users_delta_link if state and not due else None
        groups_link = state.groups_delta_link if state and not due else None
    full = users_link is None
    counts: Counter[str] = Counter()
    pages = 0

    def entering(users: list[dict[str, Any]]) -> None:
        with maker() as s:
            tenant = s.get(Tenant, tenant_id)
            assert tenant is not None
            joined = [] if full else _not_synced(s, tenant_id, users)
            if joined:
                applier = PageApplier(s, tenant, 0, False, mode="preview",
                                      scope=scoping.Scope(settings.domains))
                applier.apply("users", joined, careful=True)
                counts.update(_entered(applier.counts))
            s.rollback()

    scope = scoping.read_scope(client, settings, entering)
    for phase, link in (("users", users_link or client.url(
            "users/delta", {"$select": ",".join(mapping.USER_SELECT)})),
            ("groups", groups_link or client.url(
                "groups/delta", {"$select": ",".join(mapping.GROUP_SELECT)}))):
        next_link: str | None = link
        seen: set[str] = set()
        while next_link is not None:
            if next_link in seen or pages >= max_pages:
                raise UnsafeLink("The preview met a nextLink loop or too many pages.")
            seen.add(next_link)
            page = client.get(next_link)
            with maker() as s:
                tenant = s.get(Tenant, tenant_id)
                assert tenant is not None
                applier = PageApplier(s, tenant, 0, full, mode="preview", scope=scope)
                applier.apply(phase, list(page.get("value") or []), careful=True)
                counts.update(applier.counts)
                s.rollback()
            pages += 1
            link_value = page.get("@odata.nextLink")
            next_link = client.check_link(link_value) if isinstance(link_value, str) else None
    with maker() as s:
        counts["left_scope_staged"] += len(_leavers(s, tenant_id, 0, scope))
    counts["full_round"] = int(full)
    return RoundResult(None, "preview", dict(counts), pages)


def sync_one_user(maker: sessionmaker[Session], tenant_id: str, client: GraphClient,
                  key: str) -> dict[str, int]:
    """Fetch one user from Graph (object id or userPrincipalName) and apply it now,
    disable included: an admin asked for exactly this user."""
    with maker() as s:
        settings = scoping.settings_of(s.get(EntraRegistration, tenant_id))
    scope = scoping.read_scope(client, settings)  # is the user in a chosen group?
    quoted = urllib.parse.quote(key, safe="@")
    item = client.get(client.url(f"users/{quoted}",
                                 {"$select": ",".join(("id", *mapping.USER_SELECT))}))
    with maker() as s:
        tenant = s.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"Tenant {tenant_id} not found.")
        applier = PageApplier(s, tenant, 0, False, mode="immediate", scope=scope)
        applier.apply("users", [item], careful=True)
        s.commit()
    return dict(applier.counts)
