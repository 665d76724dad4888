"""Crash safety of sync rounds (issue 5): a round killed with SIGKILL at every page
boundary, in the middle of applying a page, or around the round's end, resumes to the
final state of an uninterrupted round. Three rounds are killed that way: an initial
(full) one, an incremental one with every kind of change, and a resync (full, sweeping).

The fakes (Entra, Graph) serve from this process; the round that dies runs in a child
process (tests/azure_sync/crash_child.py: one interpreter per module, a fork per job)
against the same database. Every kill point gets its own connector tenant, synced from
the same fake directory as a reference tenant whose round nobody interrupts; after the
resume, the two must hold the same users (by Graph object id: status, deleted-users
list, guest, profile, indexed values, version), the same groups and memberships, the
same run log, and the same event history: one user.created per user, no status change
recorded twice, every event once and in the same order. The next round must then have
nothing to do.

A killed child leaves the tenant's lease held: the test first checks that a run at the
real clock is refused as busy, then resumes on a clock past the lease (nobody sleeps).

At the end, rounds that stall past their lease instead of dying (run in this process).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import select as select_module
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from azure_sync import rounds, secrets
from azure_sync.service import SyncService, register
from connector.config import AzureSyncSettings
from connector.db import make_sessionmaker
from connector.events import WriteContext
from connector.models import (
    Event,
    Group,
    Membership,
    SyncRun,
    SyncStaged,
    SyncState,
    TenantCounter,
    User,
    UserValue,
)
from connector.status import Source
from tests.conftest import make_tenant
from tests.fakes.directory import Directory as FakeDirectory
from tests.fakes.fixtures import FakeApp
from tests.fakes.graph import FakeGraph
from tests.fakes.tls import LoopbackTLS

# Child processes killed with SIGKILL at every kill point.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 60  # the child's; the resume runs on a clock past it, nobody sleeps
JOB_TIMEOUT = 60.0
KillPoint = tuple[str, int | None]  # (kill, page): see crash_child.py
# Status changes: recorded twice would bill twice.
STATUS_KINDS = ("user.status", "user.deleted_list", "user.idp_status")


def kill_points(pages: int) -> list[KillPoint]:
    """Every page boundary, the middle of every page, and both sides of the round's end."""
    return ([("after_page", n) for n in range(1, pages + 1)]
            + [("in_page", n) for n in range(1, pages + 1)]
            + [("in_complete", None), ("after_complete", None)])


# -- the child process ----------------------------------------------------------------


class Crasher:
    """`python -m tests.azure_sync.crash_child`: runs jobs, each in a fork that dies."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.azure_sync.crash_child"], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            start_new_session=True)
        self.queued: list[dict[str, Any]] = []
        self.pending = b""  # read from stdout, not yet a whole line
        self.read_up_to = 0

    def submit(self, job: dict[str, Any]) -> None:
        """Queue a job: the child runs jobs one after another, in order."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(job).encode() + b"\n")
        self.process.stdin.flush()
        self.queued.append(job)

    def next_result(self) -> tuple[dict[str, Any], str]:
        """How the oldest queued job's fork ended, and what the child wrote to stderr
        meanwhile."""
        job = self.queued.pop(0)
        line = self._read_line()
        output = self.output_since(self.read_up_to)
        if line is None:
            self.stop(force=True)
            raise AssertionError(f"the crash child did not finish {job} in {JOB_TIMEOUT} s:"
                                 f"\n{output}")
        if not line:
            raise AssertionError(f"the crash child died:\n{output}")
        return json.loads(line), output

    def _read_line(self) -> bytes | None:
        """The child's next line (b"" at its end), None after JOB_TIMEOUT. Read from the
        pipe unbuffered: several lines may be waiting when the test gets to them."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + JOB_TIMEOUT
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select_module.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return b""
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line

    def drain(self) -> None:
        """Wait for the jobs still queued (a test that failed early left them)."""
        while self.queued and self.process.poll() is None:
            self.next_result()

    def output_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            text = f.read()
        self.read_up_to = offset + len(text)
        return text.decode(errors="replace")[-4000:]

    def stop(self, force: bool = False) -> None:
        if force and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the session it leads: ours only
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()


@pytest.fixture(scope="module")
def crasher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crasher]:
    crasher = Crasher(tmp_path_factory.mktemp("crash") / "child.log")
    try:
        yield crasher
    finally:
        crasher.stop()


# -- the state a round leaves -----------------------------------------------------------


@dataclass
class Snapshot:
    """A tenant's synced state, keyed by Graph object ids (connector ids differ)."""

    users: dict[str, dict[str, Any]]
    groups: dict[str, dict[str, Any]]
    events: list[tuple[str, str, Any, Any]]  # (subject, kind, old, new) in id order
    runs: list[dict[str, Any]]  # one per round: its runs folded together
    live_users: int
    counter: int | None
    duplicates: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    run_rows: list[dict[str, Any]] = field(default_factory=list)  # every run, unfolded

    def by_subject(self) -> dict[str, list[tuple[str, Any, Any]]]:
        found: dict[str, list[tuple[str, Any, Any]]] = defaultdict(list)
        for subject, kind, old, new in self.events:
            found[subject].append((kind, old, new))
        return found


