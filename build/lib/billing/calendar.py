"""Billing months: half-open `[local 00:00 on the 1st, local 00:00 on the next 1st)`.

Months are computed in the tenant's IANA time zone, never with a fixed offset, so DST and
offset changes land where the zone's rules put them (PRODUCT.md, "Precise readings"):

- where local midnight on the 1st does not exist (a DST gap, e.g. America/Asuncion on
  2023-10-01, whose clocks jump from 00:00 to 01:00), the month starts at the first
  instant after the gap;
- where it occurs twice (e.g. America/Havana on 2026-11-01, whose clocks fall back from
  01:00 to 00:00), the month starts at the earlier one.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class InvalidMonth(ValueError):
    """A month or time zone that cannot be used; the message says what was expected."""


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        match = _MONTH.match(text.strip()) if isinstance(text, str) else None
        if not match or not 1900 <= int(match.group(1)) <= 9998:
            raise InvalidMonth(f"{text!r} is not a month: use YYYY-MM, e.g. 2026-11.")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def containing(cls, instant: dt.datetime, tz: str) -> Month:
        """The billing month an instant falls in, in the given zone."""
        month = cls.of_local(instant.astimezone(zone(tz)))
        # The local calendar and the month boundaries can disagree only around a
        # boundary moved by a gap; the boundaries decide.
        if instant < month.start(tz):
            return month.previous()
        if instant >= month.end(tz):
            return month.next()
        return month

    @classmethod
    def of_local(cls, value: dt.date) -> Month:
        return cls(value.year, value.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def first_day(self) -> dt.date:
        return dt.date(self.year, self.month, 1)

    def start(self, tz: str) -> dt.datetime:
        """The UTC instant the month begins in zone `tz`."""
        return local_midnight(self.first_day(), tz)

    def end(self, tz: str) -> dt.datetime:
        """The UTC instant the month ends (exclusive): the next month's start."""
        return self.next().start(tz)

    def window(self, tz: str) -> Window:
        start = self.start(tz)
        second_day = local_midnight(self.first_day() + dt.timedelta(days=1), tz)
        return Window(self, tz, start, self.end(tz), second_day)


@dataclass(frozen=True)
class Window:
    """A month's instants in one zone: `[start, end)`, and the end of its first day."""

    month: Month
    tz: str
    start: dt.datetime
    end: dt.datetime
    first_day_end: dt.datetime


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, or InvalidMonth naming it."""
    return _zone(name)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidMonth(
            f"{name!r} is not an IANA time zone: use a name such as Europe/Amsterdam or UTC."
        ) from exc


def valid_zone(name: str) -> bool:
    try:
        zone(name)
    except InvalidMonth:
        return False
    return True


def local_midnight(day: dt.date, tz: str) -> dt.datetime:
    """The UTC instant of 00:00 on `day` in zone `tz`: the earlier one if it occurs twice,
    the first instant after the gap if it does not occur at all."""
    info = zone(tz)
    wall = dt.datetime(day.year, day.month, day.day)
    earlier = wall.replace(tzinfo=info, fold=0).astimezone(dt.UTC)
    if earlier.astimezone(info).replace(tzinfo=None) == wall:
        later = wall.replace(tzinfo=info, fold=1).astimezone(dt.UTC)
        return min(earlier, later)
    # In a gap: fold=0 applies the offset before the jump and lands at or after its end,
    # fold=1 the offset after it and lands before its start. The jump is in between.
    low = wall.replace(tzinfo=info, fold=1).astimezone(dt.UTC)
    high = earlier
    after = high.astimezone(info).utcoffset()
    while high - low > dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(info).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high
