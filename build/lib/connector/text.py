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