def snapshot(engine: Engine, tenant_id: str) -> Snapshot:
    with make_sessionmaker(engine)() as s:
        runs = list(s.scalars(select(SyncRun).where(SyncRun.tenant_id == tenant_id)
                              .order_by(SyncRun.id)))
        rounds_in_order = list(dict.fromkeys(run.round_key for run in runs))
        ordinal = {key: i for i, key in enumerate(rounds_in_order)}
        users = list(s.scalars(select(User).where(User.tenant_id == tenant_id)))
        groups = list(s.scalars(select(Group).where(Group.tenant_id == tenant_id)))
        keys = {u.id: f"user {u.external_id}" for u in users}
        keys.update({g.id: f"group {g.external_id}" for g in groups})
        events = list(s.scalars(select(Event).where(
            Event.tenant_id == tenant_id, Event.subject_type.in_(("user", "group")))
            .order_by(Event.id)))
        for event in events:  # a removed group's row is gone: name it by its creation
            if event.subject_id not in keys and event.kind == "group.created":
                keys[event.subject_id] = f"deleted group {event.new_value['displayName']}"
        values: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for v in s.scalars(select(UserValue).where(UserValue.tenant_id == tenant_id)):
            values[v.user_id].append((v.attr, v.position, v.value, v.value_norm, v.type,
                                      v.primary, v.display, json.dumps(v.data, sort_keys=True)))
        members: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for m in s.scalars(select(Membership).where(Membership.tenant_id == tenant_id)):
            members[m.group_id].add((keys.get(m.member_id, f"unknown {m.member_id}"),
                                     m.member_type))
        state = s.get(SyncState, tenant_id)
        staged = list(s.scalars(select(SyncStaged).where(SyncStaged.tenant_id == tenant_id)))
        counter = s.get(TenantCounter, tenant_id)
        seen = Counter(u.external_id for u in users)
        leftovers = [f"{len(staged)} staged changes left"] if staged else []
        if state is None or (state.run_id, state.phase, state.next_link, state.lease_owner,
                             state.pending_users_delta_link) != (None,) * 5:
            leftovers.append(f"sync state not at rest: {_row(state)}")
        if state is not None and not state.users_delta_link:
            leftovers.append("no users deltaLink stored")
        return Snapshot(
            users={u.external_id or "": {
                "user_name": u.user_name, "display_name": u.display_name, "active": u.active,
                "idp_active": u.idp_active, "in_deleted_list": u.in_deleted_list,
                "guest": u.guest, "external_company_guest": u.external_company_guest,
                "admin": u.admin, "origin": u.origin, "removed": u.removed_at is not None,
                "purged": u.purged_at is not None, "version": u.version,
                "seen_in_run": ordinal.get(u.seen_in_run, u.seen_in_run),
                "data": json.dumps(u.data, sort_keys=True), "values": sorted(values[u.id]),
            } for u in users},
            groups={g.external_id or "": {
                "display_name": g.display_name, "origin": g.origin, "version": g.version,
                "data": json.dumps(g.data, sort_keys=True), "members": sorted(members[g.id]),
            } for g in groups},
            events=[(keys.get(e.subject_id, e.subject_id), e.kind, _named(e.old_value, keys),
                     _named(e.new_value, keys)) for e in events],
            runs=_folded(runs),
            run_rows=[{"kind": r.kind, "status": r.status, "trigger": r.trigger,
                       "pages": r.pages, "counts": r.counts, "error": r.error} for r in runs],
            live_users=sum(1 for u in users if u.removed_at is None),
            counter=counter.live_users if counter else None,
            duplicates=[f"{n} user rows for object {oid}" for oid, n in seen.items() if n > 1],
            leftovers=leftovers)


