"""The change log of a fake directory: what changed, in order, as delta tokens see it.

A delta token is a position in this log. A seeded block of users is one virtual run
whose entries are built when read, so seeding a million users logs nothing per user.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

ALL_FIELDS = frozenset({"*"})  # a change that (re)creates the object: every property is new
REMOVED = frozenset({"@removed"})


@dataclass(frozen=True, slots=True)
class UserChange:
    user_id: str
    fields: frozenset[str]  # changed properties, ALL_FIELDS, or {"@removed"}


@dataclass(frozen=True, slots=True)
class GroupChange:
    group_id: str
    fields: frozenset[str]


@dataclass(frozen=True, slots=True)
class MemberChange:
    group_id: str
    member_id: str
    member_type: str
    added: bool


Change = UserChange | GroupChange | MemberChange


class ChangeLog:
    """An append-only list of changes in which a seeded block is one virtual run."""

    def __init__(self) -> None:
        self._runs: list[Sequence[Change]] = []
        self._starts: list[int] = []
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, change: Change) -> None:
        last = self._runs[-1] if self._runs else None
        if not isinstance(last, list):  # a virtual run is read-only: start a real one
            last = []
            self._runs.append(last)
            self._starts.append(self._length)
        last.append(change)
        self._length += 1

    def extend_virtual(self, run: Sequence[Change]) -> None:
        self._runs.append(run)
        self._starts.append(self._length)
        self._length += len(run)

    def slice(self, start: int, end: int) -> Iterator[Change]:
        end = min(end, self._length)
        run_index = bisect.bisect_right(self._starts, start) - 1
        position = start
        while position < end and run_index < len(self._runs):
            run, run_start = self._runs[run_index], self._starts[run_index]
            stop = min(end - run_start, len(run))
            for offset in range(position - run_start, stop):
                yield run[offset]
            position = run_start + stop
            run_index += 1
