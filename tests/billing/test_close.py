"""Month close on both databases: histories written through the directory service,
months closed, lines, totals, invoices, hashes, exactly-once, late events."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import Connection, Engine, String, func, literal, select, union_all

from billing import reader
from billing.calendar import Month
from billing.close import close_month
from billing.planning import NotDue
from billing.verify import recompute_hash
from connector.config import BillingSettings
from connector.models import BillingAdjustment, BillingClose, BillingLine
from tests.billing.history import History, at

SETTINGS = BillingSettings()
NOV, DEC = Month(2026, 11), Month(2026, 12)
AFTER_NOV = at("2026-12-01T01:00:00")  # the end of November's collection window


def close(h: History, month: Month, now: dt.datetime | None = None, **kw: object):
    now = now or month.end("UTC") + dt.timedelta(hours=1)
    return close_month(h.maker, h.tenant_id, month, SETTINGS, now, **kw)  # type: ignore[arg-type]


def lines(h: History, close_id: int) -> dict[str, BillingLine]:
    with h.maker() as s:
        return {line.user_name: line for line in s.scalars(
            select(BillingLine).where(BillingLine.close_id == close_id))}


def test_active_with_module_counts_per_module_and_audience(engine: Engine) -> None:
    h = History(engine)
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"},
                      {"unit": "Engage", "plan": "standard", "price": "3.25"}],
              po_number="PO-77", company_name="Acme BV")
    a = h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid", "Engage"))
    b = h.create("2026-11-10T10:00:00", "b@x.io", guest=True)
    group = h.group("2026-11-11T10:00:00", "Sales", modules=("Hybrid",), members=(b,))
    c = h.create("2026-11-12T10:00:00", "c@x.io", modules=("Unify",))
    h.set_active("2026-11-20T10:00:00", c, False)
    h.create("2026-11-13T10:00:00", "d@x.io")  # active, no module
    out = close(h, NOV)
    assert out.created and out.close.state == "closed"
    got = lines(h, out.close.id)
    assert (got["a@x.io"].billable, got["a@x.io"].reason) == (True, "active_with_module")
    assert got["b@x.io"].units == "Hybrid" and got["b@x.io"].audience == "guest"
    assert (got["c@x.io"].billable, got["c@x.io"].reason) == (False, "inactive_at_end")
    assert (got["d@x.io"].billable, got["d@x.io"].reason) == (False, "no_module")
    totals = {(t["unit"], t["audience"]): t["count"] for t in out.close.totals}
    assert totals == {("Engage", "regular"): 1, ("Hybrid", "regular"): 1,
                      ("Hybrid", "guest"): 1}
    invoice = out.close.invoice
    assert invoice["subtotal"] == "13.25" and invoice["poNumber"] == "PO-77"
    assert invoice["invoicePaymentEligible"] is False
    assert out.close.users_counted == 4 and out.close.users_billable == 2
    del a, group


def test_closing_twice_is_one_close_and_the_hash_reproduces(engine: Engine) -> None:
    h = History(engine)
    h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
    first = close(h, NOV)
    # Later writes (after the cut-off) change neither a second close nor a recomputation.
    h.create("2026-12-02T10:00:00", "late@x.io", modules=("Hybrid",))
    again = close(h, NOV, now=at("2027-02-01T00:00:00"))
    assert not again.created and again.close.id == first.close.id
    with h.maker() as s:
        stored = s.get(BillingClose, first.close.id)
        assert recompute_hash(s, stored) == first.close.content_hash
        assert s.scalar(select(func.count()).select_from(BillingClose)) == 1


def test_closing_late_equals_closing_on_time(engine: Engine) -> None:
    on_time, late = History(engine, name="A"), History(engine, name="B")
    for h in (on_time, late):
        u = h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
        h.set_active("2026-11-30T23:59:59", u, False)
        # Inside the collection window, effective after the boundary: not November's.
        h.set_active("2026-12-01T00:30:00", u, True)
    a = close(on_time, NOV, now=AFTER_NOV)
    late.create("2027-01-15T10:00:00", "b@x.io", modules=("Hybrid",))
    b = close(late, NOV, now=at("2027-03-01T00:00:00"))
    strip = ("tenantId",)
    assert ({k: v for k, v in a.close.inputs.items() if k not in strip}
            == {k: v for k, v in b.close.inputs.items() if k not in strip})
    assert a.close.totals == b.close.totals == []
    assert [(x.billable, x.reason) for x in lines(on_time, a.close.id).values()] == \
        [(x.billable, x.reason) for x in lines(late, b.close.id).values()] == \
        [(False, "inactive_at_end")]


def test_a_month_is_not_closed_before_its_collection_window(engine: Engine) -> None:
    h = History(engine)
    with pytest.raises(NotDue) as caught:
        close(h, NOV, now=at("2026-12-01T00:30:00"))
    assert "2026-12-01T01:00:00" in str(caught.value)


def test_a_month_before_the_tenant_existed_is_never_closed(engine: Engine) -> None:
    """`billing close --month 1999-01` on a tenant of 2026 closed an empty month for good
    (issue 17, item 14); its own first month still closes."""
    h = History(engine, created="2026-11-20T10:00:00")
    for month in (Month(1999, 1), Month(2026, 10)):
        with pytest.raises(NotDue) as caught:
            close(h, month)
        assert "ended before tenant 'Acme' was created (2026-11-20)" in str(caught.value)
        assert "Its first month is 2026-11" in str(caught.value)
    with h.maker() as s:
        assert s.scalar(select(func.count()).select_from(BillingClose)) == 0
    assert close(h, NOV).created


def test_two_processes_closing_at_once_make_one_close(engine: Engine) -> None:
    h = History(engine)
    for i in range(30):
        h.create("2026-10-05T10:00:00", f"u{i}@x.io", modules=("Hybrid",))
    outcomes, errors = [], []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        try:
            outcomes.append(close(h, NOV))
        except Exception as exc:  # reported below, with the other thread's result
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(outcomes) == 2
    assert len({o.close.id for o in outcomes}) == 1
    with h.maker() as s:
        assert s.scalar(select(func.count()).select_from(BillingClose)) == 1
        assert s.scalar(select(func.count()).select_from(BillingLine)) == 30


def test_late_activity_becomes_an_adjustment_at_the_next_close(engine: Engine) -> None:
    h = History(engine)
    h.billing(policy="monthly_active",
              prices=[{"unit": "user", "plan": "standard", "price": "4.00"}])
    a = h.create("2026-10-05T10:00:00", "a@x.io")
    b = h.create("2026-10-05T10:00:00", "b@x.io")
    h.activity("2026-11-03T08:00:00", a)
    nov = close(h, NOV)
    assert nov.close.invoice["subtotal"] == "4.00"
    # b's November sign-in is reported in December, after November closed.
    h.activity("2026-11-30T23:00:00", b, recorded="2026-12-05T09:00:00")
    h.activity("2026-12-03T08:00:00", a)
    dec = close(h, DEC)
    assert dec.adjustments == 1
    with h.maker() as s:
        (adj,) = s.scalars(select(BillingAdjustment))
        assert (adj.month, adj.user_id, adj.sign, adj.amount) == ("2026-11", b, 1, "4.00")
        assert "activity" in adj.reason
    assert dec.close.invoice["adjustmentsTotal"] == "4.00"
    assert dec.close.invoice["subtotal"] == "4.00"  # December itself: a only
    assert dec.close.invoice["total"] == "8.00"
    # November itself never changed.
    with h.maker() as s:
        assert recompute_hash(s, s.get(BillingClose, nov.close.id)) == nov.close.content_hash
    # The next close does not adjust the same thing twice.
    jan = close(h, Month(2027, 1))
    assert jan.adjustments == 0


def test_a_late_status_change_is_reversed_and_corrected(engine: Engine) -> None:
    h = History(engine)
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"}])
    a = h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
    close(h, NOV)
    # An admin records in December that a left on 20 November.
    h.late_event("2026-11-20T00:00:00", "2026-12-10T00:00:00", a, "user.status", True, False)
    dec = close(h, DEC)
    with h.maker() as s:
        rows = list(s.scalars(select(BillingAdjustment).order_by(BillingAdjustment.id)))
    assert [(r.month, r.sign, r.amount) for r in rows] == [("2026-11", -1, "-5.00")]
    assert dec.close.invoice["adjustmentsTotal"] == "-5.00"
    # December started from November's kept states, except a's (stale: it was learned
    # late), which was folded from scratch: a is inactive in December too.
    assert lines(h, dec.close.id)["a@x.io"].reason == "inactive_at_end"
    with h.maker() as s:
        stored = s.get(BillingClose, dec.close.id)
        assert recompute_hash(s, stored) == recompute_hash(s, stored, carry=True) == \
            dec.close.content_hash


def test_late_events_beyond_the_lookback_are_reported_not_adjusted(engine: Engine) -> None:
    h = History(engine)
    a = h.create("2026-08-05T10:00:00", "a@x.io", modules=("Hybrid",))
    for month in (Month(2026, 9), Month(2026, 10), NOV):
        close(h, month)
    h.late_event("2026-09-20T00:00:00", "2026-12-10T00:00:00", a, "user.status", True, False)
    dec = close(h, DEC)
    # a left on 20 September: November and October (the two months looked back at)
    # are reversed; September is too old and only reported.
    with h.maker() as s:
        adjusted = sorted(s.scalars(select(BillingAdjustment.month)))
    assert adjusted == ["2026-10", "2026-11"]
    report = dec.close.report
    assert report["lateUnadjustedUsers"] == 1
    assert report["lateUnadjusted"][0]["month"] == "2026-09"


def test_reissue_is_a_new_version_and_the_old_one_stays(engine: Engine) -> None:
    h = History(engine)
    h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
    first = close(h, NOV)
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "9.00"}])
    second = close(h, NOV, now=at("2026-12-03T00:00:00"), actor="partner@x.io",
                   reissue_reason="price list was missing")
    assert second.created and second.close.version == 2
    assert second.close.invoice["subtotal"] == "9.00"
    with h.maker() as s:
        old = s.get(BillingClose, first.close.id)
        assert old.state == "superseded" and old.invoice["subtotal"] == "0.00"
    assert len(lines(h, first.close.id)) == 1


def test_whole_month_and_trial(engine: Engine) -> None:
    h = History(engine)
    h.billing(policy="whole_month", trial_ends_on="2026-10-18",
              prices=[{"unit": "user", "plan": "standard", "price": "2.00"}])
    a = h.create("2026-09-05T10:00:00", "a@x.io")
    b = h.create("2026-11-01T00:00:00", "b@x.io")  # created at the boundary: November's
    c = h.create("2026-09-05T10:00:00", "c@x.io")
    h.set_active("2026-11-10T00:00:00", c, False)
    h.set_active("2026-11-11T00:00:00", c, True)
    oct_ = close(h, Month(2026, 10))
    assert {x.reason for x in lines(h, oct_.close.id).values()} == {"trial"}
    nov = close(h, NOV)
    got = lines(h, nov.close.id)
    assert (got["a@x.io"].billable, got["b@x.io"].billable, got["c@x.io"].billable) == \
        (True, False, False)
    assert nov.close.invoice["subtotal"] == "2.00"
    del a, b


def test_frontline_guest_and_non_profit(engine: Engine) -> None:
    h = History(engine)
    h.billing(policy="invited", non_profit=True,
              prices=[{"unit": "user", "plan": "frontline", "price": "1.00"},
                      {"unit": "user", "plan": "standard", "price": "6.00"}])
    f = h.create("2026-10-05T10:00:00", "f@x.io",
                 frontline={"desklessPercent": 50, "frontlineRole": "medical"})
    g = h.create("2026-10-05T10:00:00", "g@x.io", guest=True, external_guest=True)
    p = h.create("2026-10-05T10:00:00", "p@x.io")  # provisioned, never invited
    for user in (f, g):
        h.invite("2026-11-02T10:00:00", user)
    h.invite("2026-11-03T10:00:00", p, claim=False)
    h.remove("2026-11-04T10:00:00", p)
    out = close(h, NOV)
    got = lines(h, out.close.id)
    assert (got["f@x.io"].billable, got["f@x.io"].plan) == (True, "frontline")
    assert (got["g@x.io"].billable, got["g@x.io"].reason) == (False, "external_company_guest")
    assert (got["p@x.io"].billable, got["p@x.io"].reason) == (False, "removed")
    assert out.close.invoice["total"] == "0.00" and out.close.invoice["nonProfit"] is True


@pytest.mark.slow  # a pool of worker processes
def test_worker_processes_make_the_same_close(engine: Engine,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Large tenants fold in worker processes, chunk by chunk; the lines, totals and hash
    are the ones one process gets."""
    from billing import tenant_fold, workers

    monkeypatch.setattr(tenant_fold, "CHUNK_USERS", 7)
    monkeypatch.setattr(workers, "PARALLEL_FROM_USERS", 0)
    h = History(engine)
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"}])
    for i in range(40):
        u = h.create("2026-10-05T10:00:00", f"u{i:02}@x.io", modules=("Hybrid",),
                     guest=i % 5 == 0)
        if i % 3 == 0:
            h.set_active("2026-11-10T10:00:00", u, False)
    out = close_month(h.maker, h.tenant_id, NOV, BillingSettings(close_workers=2),
                      AFTER_NOV)
    assert out.close.users_counted == 40 and out.close.users_billable == 26
    assert out.close.invoice["subtotal"] == "130.00"
    with h.maker() as s:
        stored = s.get(BillingClose, out.close.id)
        assert recompute_hash(s, stored) == out.close.content_hash
    assert len(lines(h, out.close.id)) == 40