def _folded(runs: list[SyncRun]) -> list[dict[str, Any]]:
    """The run log by round: a round resumed after a kill goes on in a new run row (both
    stay in the log); together they did what one uninterrupted run does."""
    by_round: dict[int, list[SyncRun]] = defaultdict(list)
    for run in runs:
        by_round[run.round_key].append(run)
    folded = []
    for parts in by_round.values():
        counts: Counter[str] = Counter()
        for part in parts:
            counts.update(part.counts)
        folded.append({"kind": parts[0].kind, "status": parts[-1].status,
                       "trigger": parts[0].trigger, "pages": sum(p.pages for p in parts),
                       "counts": dict(counts), "error": _without_run_ids(parts[-1].error)})
    return folded


def _without_run_ids(error: str | None) -> str | None:
    """A run's note with the run ids it names ("Run 12 replaced this one.") blanked:
    two histories number their runs differently."""
    return None if error is None else re.sub(r"\b([Rr]un) \d+\b", r"\1 N", error)


def _named(value: Any, keys: dict[str, str]) -> Any:
    """An event value with connector ids (member events) replaced by Graph object ids."""
    if isinstance(value, str):
        return keys.get(value, value)
    if isinstance(value, list):
        return [_named(v, keys) for v in value]
    if isinstance(value, dict):
        return {k: _named(v, keys) for k, v in value.items()}
    return value


