"""Count the SQL statements that code issues, to guard list endpoints against N+1 queries:
a page of 50 rows must cost the statements a page of 5 does."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

SIZES = (5, 50)


# Hooks a test adds for a while, by the engine's dialect (shared by the engine and the
# copies execution_options makes). SQLAlchemy's own listener lists are not safe to change
# while another thread runs a statement on the engine (it fails that statement with
# "deque mutated during iteration"): a test's hooks go in this list instead, and the
# one listener `install` registered, before any thread used the engine, calls them.
_HOOKS: dict[int, list[Callable[..., Any]]] = {}


def install(engine: Engine) -> None:
    """Let `listening` add hooks to `engine` safely; call it as the engine is made."""
    _HOOKS.setdefault(id(engine.dialect), [])
    event.listen(engine, "before_cursor_execute", _call_hooks)


def _call_hooks(conn: Any, *args: Any) -> None:
    for hook in tuple(_HOOKS.get(id(conn.dialect), ())):
        hook(conn, *args)


@contextmanager
def listening(engine: Engine, hook: Callable[..., Any]) -> Iterator[None]:
    """Call `hook` as a `before_cursor_execute` listener of `engine` while the block runs:
    through the engine's installed listener where `install` ran, else registered with
    SQLAlchemy for the block (an engine no other thread uses)."""
    hooks = _HOOKS.get(id(engine.dialect))
    if hooks is None:
        event.listen(engine, "before_cursor_execute", hook)
        try:
            yield
        finally:
            event.remove(engine, "before_cursor_execute", hook)
        return
    hooks.append(hook)
    try:
        yield
    finally:
        hooks.remove(hook)


@contextmanager
def counting(engine: Engine) -> Iterator[list[str]]:
    """Collect the statements this thread sends through `engine` while the block runs.

    Other threads are left out: a live server's or a scheduler's statements are not the
    request's under test (the Flask test client runs the request in this thread)."""
    thread = threading.get_ident()
    issued: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if threading.get_ident() == thread:
            issued.append(statement)

    with listening(engine, record):
        yield issued


def assert_flat(engine: Engine, add: Callable[[int], Any], read: Callable[[int], Any],
                sizes: tuple[int, ...] = SIZES) -> dict[int, int]:
    """Assert that `read` issues no more statements with more rows behind it.

    For each size in turn, `add(k)` adds k rows to bring the data to that size and
    `read(size)` reads it (and checks that it sees them all, or the guard guards nothing).
    `read` runs once unobserved first, so that caches that fill on a first request (a
    token's lookup, the tenant's settings) do not count. Returns the statements per size.
    """
    counts: dict[int, list[str]] = {}
    have = 0
    for size in sizes:
        add(size - have)
        have = size
        read(size)
        with counting(engine) as issued:
            read(size)
        counts[size] = issued
    first, *rest = sizes
    for size in rest:
        few, many = len(counts[first]), len(counts[size])
        assert many <= few, _grown(counts, first, size)
    return {size: len(issued) for size, issued in counts.items()}


def _grown(counts: dict[int, list[str]], small: int, large: int) -> str:
    """Name what was issued more often with more rows: the N+1 to look for."""
    few, many = _tally(counts[small]), _tally(counts[large])
    grew = [f"  {times}x (was {few.get(s, 0)}x) {s[:300]}" for s, times in many.items()
            if times > few.get(s, 0)]
    return (f"{len(counts[small])} statements at {small} rows, {len(counts[large])} at "
            f"{large}; issued more often:\n" + "\n".join(grew))


def _tally(issued: list[str]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for statement in issued:
        flat = " ".join(statement.split())
        seen[flat] = seen.get(flat, 0) + 1
    return seen
