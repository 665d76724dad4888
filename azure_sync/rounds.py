"""Sync rounds: read Graph delta pages and apply them through the directory.

A round reads `/users/delta` then `/groups/delta`, each from its stored deltaLink (or
from scratch: a full round). Every page is applied in ONE transaction together with the
cursor that follows it, so a process killed at any moment resumes from the last page it
committed: a page is applied again at worst, and applying is an idempotent upsert by
Graph object id (`azure_sync.applier`). The deltaLinks replace the old ones only when
the round completes.

Only the process holding the tenant's lease (`azure_sync.lease`) runs its round, and it
checks that it still does before every page. Destructive changes wait for the round's
end, under the tenant's threshold (`azure_sync.staging`). Every write of a round takes
its time from the round's clock (`RoundOptions.clock`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from azure_sync import (
    ahead,
    attribute_maps,
    cursor,
    lease,
    mapping,
    memberships,
    pending,
    pipeline,
    reapply,
    staging,
    writer,
)
from azure_sync import scope as scoping
from azure_sync.applier import apply_page, entered_counts, not_synced
from azure_sync.errors import ResyncRequired, SyncError, UnsafeLink
from azure_sync.graph import GraphClient
from azure_sync.lease import LeaseLost
from connector import db, events, metrics
from connector.clock import now as wall_clock
from connector.events import WriteContext
from connector.models import EntraRegistration, SyncRun, SyncState, Tenant


@dataclass
class RoundResult:
    run_id: int | None
    status: str  # succeeded | failed | awaiting_approval | skipped | busy | preview
    counts: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RoundOptions:
    lease_seconds: int = 300
    max_pages: int = 100_000
    quarantine_after: int = 5
    # Who holds the lease: host and process id (an operator sees which process runs a
    # round), and a token of this round's own.
    owner: str = field(default_factory=lambda: lease.owner_name())
    # Where the round takes its time from: the lease, the run log and every event it
    # writes (tests pass a fixed clock, or one past a lease).
    clock: Callable[[], dt.datetime] = wall_clock
    # Test seam: called after each committed page (index, phase); a crash test kills
    # the process here to prove a round resumes.
    after_page: Callable[[int, str], None] | None = None
    # Read the next users or groups page while this one applies (`azure_sync.ahead`).
    read_ahead: bool = True
    # Commit a full round's pages of new users in a writer process while the next page
    # is built (`azure_sync.pipeline`).
    pipeline: bool = True
    # Start a new round only if the tenant's last one started before this instant
    # (checked under the lease; an open round is resumed whatever it says). The
    # scheduler's once-per-interval rule: another process may have run the round
    # between its first look and the lease.
    started_before: dt.datetime | None = None
    # When the scheduler's job for this round was due (it may start later, waiting for
    # a thread): a new round counts from then (`last_started_at`), so a round that ran
    # late does not push the tenant's next one back (azure_sync.scheduler).
    due_at: dt.datetime | None = None


def add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    total = Counter(a)
    total.update(b)
    return dict(total)


# -- the round ------------------------------------------------------------------------------


def run_round(maker: sessionmaker[Session], tenant_id: str, client: GraphClient,
              options: RoundOptions, trigger: str = "schedule") -> RoundResult:
    """Run (or resume) one round for the tenant. Never raises for Graph trouble: the
    result and the run log say what happened."""
    started = time.perf_counter()
    result = "crashed"
    try:
        outcome = _run_round(maker, tenant_id, client, options, trigger)
        result = outcome.status
        return outcome
    finally:
        metrics.sync_round(result, time.perf_counter() - started)


def _run_round(maker: sessionmaker[Session], tenant_id: str, client: GraphClient,
               options: RoundOptions, trigger: str) -> RoundResult:
    lease.ensure_state(maker, tenant_id)
    with maker() as s:
        now = options.clock()
        if not lease.take_lease(s, tenant_id, options.owner, now, options.lease_seconds):
            return RoundResult(None, "busy", error=_busy(s, tenant_id))
        s.commit()
    try:
        return _run_leased(maker, tenant_id, client, options, trigger)
    finally:
        with maker() as s:
            lease.release_lease(s, tenant_id, options.owner)
            s.commit()


def _busy(s: Session, tenant_id: str) -> str:
    state = s.get(SyncState, tenant_id)
    until = state.lease_until if state is not None else None
    holder = state.lease_owner.rsplit(":", 1)[0] if state and state.lease_owner else ""
    return (f"Another process{f' ({holder})' if holder else ''} holds this tenant's "
            "round" + (
        f" until {until:%H:%M:%S} UTC (renewed with every page; if that process stopped, "
        "the round resumes after then)." if until else "."))


def _run_leased(maker: sessionmaker[Session], tenant_id: str, client: GraphClient,
                options: RoundOptions, trigger: str) -> RoundResult:
    with maker() as s:
        tenant = s.get(Tenant, tenant_id)
        state = s.get(SyncState, tenant_id)
        assert tenant is not None and state is not None
        if tenant.provisioning_paused:
            return RoundResult(None, "skipped", error="Provisioning is paused.")
        if tenant.closed_at is not None:
            return RoundResult(None, "skipped", error="The tenant is closed.")
        held = staging.held_run_id(s, tenant_id)
        if held is not None:
            return RoundResult(held, "skipped", error=f"Round {held} awaits an admin's "
                               "approval of its deletions; no new round runs until then.")
        run = s.get(SyncRun, state.run_id) if state.run_id is not None else None
        if run is None and _started_since(state, options.started_before):
            return RoundResult(None, "skipped", error=(
                f"Not due: a round started at {state.last_started_at:%H:%M:%S} UTC "
                "(another process ran this interval's round)."))
        if run is None:
            _start(s, state, client, options.clock(), trigger)
            if options.due_at is not None and state.last_started_at is not None:
                # A late round counts from when it was due (azure_sync.scheduler).
                state.last_started_at = min(state.last_started_at, options.due_at)
        else:  # a round a crash or a failure interrupted: carry on from its cursor
            _resume(s, state, run, options, trigger)
        run_id = state.run_id
        s.commit()
    assert run_id is not None
    try:
        return _guarded_pages(maker, tenant_id, run_id, client, options, may_resync=True)
    except ResyncRequired as exc:
        writer.log_event(tenant_id, run_id, "resync", exc.message)
        run_id = _restart_full(maker, tenant_id, run_id, client, options, exc.message)
        return _guarded_pages(maker, tenant_id, run_id, client, options, may_resync=False)


def _started_since(state: SyncState, cutoff: dt.datetime | None) -> bool:
    return (cutoff is not None and state.last_started_at is not None
            and state.last_started_at > cutoff)


def _resume(s: Session, state: SyncState, run: SyncRun, options: RoundOptions,
            trigger: str) -> None:
    """Go on with an interrupted round in a new run row of the same round, so the run
    log keeps both: the one that failed (or whose process died) and this one."""
    now = options.clock()
    died = run.status == "running"
    if died:
        # We hold the lease, so the process that ran it let its lease expire: it died
        # (killed, out of memory, the machine stopped). A failure like any other.
        run.status, run.finished_at = "failed", now
        run.error = ("The process running this round stopped before it finished (its "
                     "lease expired).")
        _count_failure(state, now, options)
    resumed = SyncRun(tenant_id=run.tenant_id, kind=run.kind, status="running",
                      trigger=trigger, started_at=now, pages=0, counts={},
                      round_id=run.round_key)
    s.add(resumed)
    s.flush()
    run.error = f"{run.error or 'Interrupted.'} The round went on in run {resumed.id}."
    state.run_id = resumed.id
    # Taken over from a dead process, the round is still the one of the interval it
    # started in: the next one is due an interval after that start, not after the
    # takeover (which would skip an interval). Unless this death quarantined the tenant:
    # its once-a-day retries count from now.
    quarantined = state.quarantined_until is not None and state.quarantined_until > now
    if not died or quarantined or state.last_started_at is None:
        state.last_started_at = now


def _count_failure(state: SyncState, now: dt.datetime, options: RoundOptions) -> None:
    state.failures += 1
    if state.failures >= options.quarantine_after:
        state.quarantined_until = now + dt.timedelta(days=1)


def _restart_full(maker: sessionmaker[Session], tenant_id: str, run_id: int,
                  client: GraphClient, options: RoundOptions, reason: str) -> int:
    """Graph forgot the delta state: close the run as `replaced` and start a full round
    from scratch in its place; return its run id. Graph's resync is normal and handled,
    not a failure: it counts toward neither quarantine nor the failure notifications,
    and the run's note names the run that replaced it."""
    with maker() as s:
        state = s.get(SyncState, tenant_id)
        assert state is not None
        now = options.clock()
        _finish(s, run_id, "replaced", now, reason)
        state.users_delta_link = state.groups_delta_link = None
        state.run_id = None
        _start(s, state, client, now, "resync")
        new_run_id = state.run_id
        replaced = s.get(SyncRun, run_id)
        if replaced is not None:
            replaced.error = f"{reason} Run {new_run_id} replaced this one."
        s.commit()
    assert new_run_id is not None
    return new_run_id


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
    except Exception as exc:
        # A fault of the connector itself (a bug, the database gone): the round fails
        # like any other, with its reason, counts toward quarantine, and resumes from
        # its last committed page. The traceback goes to the log, not to the admin.
        writer.log.exception("sync round %s of tenant %s crashed", run_id, tenant_id)
        return _failed(maker, tenant_id, run_id, SyncError(
            f"The round stopped on an internal error of the connector "
            f"({type(exc).__name__}: {str(exc)[:300]}); it resumes from its last "
            "committed page at the next round."), options)