def _row(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    return {c.key: getattr(row, c.key) for c in row.__table__.columns
            if c.key in ("run_id", "phase", "next_link", "lease_owner", "lease_until",
                         "pending_users_delta_link")}


def differences(crashed: Snapshot, reference: Snapshot) -> list[str]:
    """What a resumed tenant holds that the uninterrupted one does not."""
    found = list(crashed.duplicates + crashed.leftovers)
    for kind, ours, theirs in (("user", crashed.users, reference.users),
                               ("group", crashed.groups, reference.groups)):
        for key in sorted(set(ours) | set(theirs)):
            if key not in ours:
                found.append(f"{kind} {key} missing")
            elif key not in theirs:
                found.append(f"{kind} {key} extra: {ours[key]}")
            elif ours[key] != theirs[key]:
                diff = {f: (ours[key][f], theirs[key][f]) for f in ours[key]
                        if ours[key][f] != theirs[key][f]}
                found.append(f"{kind} {key} differs (resumed, uninterrupted): {diff}")
    if (crashed.live_users, crashed.counter) != (reference.live_users, reference.counter):
        found.append(f"live users / counter {crashed.live_users}/{crashed.counter}, "
                     f"uninterrupted {reference.live_users}/{reference.counter}")
    ours_by, theirs_by = crashed.by_subject(), reference.by_subject()
    for subject in sorted(set(ours_by) | set(theirs_by)):
        ours_events, theirs_events = ours_by.get(subject, []), theirs_by.get(subject, [])
        if subject.startswith("user "):
            created = sum(1 for kind, _, _ in ours_events if kind == "user.created")
            if created != 1:
                found.append(f"{subject}: {created} user.created events")
            ours_status = [e for e in ours_events if e[0] in STATUS_KINDS]
            theirs_status = [e for e in theirs_events if e[0] in STATUS_KINDS]
            if ours_status != theirs_status:
                found.append(f"{subject}: status events {ours_status}, uninterrupted "
                             f"{theirs_status}")
        if ours_events != theirs_events:
            found.append(f"{subject}: events {ours_events}, uninterrupted {theirs_events}")
    if not found and crashed.events != reference.events:
        found.append("the same events per subject, in another order")
    return found


# -- the harness ------------------------------------------------------------------------


@dataclass
class Harness:
    engine: Engine
    database_url: str
    settings: AzureSyncSettings
    service: SyncService
    graph: FakeGraph
    app: FakeApp
    ca_path: str
    crasher: Crasher

    @property
    def entra(self) -> FakeDirectory:
        return self.graph.directory(self.app.tenant_id)

    def tenant(self, name: str) -> str:
        """A connector tenant synced from the fake app's directory."""
        tenant_id, _ = make_tenant(self.engine, name)
        with make_sessionmaker(self.engine)() as s:
            register(s, self.settings, WriteContext(tenant_id, Source.ADMIN, "test", "test",
                                                    dt.datetime.now(dt.UTC)),
                     directory_id=self.app.tenant_id, client_id=self.app.client_id,
                     secret=self.app.client_secret, authority_host=self.app.authority_host,
                     graph_base_url=self.app.graph_base_url)
            s.commit()
        return tenant_id

    def run(self, tenant_id: str, clock: Callable[[], dt.datetime] | None = None
            ) -> rounds.RoundResult:
        options = rounds.RoundOptions(lease_seconds=LEASE_SECONDS)
        if clock is not None:
            options = rounds.RoundOptions(lease_seconds=LEASE_SECONDS, clock=clock)
        return self.service.run(tenant_id, "manual", options, sleep=_no_sleep)

    def synced(self, tenant_id: str) -> None:
        result = self.run(tenant_id)
        assert result.status == "succeeded", result

    def crash(self, tenant_id: str, point: KillPoint) -> None:
        """Queue the tenant's round in the child, which kills itself at `point`."""
        kill, page = point
        self.crasher.submit({
            "database_url": self.database_url, "tenant_id": tenant_id,
            "ca_path": self.ca_path, "lease_seconds": LEASE_SECONDS, "kill": kill,
            "page": page, "settings": {"encryption_key": self.settings.encryption_key,
                                       "retry_budget": self.settings.retry_budget,
                                       "graph_scope": self.settings.graph_scope,
                                       "allow_private_hosts": True}})

    def crashed(self, tenant_id: str, point: KillPoint, pages: int) -> None:
        """Wait for the child queued for this tenant to die, and check that it died
        where it was to: what it committed, and the lease it left held."""
        ended, output = self.crasher.next_result()
        assert ended["signal"] == signal.SIGKILL, (
            f"the child was to die at {point} but ended {ended}:\n{output}")
        kill, page = point
        if kill == "piped":
            _wait_for_orphan(output)
        with make_sessionmaker(self.engine)() as s:
            state = s.get(SyncState, tenant_id)
            assert state is not None and state.lease_owner is not None, _row(state)
            last = s.scalars(select(SyncRun).where(SyncRun.tenant_id == tenant_id)
                             .order_by(SyncRun.id.desc())).first()
            assert last is not None
            progress = (state.run_id == last.id, last.status, last.pages, state.phase)
        # A page in flight to the writer process is committed by the writer, which
        # outlives the round.
        committed = {"after_page": page, "in_page": (page or 0) - 1, "piped": page,
                     "in_resync": 0}.get(kill, pages)
        if kill == "after_complete":
            expected: tuple[Any, ...] = (False, "succeeded", pages, None)
        elif committed == pages:
            expected = (True, "running", pages, "done")
        else:
            expected = (True, "running", committed, progress[3])
        assert progress == expected, f"{point}: (in progress, status, pages, phase) " \
                                     f"{progress}, expected {expected}\n{output}"

    def resume(self, tenant_id: str) -> rounds.RoundResult:
        """The dead child's lease still holds at the real clock; past it, the round
        carries on from where the child's last commit left it."""
        busy = self.run(tenant_id)
        assert busy.status == "busy", busy
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2 * LEASE_SECONDS)
        return self.run(tenant_id, clock=lambda: later)

    def check(self, tenant_id: str, point: KillPoint, reference: Snapshot) -> list[str]:
        """Resume a killed tenant; what differs from the uninterrupted reference."""
        result = self.resume(tenant_id)
        if result.status != "succeeded":
            return [f"{point}: the resumed round ended {result.status}: {result.error}"]
        crashed = snapshot(self.engine, tenant_id)
        problems = differences(crashed, reference)
        # The run log: the interrupted round completes as one run, like the reference's.
        # A kill after the round's end committed leaves a completed round; the resume is
        # then a new round with nothing to do.
        runs, extra = crashed.runs[:len(reference.runs)], crashed.runs[len(reference.runs):]
        if runs != reference.runs:
            problems.append(f"run log {runs}, uninterrupted {reference.runs}")
        if point[0] == "after_complete":
            if len(extra) != 1 or extra[0]["status"] != "succeeded" or _did(extra[0]):
                problems.append(f"after the completed round, a resume of {extra}")
        elif extra:
            problems.append(f"more runs than the uninterrupted tenant: {extra}")
        # And the next round finds nothing left to do (no replay of the round's changes).
        after = self.run(tenant_id)
        again = snapshot(self.engine, tenant_id)
        if after.status != "succeeded" or _did(again.runs[-1]) or again.events != crashed.events:
            problems.append(f"the next round was not a no-op: {after}, "
                            f"{again.events[len(crashed.events):]}")
        return [f"{point}: {p}" for p in problems]