@pytest.mark.parametrize("policy", ["active_with_module", "monthly_active"])
def test_partitions_and_chunks_of_any_size_make_the_same_close(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    """The fold merges sorted streams (users, facts, activity, kept states) partition by
    partition: closing with partitions and chunks of one, two or three users gives the
    lines and hash that one partition gives, from kept states or from the whole log."""
    from billing import planning, tenant_fold

    h = History(engine)
    h.billing(policy=policy, prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"},
                                     {"unit": "user", "plan": "standard", "price": "4.00"}])
    g = h.group("2026-10-01T09:00:00", "hybrid", modules=("Hybrid",))
    users = [h.create("2026-10-05T10:00:00", f"u{i}@x.io", modules=("Hybrid",) * (i % 2))
             for i in range(8)]
    h.members("2026-10-06T10:00:00", g, "add", *users[:3])
    h.members("2026-11-02T10:00:00", g, "add", users[5])
    h.members("2026-11-03T10:00:00", g, "remove", users[0])
    h.set_active("2026-11-10T10:00:00", users[1], False)
    h.remove("2026-11-12T10:00:00", users[2])
    for i in (0, 3, 6):
        h.activity(f"2026-11-1{i}T08:00:00", users[i])
    h.activity("2026-10-20T08:00:00", users[7])
    late = h.create("2026-11-20T10:00:00", "new@x.io", modules=("Hybrid",))
    h.activity("2026-11-21T08:00:00", late)
    # Events of ids the users table does not hold (first and between the others) are
    # passed over without holding up the users after them.
    for orphan in ("00000000-0000-0000-0000-000000000000", users[4][:-1] + "x"):
        h.late_event("2026-11-04T10:00:00", "2026-11-04T10:00:00", orphan, "user.status",
                     "active", "inactive")
    oct_close = close(h, Month(2026, 10))
    # Learned after October closed, effective in October: folded from scratch in November.
    h.late_event("2026-10-30T10:00:00", "2026-11-05T10:00:00", users[3], "user.modules",
                 ["Hybrid"], [])
    monkeypatch.setattr(tenant_fold, "LOCAL_PARTITION_USERS", 3)
    monkeypatch.setattr(tenant_fold, "CHUNK_USERS", 2)
    nov = close(h, NOV)
    assert oct_close.close.users_counted == 8 and nov.close.users_counted == 9
    with h.maker() as s:
        stored = s.get(BillingClose, nov.close.id)
        for partition, chunk in ((1, 1), (2, 5000), (5000, 1), (5000, 5000)):
            monkeypatch.setattr(tenant_fold, "LOCAL_PARTITION_USERS", partition)
            monkeypatch.setattr(tenant_fold, "CHUNK_USERS", chunk)
            for carry in (True, False):
                assert recompute_hash(s, stored, carry=carry) == nov.close.content_hash
        sqlite = s.get_bind().dialect.name == "sqlite"
        # From the whole log, SQLite reads the table or walks the index by the tenant's
        # share of the users (reader.table_scan_pays): both read the same facts.
        sent: list[str] = []
        if sqlite:  # what reaches SQLite (SQLAlchemy renders no table hint for it)
            s.connection().connection.driver_connection.set_trace_callback(sent.append)
        for share in (0.0, 2.0):
            monkeypatch.setattr(reader, "TABLE_SCAN_SHARE", share)
            assert tenant_fold.plan_fold(s, planning.inputs_of(stored), carry=False
                                         ).scope.scan_table is (share == 0.0 and sqlite)
            sent.clear()
            assert recompute_hash(s, stored) == nov.close.content_hash
            partitions = [q for q in sent if "group_concat" in q]
            assert len(partitions) == (1 if sqlite else 0)
            assert all(("FROM events NOT INDEXED" in q) == (share == 0.0) for q in partitions)
        if sqlite:
            s.connection().connection.driver_connection.set_trace_callback(None)
    got = lines(h, nov.close.id)
    assert len(got) == 9
    if policy == "monthly_active":
        # new@x.io signed in, but had no account on the 1st.
        assert {n for n, line in got.items() if line.billable} == {
            "u0@x.io", "u3@x.io", "u6@x.io"}
    else:
        # Active at the end with a module: u3's was taken away by the late event.
        assert [n for n, line in sorted(got.items()) if line.billable] == [
            "new@x.io", "u5@x.io", "u7@x.io"]