def _lost(tenant_id: str, run_id: int, exc: LeaseLost) -> RoundResult:
    """Step aside without touching the round or the state: they are the new holder's."""
    writer.log_event(tenant_id, run_id, "lease lost", exc.message)
    return RoundResult(run_id, "busy", error=exc.message)


def _start(s: Session, state: SyncState, client: GraphClient, now: dt.datetime,
           trigger: str) -> None:
    """Open a new round in the run log and put the cursor at its start: a full round
    when there is no users deltaLink yet, or the registration's scope widened."""
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
    state.last_started_at = now
    cursor.start(state, client, full)


# -- its pages ------------------------------------------------------------------------------


def _pages(maker: sessionmaker[Session], tenant_id: str, run_id: int, client: GraphClient,
           options: RoundOptions) -> RoundResult:
    """Read and apply the round's pages from its cursor on, then complete it."""
    scope = _round_scope(maker, tenant_id, run_id, client, options)
    seen_links: set[str] = set()
    pages = 0
    reader = ahead.PageAhead(client, cursor.read_page)
    rules: mapping.Rules | None = None  # the tenant's mapping, to prepare users ahead
    writer_ = pipeline.PageWriter(maker.kw["bind"]) if options.pipeline else None
    piped = writer_ is not None and writer_.possible  # off for good once refused

    def committed(phase: str, full: bool) -> None:
        nonlocal pages
        pages += 1
        if full and phase == "users" and pages in REFRESH_STATISTICS_AT:
            _refresh_statistics(maker)
        if options.after_page is not None:
            options.after_page(pages, phase)

    def settle() -> bool:
        """Wait for the page in flight; a page the writer could not commit is applied
        here, the ordinary way. Returns whether the writer's page stands."""
        nonlocal piped
        assert writer_ is not None
        done = writer_.wait()
        if done is None:
            return True
        captured, answer, detail = done
        if answer == "lease":
            raise LeaseLost("This process lost the tenant's lease (it stalled past it); "
                            "the process that took it over carries on.")
        if answer != "ok":
            writer.log_event(tenant_id, run_id, "page applied again by the round",
                             f"the page writer could not commit it: {detail}")
            piped = False
            writer_.close()
            _commit_page(maker, tenant_id, run_id, client, options, scope, "users",
                         captured.page)
            committed("users", True)
            return False
        committed("users", True)
        return True

    try:
        while True:
            in_flight = writer_.in_flight if writer_ is not None else None
            if in_flight is not None:  # the cursor as that page leaves it
                phase, link, full = in_flight.cursor["phase"], in_flight.cursor["next_link"], True
            else:
                with maker() as s:
                    state = lease.held_state(s, tenant_id, run_id, options.owner)
                    phase, link, full = state.phase, state.next_link, state.full_round
                    if options.read_ahead and phase == "users" and rules is None:
                        rules = attribute_maps.rules_for(s, tenant_id)
            if phase != "users" and writer_ is not None:
                if in_flight is not None:
                    settle()
                    writer_.close()
                    continue  # read the cursor as committed
                writer_.close()  # the users are written: the writer is done
            if phase == "done":
                reader.close()
                _join_groups(maker, tenant_id, run_id, client, options)
                result = _complete(maker, tenant_id, run_id, options, scope)
                if result.status == "succeeded":
                    result.counts = _join_late(maker, tenant_id, run_id, client, options,
                                               result.counts)
                result.counts = _note_retries(maker, run_id, client, result.counts)
                return result
            assert link is not None and phase in ("users", "groups")
            cursor.check_link(link, seen_links, pages, options.max_pages)
            seen_links.add(link)
            page = reader.take(link) or cursor.read_page(client, link)
            if options.read_ahead and page.next_link and page.next_link not in seen_links:
                reader.start(page.next_link, rules if phase == "users" else None)
            if (piped and full and phase == "users" and len(page.items) >= pipeline.MIN_ITEMS
                    and not pipeline.has_managers(page.items)):
                assert writer_ is not None
                keys = pipeline.page_keys(page.items)
                if in_flight is not None and in_flight.keys & keys:
                    settle()  # this page names one of that page's users: after its commit
                    in_flight = None
                try:
                    captured = _capture_page(maker, tenant_id, run_id, client, options,
                                             scope, page, keys, in_flight)
                except pipeline.NotCapturable as exc:
                    writer.log_event(tenant_id, run_id, "pipeline off",
                                     f"a page the round writes itself: {exc}")
                    piped = False
                    captured = None
                stands = settle()  # the page in flight, committed before this one
                if captured is None or not stands:
                    # Not capturable; or the page in flight had to be applied here, and
                    # this one was built on what the writer's commit would have left.
                    _commit_page(maker, tenant_id, run_id, client, options, scope, phase, page)
                    committed(phase, full)
                else:
                    writer_.send(captured)
                continue
            if writer_ is not None and writer_.in_flight is not None:
                settle()
            _commit_page(maker, tenant_id, run_id, client, options, scope, phase, page)
            committed(phase, full)
    finally:
        reader.close()
        if writer_ is not None:
            try:
                if writer_.in_flight is not None:
                    writer_.wait()  # committed whole with its cursor, or not at all
            finally:
                writer_.close()