def _wait_for_orphan(output: str) -> None:
    """The page writer the killed round left (`writer pid: P` in the child's stderr) has
    ended: it has committed the page in flight, or given it up."""
    match = re.search(r"writer pid: (\d+)", output)
    assert match, f"the child did not say which writer it left:\n{output}"
    stat = Path(f"/proc/{match.group(1)}/stat")
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return  # ended; its new parent has not collected it yet
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.05)
    raise AssertionError(f"the page writer {match.group(1)} still runs after {JOB_TIMEOUT} s")


def _no_sleep(seconds: float) -> None:
    """Retries (none are expected: no fault is injected) go again at once."""


NOTHING_DONE = frozenset({"unchanged", "seen", "sweep_staged"})


def _did(run: dict[str, Any]) -> bool:
    return any(n for key, n in run["counts"].items() if key not in NOTHING_DONE)


@pytest.fixture
def harness(engine: Engine, database_url: str, fake_graph: FakeGraph, fake_app: FakeApp,
            fake_tls: LoopbackTLS, crasher: Crasher) -> Iterator[Harness]:
    settings = AzureSyncSettings(encryption_key=secrets.new_key(), retry_budget=20,
                                 allow_private_hosts=True,
                                 graph_scope="https://graph.microsoft.com/.default")
    maker = make_sessionmaker(engine)
    service = SyncService(settings, maker, make_sessionmaker(engine, writes=True),
                          verify=str(fake_tls.ca_path))
    yield Harness(engine, database_url, settings, service, fake_graph, fake_app,
                  str(fake_tls.ca_path), crasher)
    crasher.drain()  # before the tables are emptied and the fakes stop


# -- the directory ----------------------------------------------------------------------


@dataclass
class People:
    seeded: list[str]
    ann: str
    off: str  # disabled from the start: on the deleted-users list
    guest: str
    groups: dict[str, str]


