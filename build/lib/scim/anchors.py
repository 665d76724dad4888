"""Page anchors: where positions of the id-ordered user list were found, per process.

SCIM clients page with `startIndex`; an OFFSET walks every skipped row, so page 1,000 of
an Okta import cost ten times page 1. Each page served tells us which id sits at its
first and last position. While the tenant's `generation` (bumped by every user creation
and removal) stands still, those positions stay true, and a later page starts from the
nearest one at or before it: the next page of a sequential import skips nothing.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict


class PageAnchors:
    def __init__(self, max_tenants: int = 1000, max_anchors: int = 2000) -> None:
        self.max_tenants = max_tenants
        self.max_anchors = max_anchors
        self._lock = threading.Lock()
        # tenant -> (generation, sorted positions, ids at those positions)
        self._tenants: OrderedDict[str, tuple[int, list[int], list[str]]] = OrderedDict()

    def nearest(self, tenant_id: str, generation: int, position: int) -> tuple[int, str] | None:
        """The known (position, id) closest at or before `position`, if any."""
        with self._lock:
            entry = self._tenants.get(tenant_id)
            if entry is None or entry[0] != generation:
                return None
            self._tenants.move_to_end(tenant_id)
            _, positions, ids = entry
            index = bisect.bisect_right(positions, position) - 1
            return (positions[index], ids[index]) if index >= 0 else None

    def remember(self, tenant_id: str, generation: int, position: int, user_id: str) -> None:
        if generation < 0:
            return
        with self._lock:
            entry = self._tenants.get(tenant_id)
            if entry is None or entry[0] != generation:
                entry = (generation, [], [])
                self._tenants[tenant_id] = entry
            self._tenants.move_to_end(tenant_id)
            _, positions, ids = entry
            index = bisect.bisect_left(positions, position)
            if index < len(positions) and positions[index] == position:
                ids[index] = user_id
            elif len(positions) < self.max_anchors:
                positions.insert(index, position)
                ids.insert(index, user_id)
            while len(self._tenants) > self.max_tenants:
                self._tenants.popitem(last=False)