def _capture_page(maker: sessionmaker[Session], tenant_id: str, run_id: int,
                  client: GraphClient, options: RoundOptions, scope: scoping.Scope,
                  page: cursor.Page, keys: frozenset[str],
                  in_flight: pipeline.Captured | None) -> pipeline.Captured:
    """Apply a users page of a full round with its writes captured (the writer process
    commits them); the cursor and the run's counts continue from the page in flight."""
    with pipeline.capturing(maker) as (s, ops):
        state = lease.held_state(s, tenant_id, run_id, options.owner)
        tenant = s.get(Tenant, tenant_id)
        run = s.get(SyncRun, run_id)
        assert tenant is not None and run is not None
        moved = SyncState(tenant_id=tenant_id, full_round=state.full_round, **(
            in_flight.cursor if in_flight is not None
            else {c: getattr(state, c) for c in pipeline.CURSOR_COLUMNS}))
        pages, counts = ((in_flight.pages, in_flight.counts) if in_flight is not None
                         else (run.pages, dict(run.counts or {})))
        now = options.clock()
        applier = apply_page(s, tenant, run_id, True, "users", page.items, scope, now,
                             round_key=run.round_key, prepared=page.prepared)
        if (set(applier.counts) - pipeline.CLEAN_COUNTS or applier.failed or applier.kept
                or applier.joined):
            raise pipeline.NotCapturable(f"not only new users ({dict(applier.counts)})")
        cursor.advance(moved, client, "users", page)
        after = {c: getattr(moved, c) for c in pipeline.CURSOR_COLUMNS}
        counts = add_counts(counts, applier.counts)
        if scope.missing_groups:
            counts = {**counts, "scope_groups_missing": len(scope.missing_groups)}
        page_ops = list(ops)
        del ops[:]
        # The lease's check first: its row lock is held until the writer commits.
        s.execute(pipeline.state_update(tenant_id, run_id, options.owner, after,
                                        now + dt.timedelta(seconds=options.lease_seconds)))
        s.execute(pipeline.run_update(run_id, pages + 1, counts))
        if len(ops) != 2:
            raise pipeline.NotCapturable("the cursor's update was not captured")
        lease_op = (*ops[0][:3], True)
        return pipeline.Captured(page, [lease_op, *page_ops, ops[1]], keys, after,
                                 pages + 1, counts)