def populate(entra: FakeDirectory) -> People:
    """17 users and 4 groups; with 5 objects a page and 4 members an item: 4 pages of
    users, then 2 of groups, with Sales's 14 members split over 4 items and 2 pages, and
    a group nested in another."""
    ann = entra.add_user("ann@contoso.example", givenName="Ann", surname="Lee",
                         employeeId="E1")
    off = entra.add_user("off@contoso.example", accountEnabled=False)
    guest = entra.add_user("g_ext#EXT#@contoso.example", userType="Guest")
    seeded = list(entra.seed_users(14))
    groups = {"Ops": entra.create_group("Ops", members=[ann, off, seeded[0]])}
    groups["Empty"] = entra.create_group("Empty")
    groups["Sales"] = entra.create_group("Sales", members=[ann, guest, *seeded[:12]])
    groups["All"] = entra.create_group("All", members=[groups["Ops"], seeded[13]])
    return People(seeded, ann, off, guest, groups)


def run_points(harness: Harness, tenants: dict[KillPoint, str], reference: Snapshot,
               pages: int) -> list[str]:
    """Kill each tenant's round at its point, resume it, compare with the reference.
    The child runs the next tenant's round while this process checks the last one."""
    for point, tenant_id in tenants.items():
        harness.crash(tenant_id, point)
    problems: list[str] = []
    for point, tenant_id in tenants.items():
        harness.crashed(tenant_id, point, pages)
        problems += harness.check(tenant_id, point, reference)
    return problems


# -- the tests --------------------------------------------------------------------------

FULL_ROUND_PAGES = 6  # 4 of users, 2 of groups (see `populate`)


def test_an_initial_round_killed_anywhere_resumes_to_the_uninterrupted_result(
        harness: Harness) -> None:
    populate(harness.entra)
    harness.graph.knobs.page_size = 5
    harness.graph.knobs.member_chunk_size = 4
    points = kill_points(FULL_ROUND_PAGES)
    reference_id = harness.tenant("Reference")
    tenants = {point: harness.tenant(f"Killed {point}") for point in points}

    group_pages = harness.graph.counters["pages:groups"]
    result = harness.run(reference_id)
    assert result.status == "succeeded", result
    assert result.pages == FULL_ROUND_PAGES, result
    assert harness.graph.counters["pages:groups"] - group_pages == 2
    assert result.counts["created"] == 17 and result.counts["memberships"] == 19, result
    reference = snapshot(harness.engine, reference_id)
    assert reference.leftovers == [] and len(reference.groups) == 4

    problems = run_points(harness, tenants, reference, FULL_ROUND_PAGES)
    assert not problems, "\n".join(problems)


# 12 changed users, 4 a page: 3 pages; then 10 group items (Sales's 9 member changes
# split over 5 items and 2 pages), 4 a page: 3 pages.
INCREMENTAL_PAGES = 6


def test_an_incremental_round_killed_anywhere_resumes_to_the_uninterrupted_result(
        harness: Harness) -> None:
    entra = harness.entra
    people = populate(entra)
    seeded = people.seeded
    back = seeded[10]
    points = kill_points(INCREMENTAL_PAGES)
    reference_id = harness.tenant("Reference")
    tenants = {point: harness.tenant(f"Killed {point}") for point in points}
    everyone = [reference_id, *tenants.values()]
    for tenant_id in everyone:  # an initial round, then one that removes `back`
        harness.synced(tenant_id)
    entra.soft_delete_user(back)
    for tenant_id in everyone:
        harness.synced(tenant_id)

    # The round under test: every kind of change, destructive ones under the threshold.
    entra.restore_user(back)                               # comes back, with its groups
    entra.disable_user(seeded[1])                          # staged, applied at the end
    entra.disable_user(seeded[2])
    entra.enable_user(people.off)                          # off the deleted-users list
    entra.soft_delete_user(seeded[3])                      # staged
    entra.hard_delete_user(seeded[4])                      # staged
    entra.update_user(people.ann, surname="Lee-Smith", displayName="Ann Lee-Smith")
    entra.update_user(seeded[5], userType="Guest")         # becomes a guest
    entra.update_user(seeded[6], userPrincipalName="renamed@contoso.example")
    entra.disable_user(seeded[7])                          # …and back: no change
    entra.enable_user(seeded[7])
    new = entra.add_user("new@contoso.example", givenName="New")
    new_off = entra.add_user("newoff@contoso.example", accountEnabled=False)
    entra.add_members(people.groups["Sales"], [seeded[12], seeded[13], new, new_off])
    entra.remove_members(people.groups["Sales"], [seeded[0], seeded[8]])
    entra.rename_group(people.groups["Ops"], "Operations")
    entra.delete_group(people.groups["Empty"])
    entra.create_group("Newcomers", members=[new, new_off, people.guest, seeded[9]])
    entra.add_members(people.groups["All"], [people.groups["Sales"]])
    harness.graph.knobs.page_size = 4
    harness.graph.knobs.member_chunk_size = 2

    group_pages = harness.graph.counters["pages:groups"]
    result = harness.run(reference_id)
    assert result.status == "succeeded", result
    assert result.pages == INCREMENTAL_PAGES, result
    assert harness.graph.counters["pages:groups"] - group_pages == 3
    counts = result.counts
    # Soft deletes disable (the default, as Entra's own provisioning): seeded[3] is
    # disabled, and `back`, disabled by its soft delete, is enabled by its restore.
    assert (counts.get("disabled"), counts.get("deleted"), counts.get("enabled"),
            counts.get("restored"), counts.get("created")) == (3, 1, 2, None, 2), counts
    reference = snapshot(harness.engine, reference_id)
    assert reference.users[seeded[1]]["in_deleted_list"]
    assert not reference.users[people.off]["in_deleted_list"]
    assert reference.users[seeded[5]]["guest"]
    assert reference.users[seeded[3]]["in_deleted_list"]
    assert not reference.users[seeded[3]]["removed"] and reference.users[seeded[4]]["removed"]

    problems = run_points(harness, tenants, reference, INCREMENTAL_PAGES)
    assert not problems, "\n".join(problems)


