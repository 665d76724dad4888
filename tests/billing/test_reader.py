"""The month close's reader helpers (billing.reader) and its collector pause."""

from __future__ import annotations

import gc
import json

import pytest

from billing import reader
from billing.fold import JOINED, LEFT, Fact


def test_facts_come_grouped_by_user_and_in_order_whatever_order_the_rows_had() -> None:
    """The database sorts a partition's events by user only; each user's facts are put
    in instant-then-id order here, and memberships take the fold's kind names."""
    rows = [
        ("u1", "user.status", "false", "2026-10-03 00:00:00.000000", 9),
        ("u1", "user.created", '{"userName": "a"}', "2026-10-01 00:00:00.000000", 4),
        ("u1", "group.member_added", "g1", "2026-10-03 00:00:00.000000", 7),
        ("u2", "group.member_removed", "g1", "2026-10-02 00:00:00.000000", 2),
        ("u2", "user.modules", '["Hybrid"]', "2026-10-01 00:00:00.000000", 3),
    ]
    got = [(uid, [Fact(*fact) for fact in facts]) for uid, facts in reader._by_user(rows)]
    assert got == [
        ("u1", [Fact("2026-10-01 00:00:00.000000", 4, "user.created", {"userName": "a"}),
                Fact("2026-10-03 00:00:00.000000", 7, JOINED, "g1"),
                Fact("2026-10-03 00:00:00.000000", 9, "user.status", False)]),
        ("u2", [Fact("2026-10-01 00:00:00.000000", 3, "user.modules", ["Hybrid"]),
                Fact("2026-10-02 00:00:00.000000", 2, LEFT, "g1")]),
    ]


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
    from billing.close import _collecting_per_chunk

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