def _commit_page(maker: sessionmaker[Session], tenant_id: str, run_id: int,
                 client: GraphClient, options: RoundOptions, scope: scoping.Scope,
                 phase: str, page: cursor.Page) -> None:
    """Apply the page and move the cursor past it in one transaction, if the lease is
    still ours (held locked until the commit, so no other process takes it meanwhile)."""
    with maker() as s:
        db.commit_without_waiting_for_disk(s)  # a page lost in a crash is read again
        state = lease.held_state(s, tenant_id, run_id, options.owner, lock=True)
        tenant = s.get(Tenant, tenant_id)
        run = s.get(SyncRun, run_id)
        assert tenant is not None and run is not None
        applier = apply_page(s, tenant, run_id, state.full_round, phase, page.items, scope,
                             options.clock(), round_key=run.round_key,
                             prepared=page.prepared)
        cursor.advance(state, client, phase, page)
        run.pages += 1
        run.counts = add_counts(run.counts, applier.counts)
        if scope.missing_groups:
            run.counts = {**run.counts, "scope_groups_missing": len(scope.missing_groups)}
        # From the end of the page: applying it may have taken a while.
        lease.renew_lease(state, options.clock(), options.lease_seconds)
        s.commit()


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
            state = lease.held_state(s, tenant_id, run_id, options.owner, lock=True)
            now = options.clock()
            lease.renew_lease(state, now, options.lease_seconds)
            entering = [] if full else not_synced(s, tenant_id, users)
            if entering:
                tenant = s.get(Tenant, tenant_id)
                run = s.get(SyncRun, run_id)
                assert tenant is not None and run is not None
                applier = apply_page(s, tenant, run_id, False, "users", entering,
                                     domains_only, now, round_key=run.round_key)
                run.counts = add_counts(run.counts, entered_counts(applier.counts))
            s.commit()

    return scoping.read_scope(client, settings, renew_and_apply)


