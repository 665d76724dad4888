"""Time-ordered ids for new rows (connector/ids.py)."""

from __future__ import annotations

import time
import uuid

from connector.ids import new_id

MS = 1_000_000  # nanoseconds


def test_ids_are_uuid7_shaped_unique_and_ordered_by_time() -> None:
    now = time.time_ns()
    first = [new_id(now) for _ in range(1000)]
    later = new_id(now + MS)
    parsed = uuid.UUID(later)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert str(parsed) == later and len(later) == 36
    assert len(set(first)) == 1000  # random within one millisecond
    assert all(earlier < later for earlier in first)
    assert int(later.replace("-", "")[:12], 16) == now // MS + 1
    assert abs(int(new_id().replace("-", "")[:12], 16) - now // MS) < 60_000
