"""A closed month's lines as stored: one row per user in `billing_lines`.

    (decision, name, kept state) ──line_row──> row tuple ──insert_lines──> billing_lines
    BillingLine ──line_decision──> Decision (to compare with a refold)

A line's modules and units are joined by `SEP` in one column each; the hashed line
(billing.snapshot.line_hash) joins them the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from billing.policies import Decision

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from connector.models import BillingLine

SEP = "\x1f"
Line = tuple[Decision, str, str]  # a user's decision, name and end-of-month state

_INSERT_LINE = ("INSERT INTO billing_lines (close_id, user_id, user_name, billable, reason, "
                "plan, audience, modules, units, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_COPY_LINES = ("COPY billing_lines (close_id, user_id, user_name, billable, reason, plan, "
               "audience, modules, units, state) FROM STDIN")


class AttemptLost(RuntimeError):
    """A close attempt was deleted under its process: it was silent for
    [billing] close_lease_seconds (a stall) and a pass took it for a dead process's."""


def mark_alive(s: Session, close_id: int) -> None:
    """Say that the close attempt `close_id` is being built (its heartbeat, written with
    the caller's commit); raise AttemptLost if it was swept as a dead process's."""
    from sqlalchemy import update

    from connector.clock import now
    from connector.models import BillingClose

    done = s.execute(update(BillingClose).where(
        BillingClose.id == close_id, BillingClose.state == "building").values(alive_at=now()))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise AttemptLost(
            "This close stalled past [billing] close_lease_seconds and another pass took "
            "it for a dead process's and deleted it; the next pass closes the month.")


def line_row(close_id: int, d: Decision, user_name: str, state: str) -> tuple[Any, ...]:
    """A line's column values in the order `_INSERT_LINE` names them (tuples: a million
    of them pass from the workers to the closing process)."""
    return (close_id, d.user_id, user_name, d.billable, d.reason, d.plan, d.audience,
            SEP.join(d.modules), SEP.join(d.units), state)


def insert_lines(s: Session, rows: list[tuple[Any, ...]]) -> None:
    """Write a chunk of lines straight to the driver (no column here needs SQLAlchemy's
    parameter processing): COPY on PostgreSQL, executemany on SQLite."""
    raw = s.connection().connection.driver_connection
    assert raw is not None  # a live connection, checked out for this session
    if s.get_bind().dialect.name == "postgresql":
        with raw.cursor() as cursor, cursor.copy(_COPY_LINES) as copy:
            for row in rows:
                copy.write_row(row)
        return
    cursor = raw.cursor()
    cursor.executemany(_INSERT_LINE, rows)
    cursor.close()


def line_decision(line: BillingLine) -> Decision:
    """Read a stored line back as the decision it recorded."""
    return Decision(line.user_id, line.billable, line.reason, line.plan, line.audience,
                    tuple(filter(None, line.modules.split(SEP))),
                    tuple(filter(None, line.units.split(SEP))))
