"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import QueuePool

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up and serving."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """The database answers and a connection to it is free; a load balancer should send
    traffic. A pool whose every connection is in use (slow requests holding them, a
    database that stopped answering) means new requests wait: not ready, said at once
    rather than after the pool's own wait."""
    engine = current_app.extensions["engine"]
    busy = pool_in_use(engine.pool)
    if busy is not None:
        return jsonify(status="unavailable", detail=f"all {busy} database connections of "
                       "this process are in use; requests are waiting for one"), 503
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        current_app.logger.exception("readiness check failed")
        return jsonify(status="unavailable", detail="database unreachable"), 503
    return jsonify(status="ok")


def pool_in_use(pool: Any) -> int | None:
    """How many connections a connection pool holds when every one is checked out and it
    may open no more; None while one is free (or for a pool without a bound)."""
    if not isinstance(pool, QueuePool):
        return None
    capacity = pool.size() + max(pool._max_overflow, 0)  # noqa: SLF001 - no public getter
    checked_out = pool.checkedout()
    return checked_out if pool._max_overflow >= 0 and checked_out >= capacity else None  # noqa: SLF001
