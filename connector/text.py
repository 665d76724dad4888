"""What text the databases can store: no NUL (PostgreSQL refuses it in text columns)
and no unpaired surrogates (not encodable as UTF-8 at all). Every surface checks input
with these, so such a request is a clear 400 rather than a database error."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def storable_text(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(value: Any) -> bool:
    """Whether every string in a JSON value (keys too) is storable. Iterative: the
    nesting depth is the client's choice."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not storable_text(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def all_storable(texts: Iterable[str]) -> bool:
    return all(storable_text(t) for t in texts)


# The largest row id the databases hold (a signed 64-bit BIGINT): a larger number in a
# URL names no row, and handed to the database it is an overflow error, not "none".
MAX_ROW_ID = 2**63 - 1


def digits(text: str) -> bool:
    """Whether `text` is ASCII digits only. `str.isdigit()` also says yes to "²" and
    other digits that `int()` refuses, which turned a "must be a number" 400 into a 500."""
    return text.isascii() and text.isdigit()