# A full round loads many users into a small table: PostgreSQL planned the foreign-key
# checks of user_values while users was nearly empty (a sequential scan) and kept that
# plan, so each page's check read every user and pages grew slower as the round went
# on. ANALYZE at these page counts refreshes the statistics, which also drops the
# cached plans. user_search_words too: never analysed, the next round's DELETE (now a
# read) of the changed users' words scanned the tenant's words (235 ms for 800 users at 50,000,
# 14 ms once analysed; docs/benchmarks.md, "Incremental round: one UPDATE a page").
# Only in full rounds: an incremental round changes a few rows, and
# ANALYZE of a large table would cost it more than its changes (figures in
# docs/benchmarks.md, "Measurements behind the code").
REFRESH_STATISTICS_AT = frozenset({2, 10, 50, 250, 1250, 6250})


def _refresh_statistics(maker: sessionmaker[Session]) -> None:
    with maker() as s:
        if s.get_bind().dialect.name != "postgresql":
            return
        for table in ("users", "user_values", "user_search_words", "events"):
            s.execute(text(f"ANALYZE {table}"))
        s.commit()


# -- its end --------------------------------------------------------------------------------


def _join_groups(maker: sessionmaker[Session], tenant_id: str, run_id: int,
                 client: GraphClient, options: RoundOptions, completed: bool = False
                 ) -> dict[str, int]:
    """The users new to the connector this round (or waiting since an earlier one) get
    their memberships of the groups the connector syncs."""
    def hold(s: Session) -> None:
        if completed:  # the round is at rest: only the lease is still ours
            state = s.get(SyncState, tenant_id, with_for_update=True)
            if state is None or state.lease_owner != options.owner:
                raise LeaseLost("This process lost the tenant's lease.")
        else:
            state = lease.held_state(s, tenant_id, run_id, options.owner, lock=True)
        lease.renew_lease(state, options.clock(), options.lease_seconds)

    joined = memberships.join_groups(maker, tenant_id, run_id, client, options.clock, hold)
    if joined:
        with maker() as s:
            run = s.get(SyncRun, run_id)
            assert run is not None
            run.counts = add_counts(run.counts, joined)
            s.commit()
    return joined


