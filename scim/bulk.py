"""/Bulk (RFC 7644 §3.7): many operations in one request, with bulkId references.

Each operation runs in its own savepoint: one that fails is rolled back alone and
reported; `failOnErrors` stops the run after that many failures. The request commits
what succeeded, so a crash mid-way leaves whole operations, never half of one.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import OperationalError, PendingRollbackError
from sqlalchemy.orm import Session

from connector import provlog
from connector.commands import ExpectedVersion
from scim import casting, resources
from scim.errors import (
    Conflict,
    InvalidSyntax,
    InvalidValue,
    MethodNotAllowed,
    PayloadTooLarge,
    ScimError,
)
from scim.failures import to_scim_error
from scim.resources import ScimContext
from scim.schemas import BULK_REQUEST, BULK_RESPONSE

_PATH = re.compile(r"^/(Users|Groups)(?:/([^/]+))?$")
_BULK_REF = re.compile(r"^bulkId:(.+)$")

Renderer = Callable[[str, Any], dict[str, Any]]


def run(session: Session, ctx: ScimContext, body: Any, max_operations: int,
        single_renderer: Renderer) -> dict[str, Any]:
    """Run the operations, each after the POSTs whose bulkId it references (RFC 7644
    §3.7: a service provider may reorder as long as the result is the client's intent),
    otherwise in request order; the response lists them in request order."""
    operations, fail_on_errors = _read_request(body, max_operations)
    order, refusals = _processing_order(operations)
    created: dict[str, str] = {}
    results: dict[int, dict[str, Any]] = {}
    errors = 0
    for index in order:
        if fail_on_errors is not None and errors >= fail_on_errors:
            break
        result = _run_one(session, ctx, operations[index], created, single_renderer,
                          refusals.get(index))
        errors += int(result["status"]) >= 400
        results[index] = result
    session.commit()
    return {"schemas": [BULK_RESPONSE], "Operations": [results[i] for i in sorted(results)]}


def _processing_order(operations: list[dict[str, Any]]
                      ) -> tuple[list[int], dict[int, ScimError]]:
    """The order to run operations in, and the ones refused before they run.

    An operation that references a bulkId runs after the POST that defines it (stable:
    otherwise request order). A POST repeating an earlier POST's bulkId is refused, and
    so are operations whose references go round in a circle (RFC 7644 §3.7.1: 409).
    """
    defined: dict[str, int] = {}
    refusals: dict[int, ScimError] = {}
    for index, op in enumerate(operations):
        bulk_id = op.get("bulkId")
        if str(op.get("method", "")).upper() != "POST" or not isinstance(bulk_id, str):
            continue
        if bulk_id in defined:
            refusals[index] = InvalidValue(f"bulkId {bulk_id!r} is already used by an "
                                           "earlier operation; each POST needs its own.")
        else:
            defined[bulk_id] = index
    needs = {index: {defined[ref] for ref in _references(op) if ref in defined} - {index}
             for index, op in enumerate(operations)}
    order = _stable_topological(needs)
    for index in sorted(set(needs) - set(order)):  # a circle: each waits for another
        refusals[index] = Conflict("The bulkId references of this operation go round in "
                                   "a circle (or wait for one) and cannot be resolved "
                                   "(RFC 7644 §3.7.1).")
        order.append(index)
    for index, op in enumerate(operations):  # a group naming itself as its member
        bulk_id = op.get("bulkId")
        if isinstance(bulk_id, str) and bulk_id in _references(op) and index not in refusals:
            refusals[index] = Conflict("An operation cannot reference its own bulkId.")
    return order, refusals


def _stable_topological(needs: dict[int, set[int]]) -> list[int]:
    """Each index after the ones it needs, the lowest ready index first (so request
    order when nothing refers forward); indexes in a circle are left out."""
    dependents: dict[int, list[int]] = {i: [] for i in needs}
    pending = {i: len(wanted) for i, wanted in needs.items()}
    for index, wanted in needs.items():
        for other in wanted:
            dependents[other].append(index)
    ready = [i for i, count in pending.items() if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for dependent in dependents[index]:
            pending[dependent] -= 1
            if pending[dependent] == 0:
                heapq.heappush(ready, dependent)
    return order


def _references(op: dict[str, Any]) -> set[str]:
    """The bulkIds an operation refers to, in its path and its data."""
    found: set[str] = set()
    path = op.get("path")
    if isinstance(path, str):
        tail = path.rpartition("/")[2]
        match = _BULK_REF.match(tail)
        if match:
            found.add(match.group(1))
    _collect(op.get("data"), found)
    return found


def _collect(value: Any, found: set[str]) -> None:
    if isinstance(value, str):
        match = _BULK_REF.match(value)
        if match:
            found.add(match.group(1))
    elif isinstance(value, list):
        for item in value:
            _collect(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found)


def _read_request(body: Any, max_operations: int) -> tuple[list[dict[str, Any]], int | None]:
    if not isinstance(body, dict):
        raise InvalidSyntax("A bulk request must be a JSON object.")
    schemas = [s.lower() for s in body.get("schemas", []) if isinstance(s, str)]
    if BULK_REQUEST.lower() not in schemas:
        raise InvalidSyntax(f"'schemas' must contain {BULK_REQUEST}.")
    operations = body.get("Operations")
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        raise InvalidSyntax("'Operations' must be a list of objects.")
    if len(operations) > max_operations:
        raise PayloadTooLarge(
            f"Bulk requests may have at most {max_operations:,} operations (maxOperations "
            f"in /ServiceProviderConfig); this one has {len(operations):,}. Send them in "
            "several requests.")
    fail = body.get("failOnErrors")
    if fail is not None and (isinstance(fail, bool) or not isinstance(fail, int) or fail < 1):
        raise InvalidValue("'failOnErrors' must be a positive integer.")
    return operations, fail


def _run_one(session: Session, ctx: ScimContext, op: dict[str, Any], created: dict[str, str],
             render: Renderer, refusal: ScimError | None = None) -> dict[str, Any]:
    method = str(op.get("method", "")).upper()
    bulk_id = op.get("bulkId")
    out: dict[str, Any] = {"method": method}
    if bulk_id is not None:
        out["bulkId"] = bulk_id
    try:
        if refusal is not None:
            raise refusal
        with session.begin_nested():
            status, row, kind = _dispatch(session, ctx, op, method, created)
        if row is not None:
            resource = render(kind, row)
            out.update(location=resource["meta"]["location"], version=resource["meta"]["version"])
            if method == "POST" and isinstance(bulk_id, str):
                created[bulk_id] = row.id
        out["status"] = str(status)
    except (OperationalError, PendingRollbackError):
        # The database connection is gone (or the transaction with it): no later
        # operation can run, nor the commit. The whole request answers 503 with
        # Retry-After, as a single POST or PATCH does, and nothing was committed.
        raise
    except Exception as exc:  # each operation's failure is reported, never raised
        error = to_scim_error(exc)
        out.update(status=str(error.status), response=error.to_scim())
        _log_failure(session, ctx, op, method, error)
    return out


_OPERATIONS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}


def _log_failure(session: Session, ctx: ScimContext, op: dict[str, Any], method: str,
                 error: ScimError) -> None:
    """The failed operation's provisioning log entry, in the request's transaction (its
    savepoint was rolled back: nothing of it is applied)."""
    if provlog.logged_source(ctx.write) is None:
        return
    path = str(op.get("path", ""))[:400]
    provlog.record_many(session, [provlog.failed_request_entry(
        ctx.write, method=f"Bulk {method}"[:16], path=path, status=error.status,
        scim_type=error.scim_type, detail=error.detail,
        operation=_OPERATIONS.get(method, "request"))])


def _dispatch(session: Session, ctx: ScimContext, op: dict[str, Any], method: str,
              created: dict[str, str]) -> tuple[int, Any, str]:
    path = _resolve(op.get("path"), created)
    match = _PATH.match(path) if isinstance(path, str) else None
    if match is None:
        raise InvalidValue(f"Unsupported bulk path {op.get('path')!r}; "
                           "use /Users[/id] or /Groups[/id].")
    kind, resource_id = match.group(1), match.group(2)
    data = _resolve(op.get("data"), created)
    users = kind == "Users"
    if method == "POST" and resource_id is None:
        if not isinstance(op.get("bulkId"), str):
            raise InvalidValue("A bulk POST needs a 'bulkId'.")
        row = (resources.create_user if users else resources.create_group)(session, ctx, data)
        return 201, row, kind
    if resource_id is None:
        raise InvalidValue(f"{method} needs a resource id in its path.")
    if method not in ("PUT", "PATCH", "DELETE"):
        raise MethodNotAllowed(f"Bulk method {method or '(none)'} is not supported.")
    version = _expected_version(op.get("version"))
    if method == "PUT":
        fn = resources.replace_user if users else resources.replace_group
        return 200, fn(session, ctx, resource_id, data, version), kind
    if method == "PATCH":
        fn = resources.patch_user if users else resources.patch_group
        return 200, fn(session, ctx, resource_id, data, version), kind
    (resources.delete_user if users else resources.delete_group)(
        session, ctx, resource_id, version)
    return 204, None, kind


def _expected_version(value: Any) -> ExpectedVersion:
    """An operation's `version` (RFC 7644 §3.7), read as an If-Match header is: a tag we
    never issued matches nothing, rather than dropping the condition."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidValue(f"An operation's 'version' must be an entity tag such as "
                           f'W/"3", not {value!r:.100}.')
    return casting.parse_if_match(value)


def _resolve(value: Any, created: dict[str, str]) -> Any:
    """Replace `bulkId:x` references with the ids created earlier in this request."""
    if isinstance(value, str):
        if value.startswith("/"):
            head, _, tail = value.rpartition("/")
            return f"{head}/{_resolve(tail, created)}" if tail.startswith("bulkId:") else value
        match = _BULK_REF.match(value)
        if match is None:
            return value
        if match.group(1) not in created:
            raise InvalidValue(f"bulkId {match.group(1)!r} names no POST of this request "
                               "that succeeded.")
        return created[match.group(1)]
    if isinstance(value, list):
        return [_resolve(v, created) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, created) for k, v in value.items()}
    return value


__all__ = ["ScimError", "run"]