def test_a_resync_round_killed_anywhere_sweeps_only_who_is_gone(harness: Harness) -> None:
    """A 410 turns the round into a full one that marks every user it sees and, at its
    end, sweeps the synced users it did not see: marks committed before a crash must
    count after the resume, so the sweep takes exactly who is gone."""
    entra = harness.entra
    people = populate(entra)
    seeded = people.seeded
    # Its pages are the initial round's (killed mid-page above): the boundaries suffice.
    points = [("in_resync", None), *(p for p in kill_points(FULL_ROUND_PAGES)
                                     if p[0] != "in_page")]
    reference_id = harness.tenant("Reference")
    tenants = {point: harness.tenant(f"Killed {point}") for point in points}
    for tenant_id in [reference_id, *tenants.values()]:
        harness.synced(tenant_id)

    entra.hard_delete_user(seeded[2])  # a full round just no longer reports it: swept
    entra.disable_user(seeded[3])      # staged, applied at the end
    entra.update_user(people.guest, displayName="Guest Person")
    entra.add_user("late@contoso.example")
    harness.graph.resync(410, "syncStateNotFound")  # every deltaLink issued so far
    harness.graph.knobs.page_size = 5
    harness.graph.knobs.member_chunk_size = 4

    result = harness.run(reference_id)
    assert result.status == "succeeded", result
    assert result.pages == FULL_ROUND_PAGES, result
    counts = result.counts
    assert (counts.get("sweep_staged"), counts.get("deleted"), counts.get("disabled"),
            counts.get("created")) == (1, 1, 1, 1), counts
    reference = snapshot(harness.engine, reference_id)
    assert [r["kind"] for r in reference.runs] == ["full", "incremental", "full"]
    assert reference.users[seeded[2]]["removed"]
    assert not any(u["removed"] for key, u in reference.users.items() if key != seeded[2])

    problems = run_points(harness, tenants, reference, FULL_ROUND_PAGES)
    assert not problems, "\n".join(problems)


