"""The month close's reader helpers (billing.reader) and its collector pause."""

from __future__ import annotations

import gc
import json

import pytest

from billing import reader
from billing.fold import JOINED, USER_KINDS


def _expected_facts(engine, tenant_id: str) -> list[tuple[str, list[tuple]]]:
    """What a partition should read, straight from the events table through the ORM:
    own events and memberships by user, in instant-then-id order, memberships under the
    fold's kind names with the group as their value."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from connector.models import Event

    dialect = engine.dialect.name
    by_user: dict[str, list[tuple]] = {}
    with Session(engine) as s:
        for e in s.scalars(select(Event).where(Event.tenant_id == tenant_id)):
            if e.kind in reader.MEMBER_KINDS:
                uid, kind, value = e.object_id, reader.MEMBER_KINDS[e.kind], e.subject_id
            elif e.subject_type == "user" and e.kind in USER_KINDS:
                uid, kind, value = e.subject_id, e.kind, e.new_value
            else:
                continue
            at = reader.comparable(dialect, _window_at(e.effective_at)).start
            by_user.setdefault(uid, []).append((at, e.id, kind, value))
    return [(uid, sorted(facts)) for uid, facts in sorted(by_user.items())]


def _window_at(instant):
    """A window starting at `instant`, to turn it into the fold's form (`comparable`)."""
    from billing.calendar import Month, Window

    return Window(Month(2026, 1), "UTC", instant, instant, instant)


def test_a_partition_reads_each_users_facts_in_order_as_the_log_stored_them(engine) -> None:
    """The database groups a partition's events by user and hands each user's facts as
    one JSON array (billing.reader._facts_json); they come out as the log stored them:
    in instant-then-id order whatever order they were recorded in, names and values
    with quotes, backslashes and characters beyond the BMP intact, memberships under the
    fold's kind names, a group id that needs escaping escaped, the partition's bounds
    kept."""
    from connector import events
    from connector.events import WriteContext
    from connector.status import Source
    from tests.billing.history import History, at

    h = History(engine)
    odd = 'Zo\u00eb "quoted" \\ back\\slash \U0001f4a1 tab\t'
    a = h.create("2026-01-02T00:00:00", odd, modules=("Hybrid",),
                 frontline={"desklessPercent": 80, "frontlineRole": "backstage"})
    b = h.create("2026-01-03T00:00:00", "bob@example.com")
    g = h.group("2026-01-04T00:00:00", "Sales", ("Engage",), (a, b))
    h.set_active("2026-01-05T00:00:00", b, False)
    h.members("2026-01-06T00:00:00", g, "remove", a)
    # Recorded last, effective before b's other facts of that day: read in instant order.
    h.late_event("2026-01-03T12:00:00", "2026-01-07T00:00:00", b, "user.guest", False, True)
    with h.maker() as s:  # a group id that JSON must escape
        ctx = WriteContext(h.tenant_id, Source.SCIM, "test", "test", at("2026-01-08T00:00:00"))
        events.record_many(s, [events.row(ctx, "group", 'g"\\1', events.MEMBER_ADDED,
                                          None, b, object_id=b)])
        if engine.dialect.name == "sqlite":
            # Python's json writes NaN, which SQLite stores and orjson refuses: that
            # user's array goes to json.loads (PostgreSQL's json type refuses NaN).
            events.record(s, ctx, "user", b, "user.frontline", {},
                          {"desklessPercent": float("nan")})
        s.commit()
    expected = _expected_facts(engine, h.tenant_id)
    assert {uid for uid, _ in expected} == {a, b}
    assert [kind for _, _, kind, _ in dict(expected)[b]][:5] == [
        "user.created", "user.guest", JOINED, "user.status", JOINED]

    scope = reader.Scope(h.tenant_id, at("2026-02-01T00:00:00"), at("2026-02-01T00:00:00"),
                         at("2026-03-01T00:00:00"), with_activity=False)
    low, high = sorted((a, b))
    with h.maker() as s, reader.streaming(s) as conn:
        got = [(uid, [tuple(f) for f in facts])
               for uid, facts in reader.partition_facts(conn, scope, None, None)]
        first = [uid for uid, _ in reader.partition_facts(conn, scope, None, high)]
        second = [uid for uid, _ in reader.partition_facts(conn, scope, high, None)]
    if engine.dialect.name == "sqlite":  # NaN equals nothing: compare it apart
        nan = dict(got)[b].pop()
        assert nan[2] == "user.frontline" and nan[3]["desklessPercent"] != nan[3][
            "desklessPercent"]
        dict(expected)[b].pop()
    assert got == expected
    assert dict(got)[a][0][3]["userName"] == odd
    assert (first, second) == ([low], [high])


