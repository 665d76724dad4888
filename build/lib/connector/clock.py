"""The wall clock, read in one place.

Code that depends on time takes `now` as an argument (STYLE.md: time is passed in); the
edges where a request, a command or a scheduled job begins read the clock here, so a
test that must move time has one name to replace.
"""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    """The current instant, timezone-aware in UTC."""
    return dt.datetime.now(dt.UTC)