def test_an_event_never_takes_effect_after_it_is_recorded() -> None:
    """A month's close reads its events from the month's start in log order
    (billing.reader), which holds because no event is dated after it is recorded."""
    from connector import events
    from connector.events import WriteContext
    from connector.status import Source

    ctx = WriteContext("t", Source.ADMIN, "admin@test", "test", at("2026-11-05T10:00:00"))
    back = events.row(ctx, "user", "u", "user.status", "active", "inactive",
                      effective_at=at("2026-10-30T10:00:00"))
    assert back["effective_at"] < back["recorded_at"]
    with pytest.raises(ValueError, match="after it is recorded"):
        events.row(ctx, "user", "u", "user.status", "active", "inactive",
                   effective_at=at("2026-11-05T10:00:01"))


def test_streams_are_ordered_as_python_compares_ids(engine: Engine) -> None:
    """The close merges its streams by comparing ids in Python: the order the database
    is asked for (`reader.bytewise`) must be Python's, whatever its collation."""
    ids = ["ab-", "a-b", "A", "a", "0", "_x", "é", "z", "Z-", "a\u00adb", "a b"]
    with engine.connect() as conn:
        _, users_order, facts_order = _as_the_reader_orders(conn, ids)
    assert users_order == facts_order == sorted(ids)