def _note_retries(maker: sessionmaker[Session], run_id: int, client: GraphClient,
                  counts: dict[str, int]) -> dict[str, int]:
    """The run's counts with the requests it had to try again (Graph throttling, 5xx,
    timeouts, the sign-in service) and the seconds it waited for them: why a round
    that succeeded took long."""
    if not client.retries:
        return counts
    spent = {"retries": client.retries, "retry_wait_seconds": round(client.waited)}
    with maker() as s:
        run = s.get(SyncRun, run_id)
        if run is not None:
            run.counts = add_counts(run.counts, spent)
            s.commit()
    return add_counts(counts, spent)


def _join_late(maker: sessionmaker[Session], tenant_id: str, run_id: int,
               client: GraphClient, options: RoundOptions, counts: dict[str, int]
               ) -> dict[str, int]:
    """After the round completed: the groups of users its end created (re-hires whose
    name the staged deletions freed). Best effort: a failure here leaves them waiting
    for the next round, and the completed round stays completed."""
    try:
        return add_counts(counts, _join_groups(maker, tenant_id, run_id, client, options,
                                               completed=True))
    except (SyncError, LeaseLost) as exc:
        writer.log_event(tenant_id, run_id, "memberships left for the next round",
                         exc.message)
        return counts


def _earlier_counts(s: Session, run: SyncRun) -> dict[str, int]:
    """What the earlier runs of the same round counted (a resumed round's sweep must
    know what the whole round saw)."""
    if run.round_id is None:
        return {}
    total: dict[str, int] = {}
    for counts in s.scalars(select(SyncRun.counts).where(
            SyncRun.tenant_id == run.tenant_id, SyncRun.id != run.id,
            func.coalesce(SyncRun.round_id, SyncRun.id) == run.round_id)):
        total = add_counts(total, counts or {})
    return total


def _complete(maker: sessionmaker[Session], tenant_id: str, run_id: int,
              options: RoundOptions, scope: scoping.Scope) -> RoundResult:
    """The round has read everything: retry what its pages could not apply, sweep (full
    rounds), then apply the staged destructive changes or hold them over the threshold,
    and retry once more (names the deletions freed)."""
    with maker() as s:
        state = s.get(SyncState, tenant_id, with_for_update=True)
        tenant = s.get(Tenant, tenant_id)
        run = s.get(SyncRun, run_id)
        registration = s.get(EntraRegistration, tenant_id)
        assert state is not None and tenant is not None and run is not None
        now = options.clock()
        key, full = run.round_key, state.full_round
        counts = dict(run.counts)
        whole = add_counts(_earlier_counts(s, run), counts)
        counts = _stage_round_end(s, state, tenant, key, scope, counts, whole, now)
        counts = add_counts(counts, reapply.settle(s, tenant, run_id, key, full, scope, now,
                                                   before_staged=True))
        held = staging.hold_reason(s, tenant_id, key, registration)
        _put_to_rest(state)
        state.failures = 0
        if held is not None:
            counts = _with_kept(s, tenant_id, counts)
            run.counts, run.status, run.error = counts, "awaiting_approval", held
            run.finished_at = now
            _record_round(s, run, events.SYNC_ROUND_HELD, now, held)
            s.commit()
            writer.log_event(tenant_id, run_id, "held", held)
            return RoundResult(run_id, "awaiting_approval", counts, run.pages, held)
        counts = add_counts(counts, staging.apply_staged(s, tenant, key, now, by_run=run_id))
        counts = add_counts(counts, reapply.settle(s, tenant, run_id, key, full, scope, now))
        # What those retries staged (a kept user's disable) applies with the round too.
        counts = add_counts(counts, staging.apply_staged(s, tenant, key, now, by_run=run_id))
        counts = _with_kept(s, tenant_id, counts)
        # Set after applying: its flush would otherwise write the run row twice.
        run.counts, run.status, run.finished_at = counts, "succeeded", now
        state.quarantined_until = None
        state.last_success_at = now
        _record_round(s, run, events.SYNC_ROUND_COMPLETED, now)
        s.commit()
        writer.log_event(tenant_id, run_id, "succeeded", str(counts))
        return RoundResult(run_id, "succeeded", counts, run.pages)