@pytest.mark.parametrize("text", [
    '{"desklessPercent": NaN}', "[Infinity, -Infinity]", "18446744073709551615",
    "-9223372036854775808", '"\\ud800"', "1e400", '{"a": 1, "a": 2}',
    '{"name": "Zoë 💡", "n": -0.0, "m": 1.5e-7}', "true", "null", '["Hybrid", "Engage"]'])
def test_values_are_what_the_standard_parser_gives(text: str) -> None:
    """orjson parses the events' values; what it refuses (Python's json writes NaN and
    accepts lone surrogates) goes to json.loads, so the values are json.loads's."""
    decode = reader.json_decoder()
    expected = json.loads(text)
    got = decode(text)
    assert json.dumps(got) == json.dumps(expected) and type(got) is type(expected)
    assert decode(text) == got or got != got  # cached (NaN never equals itself)


def test_an_integer_beyond_64_bits_is_the_one_value_that_differs() -> None:
    """The documented exception (reader.json_decoder): orjson makes it a float. The
    fold compares the only number it reads with 50, so no decision changes."""
    decode = reader.json_decoder()
    got = decode('{"desklessPercent": 123456789012345678901234567890}')
    assert got == {"desklessPercent": 1.2345678901234568e29}


def test_the_collector_is_paused_while_a_partition_folds_and_back_after() -> None:
    from billing.tenant_fold import _collecting_per_chunk

    assert gc.isenabled()
    with _collecting_per_chunk():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _collecting_per_chunk():
        raise RuntimeError("a failed chunk")
    assert gc.isenabled()
    gc.disable()
    try:  # a caller that had it off keeps it off
        with _collecting_per_chunk():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_instants_read_for_the_fold_compare_as_the_window_does(engine) -> None:
    """The fold compares the instants rows carry (`reader.instant`: SQLite's text,
    PostgreSQL's microseconds since 1970) with the window's (`reader.comparable`):
    exactly at a boundary they are equal, a microsecond either side they order."""
    import datetime as dt

    from sqlalchemy import literal, select

    from billing.calendar import Month
    from connector.models import UTCDateTime  # as the events table stores instants

    window = Month(2026, 11).window("America/Havana")
    dialect = engine.dialect.name
    wanted = reader.comparable(dialect, window)
    tick = dt.timedelta(microseconds=1)
    with engine.connect() as conn:
        def read(value: dt.datetime):
            stored = select(literal(value, UTCDateTime()).label("at")).subquery()
            return conn.execute(select(reader.instant(dialect, stored.c.at))).scalar_one()

        for bound, expected in ((window.start, wanted.start), (window.end, wanted.end),
                                (window.first_day_end, wanted.first_day_end)):
            assert read(bound) == expected
            assert read(bound - tick) < expected < read(bound + tick)
        assert read(dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)) < read(
            dt.datetime(1970, 1, 1, tzinfo=dt.UTC))


@pytest.mark.parametrize("own", [False, True])
def test_sqlite_sorts_a_partition_with_a_small_page_cache_and_puts_it_back(engine, own) -> None:
    """A partition's grouping sorts faster with a small page cache (reader.SORT_CACHE_KIB);
    the connection, pooled and shared with other work, gets its own size back after."""
    from sqlalchemy.orm import Session

    if engine.dialect.name != "sqlite":
        with Session(engine) as s, reader.streaming(s, own) as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
        return

    def size(conn) -> int:
        return conn.exec_driver_sql("PRAGMA cache_size").scalar_one()

    with Session(engine) as s:
        usual = size(s.connection())
        assert usual != -reader.SORT_CACHE_KIB
        with reader.streaming(s, own) as conn:
            assert size(conn) == -reader.SORT_CACHE_KIB
            if own:
                assert size(s.connection()) == usual
        assert size(s.connection()) == usual
        with pytest.raises(RuntimeError), reader.streaming(s, own):
            raise RuntimeError("a failed partition")
        assert size(s.connection()) == usual
    with engine.connect() as conn:  # the pooled connection `own` read on
        assert size(conn) == usual