def test_an_initial_round_killed_with_a_page_in_flight_to_its_writer_resumes(
        harness: Harness) -> None:
    """The round's process dies while the writer process (azure_sync.pipeline) holds a
    page: the writer commits that page with its cursor (or nothing of it), and the round
    resumed past the lease ends as an uninterrupted one (pipelined too)."""
    entra = harness.entra
    people = entra.seed_users(150)  # pages of 60: two go through the writer, then 31
    entra.add_user("off@contoso.example", accountEnabled=False)
    entra.create_group("Many", members=list(people[0:150:3]))
    harness.graph.knobs.page_size = 60
    points: list[KillPoint] = [("piped", 1), ("piped", 2)]
    reference_id = harness.tenant("Reference")
    tenants = {point: harness.tenant(f"Killed {point}") for point in points}

    result = harness.run(reference_id)
    assert result.status == "succeeded", result
    assert result.counts["created"] == 151 and result.counts["memberships"] == 50, result
    reference = snapshot(harness.engine, reference_id)

    problems = run_points(harness, tenants, reference, result.pages)
    assert not problems, "\n".join(problems)


# -- stalled, not killed ----------------------------------------------------------------
# A process may also stop without dying (a long pause, a suspended VM, SIGSTOP) for longer
# than its lease: another process then takes the round over and may finish it before the
# first one wakes up. These run in this process: the stalled round's Graph call or
# page hook runs the other round to its end.


def _take_over(harness: Harness, tenant_id: str) -> rounds.RoundResult:
    """Another process's round, once the stalled one's lease has run out."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2 * LEASE_SECONDS)
    return harness.run(tenant_id, clock=lambda: later)


def _stall_checks(harness: Harness, tenant_id: str, outcome: Any,
                  other: list[rounds.RoundResult]) -> None:
    assert [r.status for r in other] == ["succeeded"], other
    assert isinstance(outcome, rounds.RoundResult), f"the stalled round raised {outcome!r}"
    crashed = snapshot(harness.engine, tenant_id)
    with make_sessionmaker(harness.engine)() as s:
        state = s.get(SyncState, tenant_id)
        assert state is not None
        failures = state.failures
    assert ([r["status"] for r in crashed.runs], failures) == (["succeeded"], 0), (
        f"the completed round's run log became {crashed.runs}, failures {failures}; the "
        f"stalled round returned {outcome}")
    # The stalled run shows as failed (its process stopped, as far as anyone could
    # tell), and the run that took over as the round's success: both in the log.
    assert [r["status"] for r in crashed.run_rows] == ["failed", "succeeded"], crashed.run_rows
    assert "stopped before it finished" in crashed.run_rows[0]["error"]
    assert len(crashed.users) == 17 and not crashed.leftovers


def test_a_round_stalled_past_its_lease_in_a_page_leaves_the_finished_round_alone(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(harness.entra)
    harness.graph.knobs.page_size = 5
    tenant_id = harness.tenant("Stalled")
    commit, calls, other = rounds._commit_page, [0], []

    def stall_at_third_page(*args: Any) -> None:
        calls[0] += 1
        if calls[0] == 3:  # the stalled round has read its cursor and page 3
            other.append(_take_over(harness, tenant_id))
        commit(*args)

    # Patched where the round calls it (Graph's page itself may be read ahead, in
    # another thread, while page 2 applies).
    monkeypatch.setattr(rounds, "_commit_page", stall_at_third_page)
    outcome: Any
    try:
        outcome = harness.run(tenant_id)
    except Exception as exc:  # noqa: BLE001 - the outcome under test
        outcome = exc
    monkeypatch.undo()
    _stall_checks(harness, tenant_id, outcome, other)


def test_a_round_stalled_past_its_lease_between_pages_stops_quietly(
        harness: Harness) -> None:
    populate(harness.entra)
    harness.graph.knobs.page_size = 5
    tenant_id = harness.tenant("Stalled")
    other: list[rounds.RoundResult] = []

    def stall_after_second_page(pages: int, phase: str) -> None:
        if pages == 2:
            other.append(_take_over(harness, tenant_id))

    outcome: Any
    try:
        outcome = harness.service.run(tenant_id, "manual", rounds.RoundOptions(
            lease_seconds=LEASE_SECONDS, after_page=stall_after_second_page), sleep=_no_sleep)
    except Exception as exc:  # noqa: BLE001 - the outcome under test
        outcome = exc
    _stall_checks(harness, tenant_id, outcome, other)