def _record_round(s: Session, run: SyncRun, kind: str, now: dt.datetime,
                  held: str | None = None) -> None:
    """The round's end as an event, in the transaction that ends it."""
    # Its own correlation id: "sync-run:N" names the directory changes the round made.
    ctx = writer.write_context(run.tenant_id, run.id, now)
    record_round_end(s, dataclasses.replace(ctx, correlation_id=f"sync-run-end:{run.id}"),
                     run, kind, "held" if held is not None else "applied", held)


def record_round_end(s: Session, ctx: WriteContext, run: SyncRun, kind: str, outcome: str,
                     held: str | None = None) -> None:
    """The event feed's sync.round_held / sync.round_completed for `run`. `outcome`:
    held, applied (in one go), approved or rejected (an admin's decision on a held
    round's disables and deletions)."""
    value: dict[str, Any] = {"runId": run.id, "roundKind": run.kind, "trigger": run.trigger,
                             "outcome": outcome, "counts": dict(run.counts or {})}
    if held is not None:
        value["reason"] = held
    events.record(s, ctx, "tenant", run.tenant_id, kind, None, value)


def _with_kept(s: Session, tenant_id: str, counts: dict[str, int]) -> dict[str, int]:
    """The run's counts with how many items stay kept for later rounds."""
    kept = pending.kept_count(s, tenant_id)
    counts = {k: v for k, v in counts.items() if k != "kept"}
    return {**counts, "kept": kept} if kept else counts


def _stage_round_end(s: Session, state: SyncState, tenant: Tenant, round_key: int,
                     scope: scoping.Scope, counts: dict[str, int], whole: dict[str, int],
                     now: dt.datetime) -> dict[str, int]:
    """Stage what only the whole round shows: the users who left the group scope, and
    after a full round those it did not see; remove the groups it did not list.
    `whole`: the counts of the whole round (all its runs), which gate the sweeps."""
    leavers = staging.leavers(s, tenant.id, round_key, scope)
    if leavers:
        staging.stage(s, tenant.id, round_key, leavers)
        counts = add_counts(counts, {"left_scope_staged": len(leavers)})
    if state.full_round:
        counts = add_counts(counts, staging.sweep_groups(s, tenant, round_key, whole, now))
        counts["sweep_staged"] = staging.stage_sweep(s, tenant.id, round_key, whole)
    return counts


def _put_to_rest(state: SyncState) -> None:
    """The round is over: its users' deltaLink becomes the one the next round reads."""
    state.users_delta_link = state.pending_users_delta_link or state.users_delta_link
    state.pending_users_delta_link = None
    state.run_id = None
    state.phase = None
    state.next_link = None


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
        _count_failure(state, now, options)
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
    writer.log_event(tenant_id, run_id, "failed", exc.message)
    return RoundResult(run_id, "failed", counts, pages, exc.message)


def _finish(s: Session, run_id: int, status: str, now: dt.datetime, error: str | None) -> None:
    run = s.get(SyncRun, run_id)
    if run is not None:
        run.status, run.finished_at, run.error = status, now, error
        staging.drop_staged(s, run.round_key)
