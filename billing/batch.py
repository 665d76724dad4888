"""Close a batch of small tenants' months together: one set of statements for them all.

    close_batch(tenants, month) ──> tenants and billing info, closes so far, high-water
        marks, user counts, late events: one statement each for the whole batch
        └─ a tenant that needs more than the common case (see `_eligible`) is handed
           back, and closes on its own (billing.close.close_month)
        per group of tenants with the same window and cut-off, `BATCH_USERS` users at a
        time: groups' modules, the month's facts, users and kept states, the whole
        history of users without one (one statement each) ──> fold each tenant as
        billing.tenant_fold does ──> closes inserted closed, lines (COPY), the
        billing.month_closed events, one commit

A fleet's month boundary is thousands of tenants of a hundred users: closed one by one,
each costs some twenty statements and five commits, which cost more than folding it
(docs/benchmarks.md, "Billing: a fleet at the month boundary"). Closed here, a tenant's
close is the same: the same inputs, lines, totals, invoice, event and hash (the tests
hold the two paths to the same hashes). Exactly once holds as for one close: a close
is inserted `closed`, so the unique index on (tenant, month, version) refuses a rival's
second one; the batch's transaction is then rolled back and its tenants close one by
one, where a rival's close is found and returned.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from billing import carry as carry_codec
from billing import invoice as inv
from billing import mail, reader
from billing.calendar import Month
from billing.close import dead_attempts
from billing.fold import USER_KINDS, Fact, fold_group_modules, fold_month
from billing.lines import insert_lines, line_row
from billing.planning import CloseInputs, plan_close
from billing.policies import decide_user
from billing.profiles import default_profile
from billing.snapshot import (
    ENGINE_VERSION,
    LineTally,
    digest_of,
    snapshot_digest,
    tally,
    totals_as_json,
)
from connector import events, logs
from connector.config import BillingSettings
from connector.db import insert_many, one_of
from connector.events import WriteContext
from connector.models import (
    Activity,
    BillingClose,
    BillingLine,
    BillingMailOutbox,
    BillingProfile,
    Event,
    Tenant,
    User,
)
from connector.status import Source

log = logging.getLogger("connector.billing")
BATCH_TENANTS = 50  # tenants a close pass hands out at a time
BATCH_MAX_USERS = 2_000  # a larger tenant closes on its own
BATCH_USERS = 20_000  # users folded (and held) at a time: bounded memory


@dataclass
class _Tenant:
    """One tenant of the batch, planned: its inputs and what its fold starts from."""

    tenant: Tenant
    inputs: CloseInputs
    previous: int | None = None  # the close whose kept states the fold starts from
    since: dt.datetime | None = None  # the last close's cut-off (late events after it)
    users: int = 0
    events_high: int = 0
    activity_high: int = 0


@dataclass
class BatchResult:
    """Each tenant's new close (`closed`, with its users counted), and the tenants
    handed back to close on their own (`rest`, in batch order)."""

    closed: dict[str, BillingClose]
    rest: list[str]


def close_batch(maker: sessionmaker[Session], tenant_ids: Sequence[str], month: Month,
                settings: BillingSettings, now: dt.datetime, actor: str) -> BatchResult:
    """Close `month` for the tenants that fit the common case; hand back the others (and
    every tenant of a part whose write failed) to close on their own."""
    closed: dict[str, BillingClose] = {}
    with maker() as s:
        planned = _plan(s, list(tenant_ids), month, settings, now, set())
        s.commit()
        for part in _parts(planned):
            try:
                made = _close_part(s, part, settings, now, actor)
                s.commit()
            except Exception as exc:  # noqa: BLE001 - e.g. a rival closed one first
                s.rollback()
                logs.log(log, logging.WARNING if isinstance(exc, IntegrityError)
                         else logging.ERROR, "billing: a batch of closes was not written; "
                         "its tenants close one by one", month=str(month),
                         tenants=len(part), error=f"{type(exc).__name__}: {exc}")
                continue
            closed.update(made)
    return BatchResult(closed, [t for t in tenant_ids if t not in closed])


def _plan(s: Session, ids: list[str], month: Month, settings: BillingSettings,
          now: dt.datetime, rest: set[str]) -> list[_Tenant]:
    """Plan every tenant of the batch with a few statements for all; those that do not
    fit the common case go to `rest`."""
    tenants = {t.id: t for t in s.scalars(select(Tenant).where(one_of(s, Tenant.id, ids)))}
    profiles = {p.tenant_id: p for p in s.scalars(
        select(BillingProfile).where(one_of(s, BillingProfile.tenant_id, ids)))}
    closes: dict[str, list[Any]] = defaultdict(list)
    for row in s.execute(select(
            BillingClose.tenant_id, BillingClose.id, BillingClose.month, BillingClose.cutoff,
            BillingClose.window_end, BillingClose.inputs["policy"].as_string(),
            BillingClose.inputs["engineVersion"].as_integer())
            .where(one_of(s, BillingClose.tenant_id, ids), BillingClose.state == "closed",
                   BillingClose.month <= str(month))):
        closes[row[0]].append(row)
    planned = []
    for tenant_id in ids:
        tenant = tenants.get(tenant_id)
        if tenant is None or tenant.entra_sync:  # an Entra round may hold the close back
            rest.add(tenant_id)
            continue
        try:
            inputs = plan_close(s, tenant, month, settings, now,
                                profile=profiles.get(tenant_id) or default_profile(tenant_id))
        except Exception:  # noqa: BLE001 - not due, bad billing info: said by close_month
            rest.add(tenant_id)
            continue
        planned_one = _with_closes(tenant, inputs, sorted(closes[tenant_id],
                                                          key=lambda r: r[2], reverse=True))
        if planned_one is None:
            rest.add(tenant_id)
        else:
            planned.append(planned_one)
    _drop_stale_attempts(s, [t.inputs.tenant_id for t in planned], month, now, settings)
    for group in _groups(planned):
        _read_marks(s, group)
        late = _with_late_events(s, group)
        for t in group:
            if t.tenant.id in late or t.users > BATCH_MAX_USERS:
                rest.add(t.tenant.id)
    return [t for t in planned if t.tenant.id not in rest]


def _with_closes(tenant: Tenant, inputs: CloseInputs, closes: list[Any]) -> _Tenant | None:
    """The tenant planned against its closed months (latest first), or None if it needs
    more than the common case: its month is closed already (the close returns that
    one), or an earlier month may need adjusting by what its activity says (a month
    closed under monthly_active) or the month counts activity itself."""
    if inputs.policy.name == "monthly_active":
        return None
    if closes and closes[0][2] == str(inputs.month):
        return None
    if any(policy == "monthly_active" for *_, policy, _engine in closes):
        return None
    planned = _Tenant(tenant, inputs, since=closes[0][3] if closes else None)
    previous = next((c for c in closes if c[2] == str(inputs.month.previous())), None)
    # As billing.tenant_fold._carry_source: the same engine, no zone change, and it knew
    # no more than this close may.
    if (previous is not None and previous[6] == ENGINE_VERSION
            and previous[4] == inputs.window.start and previous[3] <= inputs.cutoff):
        planned.previous = previous[1]
    return planned


def _drop_stale_attempts(s: Session, ids: list[str], month: Month, now: dt.datetime,
                         settings: BillingSettings) -> None:
    # As billing.close: attempts of a process that died mid-close.
    if ids:
        s.execute(delete(BillingClose).where(
            one_of(s, BillingClose.tenant_id, ids), BillingClose.month == str(month),
            dead_attempts(now, settings)))


def _groups(planned: list[_Tenant]) -> list[list[_Tenant]]:
    """The tenants by window and cut-off (a zone's): each group's statements share them."""
    groups: dict[tuple[Any, ...], list[_Tenant]] = defaultdict(list)
    for t in planned:
        w = t.inputs.window
        groups[(w.tz, w.start, w.end, t.inputs.cutoff)].append(t)
    return list(groups.values())


def _read_marks(s: Session, group: list[_Tenant]) -> None:
    """Each tenant's high-water marks (as billing.close reads them) and user count."""
    cutoff = group[0].inputs.cutoff
    event = (select(Event.id).where(Event.tenant_id == Tenant.id, Event.recorded_at <= cutoff)
             .order_by(Event.recorded_at.desc(), Event.id.desc()).limit(1)
             .correlate(Tenant).scalar_subquery())
    activity = (select(Activity.id).where(Activity.tenant_id == Tenant.id,
                                          Activity.recorded_at <= cutoff)
                .order_by(Activity.recorded_at.desc(), Activity.id.desc()).limit(1)
                .correlate(Tenant).scalar_subquery())
    users = (select(func.count()).select_from(User).where(User.tenant_id == Tenant.id)
             .correlate(Tenant).scalar_subquery())
    by_id = {t.tenant.id: t for t in group}
    for tenant_id, events_high, activity_high, count in s.execute(
            select(Tenant.id, event, activity, users).where(one_of(s, Tenant.id, list(by_id)))):
        t = by_id[tenant_id]
        t.events_high, t.activity_high, t.users = events_high or 0, activity_high or 0, count


def _with_late_events(s: Session, group: list[_Tenant]) -> set[str]:
    """The tenants of the group with events learned late since their last close
    (billing.reader.late_events): their closes adjust earlier months, on their own."""
    late: set[str] = set()
    first = group[0].inputs
    by_since: dict[dt.datetime, list[str]] = defaultdict(list)
    for t in group:
        if t.since is not None:
            by_since[t.since].append(t.tenant.id)
    for since, ids in by_since.items():
        late.update(s.scalars(select(Event.tenant_id).where(
            one_of(s, Event.tenant_id, ids), Event.recorded_at > since,
            Event.recorded_at <= first.cutoff, Event.effective_at < first.window.start,
            or_(and_(Event.subject_type == "user", Event.kind.in_(USER_KINDS)),
                Event.kind.in_(reader.MEMBER_KINDS),
                and_(Event.subject_type == "group", Event.kind.in_(reader.GROUP_KINDS))))
            .distinct()))
    return late


def _parts(planned: list[_Tenant]) -> Iterator[list[_Tenant]]:
    """The planned tenants in parts of one window and cut-off, of at most `BATCH_USERS`
    users (a part of one tenant may hold more: at most `BATCH_MAX_USERS`)."""
    for group in _groups(planned):
        part: list[_Tenant] = []
        users = 0
        for t in group:
            if part and users + t.users > BATCH_USERS:
                yield part
                part, users = [], 0
            part.append(t)
            users += t.users
        if part:
            yield part


def _close_part(s: Session, part: list[_Tenant], settings: BillingSettings,
                now: dt.datetime, actor: str) -> dict[str, BillingClose]:
    """Fold and write one part's closes in the session's transaction (not committed)."""
    first = part[0].inputs
    ids = [t.tenant.id for t in part]
    conn = s.connection()
    dialect = conn.dialect.name
    groups = _groups_modules(s, ids, first)
    carried = [t.tenant.id for t in part if t.previous is not None]
    cold = [t.tenant.id for t in part if t.previous is None]
    scope = first.scope()
    facts: dict[tuple[str, str], list[Any]] = {}
    if carried:
        facts.update(reader.tenants_facts(conn, carried, replace(scope, from_start=True)))
    if cold:
        facts.update(reader.tenants_facts(conn, cold, scope))
    users: dict[str, list[str]] = defaultdict(list)
    made_at: dict[tuple[str, str], Any] = {}  # instants as billing.reader.instant gives them
    for tenant_id, user_id, created_at in reader.fetched(conn, select(
            User.tenant_id, User.id, reader.instant(dialect, User.created_at))
            .where(reader.one_of(dialect, User.tenant_id, ids))):
        users[tenant_id].append(user_id)
        made_at[(tenant_id, user_id)] = created_at
    kept = _kept_states(conn, [t for t in part if t.previous is not None])
    since = {t.tenant.id: reader.comparable_instant(dialect, t.since)
             for t in part if t.since is not None}
    # Users with facts this month but no kept state fold from their whole history
    # (billing.tenant_fold), but those created since the last close: every event about
    # a user is recorded from its row's creation on (connector.directory), and none of
    # this tenant's took effect before the month (it would be a late event), so the
    # month's facts are its whole history.
    scratch = [(t.tenant.id, uid) for t in part if t.previous is not None
               for uid in users[t.tenant.id]
               if (t.tenant.id, uid) in facts and (t.previous, uid) not in kept
               and not (t.since is not None and made_at[(t.tenant.id, uid)] > since[t.tenant.id])]
    whole, from_scratch = _whole_histories(conn, scratch, scope), set(scratch)
    window = reader.comparable(dialect, first.window)
    first_day = first.month.first_day()
    rows, lines, outbox, made = [], [], [], []
    for t in part:
        tally_, chunk = _fold(t, sorted(users[t.tenant.id]), facts, kept, whole,
                              from_scratch, window, groups.get(t.tenant.id, {}), first_day)
        row = _close_row(t, tally_, now, actor)
        rows.append(row)
        made.append((t, chunk, row))
    # The closes, inserted closed: the unique index decides against a rival's.
    close_ids = _insert_closes(s, rows)
    closed: dict[str, BillingClose] = {}
    recorded = []
    for close_id, (t, chunk, row) in zip(close_ids, made, strict=True):
        lines += [line_row(close_id, *line) for line in chunk]
        closed[t.tenant.id] = BillingClose(id=close_id, **row)
        recorded.append(_closed_event(t, close_id, row, now, actor))
        if mail.enabled(settings):
            outbox.append(BillingMailOutbox(close_id=close_id, tenant_id=t.tenant.id,
                                            month=row["month"], state="pending",
                                            created_at=now, next_attempt_at=now, attempts=0))
    insert_lines(s, lines)
    events.record_many(s, recorded)
    s.add_all(outbox)
    s.flush()
    return closed


def _insert_closes(s: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert the closes; return their ids in order. On PostgreSQL the ids are drawn
    from the sequence first and the rows written by COPY (connector.db.insert_many):
    an INSERT of many rows with RETURNING cost more than folding the tenants."""
    if s.get_bind().dialect.name != "postgresql":
        stmt = insert(BillingClose).returning(BillingClose.id, sort_by_parameter_order=True)
        return [close_id for (close_id,) in s.execute(stmt, rows)]
    ids = list(s.scalars(text(
        "SELECT nextval(pg_get_serial_sequence('billing_closes', 'id')) "
        "FROM generate_series(1, :n) ORDER BY 1"), {"n": len(rows)}))
    insert_many(s, BillingClose.__table__,
                [{"id": close_id, **row} for close_id, row in zip(ids, rows, strict=True)])
    return ids


def _groups_modules(s: Session, ids: list[str], inputs: CloseInputs
                    ) -> dict[str, dict[str, frozenset[str]]]:
    """Each tenant's groups' modules at the month's end (billing.reader.group_modules)."""
    scope = inputs.scope()
    rows = s.execute(
        select(Event.tenant_id, Event.subject_id, Event.kind, Event.new_value,
               Event.effective_at, Event.id)
        .where(one_of(s, Event.tenant_id, ids), Event.subject_type == "group",
               Event.object_id.is_(None), Event.kind.in_(reader.GROUP_KINDS),
               Event.effective_at < scope.end, Event.recorded_at <= scope.cutoff)
        .order_by(Event.tenant_id, Event.effective_at, Event.id))
    found = {}
    for tenant_id, tenant_rows in itertools.groupby(rows, key=lambda r: r[0]):
        found[tenant_id] = fold_group_modules(
            ((gid, Fact(at, seq, kind, value)) for _, gid, kind, value, at, seq in tenant_rows),
            scope.end)
    return found


def _kept_states(conn: Any, carried: list[_Tenant]) -> dict[tuple[int, str], str | None]:
    """(close id, user id) -> the state the previous close kept for the user."""
    if not carried:
        return {}
    return {(close_id, uid): state for close_id, uid, state in reader.fetched(conn, select(
        BillingLine.close_id, BillingLine.user_id, BillingLine.state)
        .where(BillingLine.close_id.in_([t.previous for t in carried])))}


def _whole_histories(conn: Any, scratch: list[tuple[str, str]], scope: reader.Scope
                     ) -> dict[tuple[str, str], list[Any]]:
    """The whole history of each (tenant, user) of `scratch`, as billing.reader.facts_of
    reads it for one tenant."""
    found: dict[tuple[str, str], list[Any]] = {}
    wanted = set(scratch)
    for i in range(0, len(scratch), 1000):
        part = scratch[i:i + 1000]
        got = reader.tenants_facts(conn, sorted({t for t, _ in part}), scope,
                                   sorted({u for _, u in part}))
        found.update((key, facts) for key, facts in got.items() if key in wanted)
    return found


def _fold(t: _Tenant, users: list[str], facts: dict[tuple[str, str], list[Any]],
          kept: dict[tuple[int, str], str | None], whole: dict[tuple[str, str], list[Any]],
          scratch: set[tuple[str, str]], window: Any, groups: dict[str, frozenset[str]],
          first_day: dt.date) -> tuple[LineTally, list[Any]]:
    """One tenant's lines and their tally, as billing.tenant_fold._fold_users folds them
    (no user is late: tenants with late events close on their own); the users of
    `scratch` from their whole history."""
    inputs, tenant_id, previous = t.inputs, t.tenant.id, t.previous
    lines = []
    for uid in users:
        found = facts.get((tenant_id, uid))
        state_text = kept.get((previous, uid)) if previous is not None else None
        if (tenant_id, uid) in scratch:
            found = whole.get((tenant_id, uid))
        state = carry_codec.decode(state_text) if state_text is not None else None
        if state is None and found is None:
            continue
        month = fold_month(uid, found or (), window, groups, state)
        decision = decide_user(inputs.policy, month, first_day, inputs.trial_ends_on)
        if decision is not None:
            end = state_text if state_text is not None and found is None else \
                carry_codec.encode(month.end)
            lines.append((decision, month.end.user_name, end))
    tallied = LineTally()
    if lines:
        tallied.add(tally(lines))
    return tallied, lines


def _close_row(t: _Tenant, lines: LineTally, now: dt.datetime, actor: str) -> dict[str, Any]:
    """The close's column values, as billing.close leaves a close of one tenant."""
    inputs = t.inputs
    values: dict[str, Any] = dict(
        tenant_id=t.tenant.id, month=str(inputs.month), version=1, state="closed",
        started_at=now, closed_at=now, closed_by=actor, reason=None,
        window_start=inputs.window.start, window_end=inputs.window.end,
        cutoff=inputs.cutoff, event_high_water=t.events_high,
        activity_high_water=t.activity_high, inputs=inputs.as_json())
    digest = snapshot_digest(inputs, BillingClose(**values))
    invoice = inv.make_invoice(lines.totals, inputs.prices, inputs.non_profit,
                               inputs.po_number, [])
    values.update(content_hash=digest_of(digest, lines), users_counted=lines.counted,
                  users_billable=lines.billable, totals=totals_as_json(lines.totals),
                  invoice=invoice.as_json(),
                  report={"notes": list(inputs.notes), "lateUnadjusted": [],
                          "lateUnadjustedUsers": 0})
    return values


def _closed_event(t: _Tenant, close_id: int, row: dict[str, Any], now: dt.datetime,
                  actor: str) -> dict[str, Any]:
    """The billing.month_closed event, as billing.close records it."""
    ctx = WriteContext(t.tenant.id, Source.SYSTEM if actor in (None, "system") else Source.ADMIN,
                       actor or "system", f"billing-close:{close_id}", now)
    return events.row(ctx, "tenant", t.tenant.id, events.MONTH_CLOSED, None,
                      {"month": row["month"], "closeId": close_id, "version": 1,
                       "reissued": False, "usersCounted": row["users_counted"],
                       "usersBillable": row["users_billable"]})