def _as_the_reader_orders(conn: Connection, ids: list[str]) -> list[list[str]]:
    """`ids` as the database orders them: by its collation, then as the reader asks for
    the users (`bytewise`) and for the facts (`sorted_by_codepoint`, selected)."""
    table = union_all(*(select(literal(i, String).label("id")) for i in ids)).subquery()
    collated = reader.sorted_by_codepoint(conn, table.c.id)
    return [list(conn.execute(stmt).scalars()) for stmt in (
        select(table.c.id).order_by(table.c.id),
        select(table.c.id).order_by(reader.bytewise(conn, table.c.id)),
        select(collated).order_by(collated))]


@pytest.mark.postgresql
def test_a_database_that_does_not_sort_by_code_point_is_asked_to() -> None:
    """A PostgreSQL database whose collation is ICU's sorts "a-b" after "ab-" and "a"
    before "A": `bytewise` sees it and orders by COLLATE "C"."""
    import uuid

    import psycopg
    from sqlalchemy import create_engine

    from tests.conftest import PG_ADMIN_DSN, PG_URL_TEMPLATE

    name = f"connector_icu_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
                      "ICU_LOCALE 'und' LOCALE 'C.UTF-8'")
    engine = create_engine(PG_URL_TEMPLATE.format(db=name))
    try:
        ids = ["ab-", "a-b", "A", "a", "0", "z", "Z-"]
        with engine.connect() as conn:
            as_collated, users_order, facts_order = _as_the_reader_orders(conn, ids)
        assert as_collated != sorted(ids)  # the data tells the two orders apart
        assert users_order == facts_order == sorted(ids)
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
