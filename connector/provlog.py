"""The provisioning log: every object change SCIM pushes and Entra sync pulls attempt,
with its result, a stable code, a reason in plain words and the attributes changed.

Three writers, one table (`provisioning_log`):

- `connector.directory.Directory` derives the entries of every successful change from
  the events it writes (`from_events`), in the same transaction and the same statement
  batch (one INSERT, COPY for a sync page): what happened is logged exactly when it is
  committed, and a rolled-back change logs nothing.
- Entra sync's applier records what it could not apply or adopted (`record`,
  `record_many`), in its round's transaction.
- SCIM's error handler logs a failed request (`record_failed_request`) in its own short
  transaction, after the request's own was rolled back.

Only the identity providers' writes are logged (sources scim and entra): admin changes
have the audit log. `changes` is {attribute: [old, new]} and never carries a secret.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy.orm import Session

from connector import clock, db, events
from connector.config import ProvisioningLogSettings
from connector.errors import InvalidSetting, NotFound
from connector.events import WriteContext
from connector.models import Group, ProvisioningEntry, Tenant, User
from connector.status import Source
from connector.text import MAX_ROW_ID, digits

# The values of the log's closed columns (the API's and the page's filters list them).
SOURCES = ("scim", "entra")
OPERATIONS = ("create", "update", "disable", "enable", "delete", "restore",
              "membership_add", "membership_remove", "adopt", "skip", "request")
RESULTS = ("success", "skipped", "failure")
Result = Literal["success", "skipped", "failure"]

log = logging.getLogger(__name__)

_LOGGED = {Source.SCIM: "scim", Source.ENTRA_SYNC: "entra"}
_SECRET_WORDS = ("password", "secret", "token", "credential", "private_key", "privatekey")

_settings = ProvisioningLogSettings()


def configure(settings: ProvisioningLogSettings) -> None:
    """Take the process's settings (called where the settings are loaded: the app, the
    CLI, the worker). Off: nothing is written."""
    global _settings
    _settings = settings


def enabled() -> bool:
    return _settings.enabled


def logged_source(ctx: WriteContext) -> str | None:
    """The log's source for a write context, or None when it is not logged (admin)."""
    return _LOGGED.get(ctx.source) if _settings.enabled else None


@functools.lru_cache(maxsize=1024)
def is_secret(attribute: str) -> bool:
    """Whether an attribute's name says it holds a secret (cached: the names are few)."""
    name = attribute.casefold()
    return any(word in name for word in _SECRET_WORDS)


def clean_changes(changes: dict[str, Any] | None) -> dict[str, Any] | None:
    """{attribute: [old, new]} without any secret attribute (nested ones included)."""
    if not changes:
        return None
    kept = {k: _scrub(v) for k, v in changes.items() if not is_secret(str(k))}
    return kept or None


def _scrub(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):  # most values
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if not is_secret(str(k))}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _ref_and_client(ctx: WriteContext) -> tuple[str, str]:
    return ctx.correlation_id[:64], ctx.actor[:200]


def entry(ctx: WriteContext, *, operation: str, result: Result, code: str, reason: str,
          user_id: str | None = None, object_id: str | None = None, name: str | None = None,
          changes: dict[str, Any] | None = None, object_type: str | None = "user",
          request: dict[str, Any] | None = None, source: str | None = None
          ) -> dict[str, Any]:
    """One entry's column values (for `record_many`). `ctx` gives the tenant, time,
    source, source_ref (the SCIM request id or "sync-run:<id>") and client."""
    if operation not in OPERATIONS:
        raise ValueError(f"Unknown provisioning log operation {operation!r}.")
    if result not in RESULTS:
        raise ValueError(f"Unknown provisioning log result {result!r}.")
    ref, client = _ref_and_client(ctx)
    return {
        "tenant_id": ctx.tenant_id, "at": ctx.now,
        "source": source or _LOGGED.get(ctx.source, str(ctx.source))[:8],
        "source_ref": ref, "client": client, "operation": operation, "result": result,
        "code": code[:48], "reason": reason, "object_type": object_type,
        "user_id": user_id, "object_id": object_id[:512] if object_id else None,
        "name": name[:512] if name else None, "changes": clean_changes(changes),
        "request": request,
    }


def record(session: Session, ctx: WriteContext, *, operation: str, result: Result,
           code: str, reason: str, user_id: str | None = None, object_id: str | None = None,
           name: str | None = None, changes: dict[str, Any] | None = None,
           object_type: str | None = "user") -> None:
    """Log one entry in the caller's transaction (Entra sync: an item that failed, was
    skipped or adopted). Nothing when the log is off or `ctx` is not an identity
    provider's. Write it after rolling back the failed change's savepoint."""
    if logged_source(ctx) is None:
        return
    record_many(session, [entry(ctx, operation=operation, result=result, code=code,
                                reason=reason, user_id=user_id, object_id=object_id,
                                name=name, changes=changes, object_type=object_type)])


def record_many(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Log entries built with `entry` with one statement (COPY on PostgreSQL for many)."""
    if not rows or not _settings.enabled:
        return
    if len(rows) >= 50:
        db.insert_many(session, ProvisioningEntry.__table__, list(rows))
    else:
        session.execute(_INSERT, list(rows))


_INSERT = insert(ProvisioningEntry.__table__)


# -- derived from the directory's events ----------------------------------------------

# Which operation an event kind stands for, the first present winning (a user created
# and renamed in one sync page is one "create").
_PRIORITY = {events.USER_CREATED: "create", events.GROUP_CREATED: "create",
             events.USER_REMOVED: "delete", events.GROUP_REMOVED: "delete",
             events.USER_RESTORED: "restore", events.USER_ADOPTED: "adopt"}
_ORDER = list(_PRIORITY)
_REASONS = {
    "create": "Created.", "update": "Updated.", "delete": "Deleted.",
    "restore": "Restored.", "adopt": "An existing account was linked to the object.",
    "disable": "Disabled.", "enable": "Enabled.",
    "membership_add": "Added to the group.", "membership_remove": "Removed from the group.",
}
_ATTRIBUTE = {events.USER_GUEST: "guest", events.USER_EXTERNAL_GUEST: "externalCompanyGuest",
              events.USER_ADMIN: "admin", events.USER_MODULES: "modules",
              events.GROUP_MODULES: "modules", events.USER_FRONTLINE: "frontline",
              events.USER_STATUS: "active", events.USER_IDP_STATUS: "idpActive",
              events.USER_DELETED_LIST: "inDeletedList",
              events.GROUP_RENAMED: "displayName"}


def from_events(session: Session, ctx: WriteContext, rows: Iterable[dict[str, Any]],
                objects: dict[str, tuple[str | None, str | None]],
                extra: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The entries for a batch of the directory's event rows: one per changed user or
    group (its operation from the events' kinds, the attributes old -> new), and one
    per membership added or removed (filed under the member, so that a user's entries
    include its groups). `objects`: {id: (externalId, name)} of objects the session
    does not hold yet (just created); `extra`: {id: {attribute: [old, new]}} changes
    the events do not carry (profile attributes)."""
    source = logged_source(ctx)
    if source is None:
        return []
    ref, client = _ref_and_client(ctx)
    base = {"tenant_id": ctx.tenant_id, "at": ctx.now, "source": source, "source_ref": ref,
            "client": client, "result": "success"}  # no `request`: NULL, not JSON null
    subjects: dict[str, dict[str, Any]] = {}
    memberships: list[dict[str, Any]] = []
    for row in rows:
        kind = row["kind"]
        if kind in (events.MEMBER_ADDED, events.MEMBER_REMOVED):
            memberships.append(row)
            continue
        subject = subjects.get(row["subject_id"])
        if subject is None:
            subject = subjects[row["subject_id"]] = {
                "type": row["subject_type"], "kinds": [], "changes": {}}
        subject["kinds"].append(kind)
        _add_changes(subject["changes"], kind, row["old_value"], row["new_value"])
    for subject_id, changes in (extra or {}).items():
        if subject_id not in subjects and changes:  # a profile change without an event
            subjects[subject_id] = {"type": "user", "kinds": [], "changes": {}}
    out = []
    for subject_id, subject in subjects.items():
        kinds, changes = subject["kinds"], subject["changes"]
        if extra and subject_id in extra:
            changes.update(extra[subject_id])
        operation = next((_PRIORITY[k] for k in _ORDER if k in kinds), None)
        if operation is None:
            # A change of status names the operation even with other changes beside it
            # (a user soft-deleted in Entra ID is renamed and disabled in one change): an
            # admin looking for who was disabled filters on "disable". The attributes
            # changed are all listed.
            operation = "update"
            if events.USER_STATUS in kinds:
                operation = "enable" if changes.get("active", [None, None])[1] else "disable"
        external_id, name = _object(session, ctx.tenant_id, subject["type"], subject_id,
                                    objects)
        if name is None:
            name = (changes.get("userName") or changes.get("displayName") or [None, None])[1]
        out.append({**base, "operation": operation, "code": operation,
                    "reason": _REASONS[operation], "object_type": subject["type"],
                    "user_id": subject_id, "object_id": _cut(external_id), "name": _cut(name),
                    # The events carry no secret; profile attributes were cleaned when
                    # they were noted (`profile_changes`).
                    "changes": changes or None})
    if memberships:  # the members' names: one read for those the session lacks
        _look_up_users(session, ctx.tenant_id, {row["object_id"] for row in memberships},
                       objects)
    labels: dict[str, str] = {}
    for row in memberships:
        added = row["kind"] == events.MEMBER_ADDED
        member, group_id = row["object_id"], row["subject_id"]
        label = labels.get(group_id)
        if label is None:
            label = labels[group_id] = (
                _object(session, ctx.tenant_id, "group", group_id, objects)[1] or group_id)
        external_id, name = _object(session, ctx.tenant_id, "user", member, objects)
        operation = "membership_add" if added else "membership_remove"
        out.append({**base, "operation": operation, "code": operation,
                    "reason": f"{'Added to' if added else 'Removed from'} group {label}.",
                    "object_type": "member", "user_id": member,
                    "object_id": _cut(external_id), "name": _cut(name),
                    "changes": {"group": [None, label] if added else [label, None],
                                "groupId": [None, group_id] if added else [group_id, None]}})
    return out


def _cut(text: str | None) -> str | None:
    return text[:512] if text else None


def _look_up_users(session: Session, tenant_id: str, ids: set[str],
                   objects: dict[str, tuple[str | None, str | None]]) -> None:
    wanted = [i for i in ids if i not in objects and session.identity_map.get(
        session.identity_key(User, (tenant_id, i))) is None]
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start:start + 1000]
        for user_id, external_id, user_name in session.execute(
                select(User.id, User.external_id, User.user_name).where(
                    User.tenant_id == tenant_id, User.id.in_(chunk))):
            objects[user_id] = (external_id, user_name)


def _add_changes(changes: dict[str, Any], kind: str, old: Any, new: Any) -> None:
    if kind in (events.USER_CREATED, events.GROUP_CREATED, events.USER_RESTORED):
        for key, value in (new or {}).items():
            if value or key == "active":  # a new user's flags that are off say nothing
                changes[key] = [None, value]
    elif kind in (events.USER_PROFILE, events.USER_ADOPTED):
        for key in set(old or {}) | set(new or {}):
            changes[key] = [(old or {}).get(key), (new or {}).get(key)]
    elif kind in (events.USER_REMOVED, events.GROUP_REMOVED):
        for key, value in (old or new or {}).items():
            changes[key] = [value, None]
    elif kind in _ATTRIBUTE:
        attribute = _ATTRIBUTE[kind]
        first = changes.get(attribute)
        changes[attribute] = [first[0] if first else old, new]


def _object(session: Session, tenant_id: str, subject_type: str, subject_id: str,
            objects: dict[str, tuple[str | None, str | None]]
            ) -> tuple[str | None, str | None]:
    """(externalId, name) of a user or group, from what the session holds (no query)."""
    known = objects.get(subject_id)
    if known is not None:
        return known
    model: Any = Group if subject_type == "group" else User
    held = session.identity_map.get(session.identity_key(model, (tenant_id, subject_id)))
    if held is None:
        return None, None
    if model is Group:
        return held.external_id, held.display_name
    return held.external_id, held.user_name


def profile_changes(old: dict[str, Any] | None, new: dict[str, Any] | None
                    ) -> dict[str, Any]:
    """The top-level profile attributes (SCIM `name`, `emails`, …) that differ, old ->
    new, secrets left out."""
    old, new = old or {}, new or {}
    return {k: [_scrub(old.get(k)), _scrub(new.get(k))] for k in set(old) | set(new)
            if old.get(k) != new.get(k) and not is_secret(k) and not k.startswith("_")}


# -- failed SCIM requests ---------------------------------------------------------------


def record_failed_request(sessionmaker: Any, ctx: WriteContext, *, method: str, path: str,
                          status: int, scim_type: str | None, detail: str,
                          operation: str = "request", user_id: str | None = None) -> None:
    """Log a SCIM request that failed, in its own short transaction (the request's own
    was rolled back: nothing of it is applied)."""
    if logged_source(ctx) is None:
        return
    row = failed_request_entry(ctx, method=method, path=path, status=status,
                               scim_type=scim_type, detail=detail, operation=operation,
                               user_id=user_id)
    with sessionmaker() as session:
        session.execute(_INSERT, [row])
        session.commit()


def failed_request_entry(ctx: WriteContext, *, method: str, path: str, status: int,
                         scim_type: str | None, detail: str, operation: str = "request",
                         user_id: str | None = None) -> dict[str, Any]:
    """The entry of a failed SCIM request (or /Bulk operation)."""
    code = scim_type or {400: "bad_request", 401: "unauthorized", 403: "forbidden",
                         404: "not_found", 405: "method_not_allowed", 409: "conflict",
                         412: "precondition_failed", 413: "payload_too_large",
                         415: "unsupported_media_type", 503: "unavailable"}.get(
        status, "internal_error" if status >= 500 else f"http_{status}")
    return entry(ctx, operation=operation, result="failure", code=_snake(code),
                 reason=detail, user_id=user_id, object_type=None,
                 request={"method": method, "path": path[:512], "status": status,
                          "scimType": scim_type, "detail": detail})


def _snake(code: str) -> str:
    out = []
    for char in code:
        if char.isupper():
            out.append("_" + char.lower())
        else:
            out.append(char)
    return "".join(out).strip("_")


# -- reading and pruning --------------------------------------------------------------


def run_failures(session: Session, tenant_id: str, run_id: int) -> list[ProvisioningEntry]:
    """The failed items a sync run logged, in order."""
    return list(session.scalars(
        select(ProvisioningEntry).where(
            ProvisioningEntry.tenant_id == tenant_id,
            ProvisioningEntry.source_ref == f"sync-run:{run_id}",
            ProvisioningEntry.result == "failure")
        .order_by(ProvisioningEntry.id)))


def prune(sessionmaker: Any, now: dt.datetime, retention_days: int, batch: int) -> int:
    """Delete entries older than the retention period, tenant by tenant, `batch` rows per
    statement and transaction (short locks, bounded WAL), until none is left. Each
    DELETE finds its rows through the (tenant, time) index: no scan of the whole log.
    Returns how many."""
    cutoff = now - dt.timedelta(days=retention_days)
    with sessionmaker() as session:
        tenant_ids = list(session.scalars(select(Tenant.id).order_by(Tenant.id)))
    total = 0
    e = ProvisioningEntry
    for tenant_id in tenant_ids:
        while True:
            with sessionmaker() as session:
                ids = (select(e.id).where(e.tenant_id == tenant_id, e.at < cutoff)
                       .order_by(e.at).limit(batch))
                deleted = session.execute(delete(e).where(
                    e.id.in_(ids.scalar_subquery()))).rowcount
                session.commit()
            total += int(deleted or 0)
            if not deleted or deleted < batch:
                break
    return total


def entry_json(row: ProvisioningEntry) -> dict[str, Any]:
    """An entry as the admin API shows it."""
    return {
        "id": str(row.id), "at": row.at.isoformat(), "source": row.source,
        "sourceRef": row.source_ref, "client": row.client, "operation": row.operation,
        "result": row.result, "code": row.code, "reason": row.reason,
        "objectType": row.object_type, "userId": row.user_id, "objectId": row.object_id,
        "name": row.name, "changes": row.changes or {}, "request": row.request,
    }


def prune_job(sessionmaker: Any, settings: ProvisioningLogSettings) -> None:
    """The scheduler's pruning pass: never raises (the job must run again)."""
    try:
        removed = prune(sessionmaker, clock.now(), settings.retention_days,
                        settings.prune_batch)
        if removed:
            log.info("provisioning log: pruned %d entries older than %d days", removed,
                     settings.retention_days)
    except Exception:  # noqa: BLE001 - logged; the next pass tries again
        log.exception("provisioning log prune failed")


def add_prune_job(scheduler: Any, sessionmaker: Any, settings: ProvisioningLogSettings
                  ) -> None:
    """Prune every `prune_interval_minutes` from this process's scheduler (the web
    process's or `connector worker`'s, next to the month close)."""
    scheduler.add_job(prune_job, "interval", minutes=settings.prune_interval_minutes,
                      args=(sessionmaker, settings), id="provlog:prune", max_instances=1,
                      coalesce=True, replace_existing=True,
                      next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))


# -- the admin page's and API's query ----------------------------------------------------


@dataclass(frozen=True)
class LogFilter:
    """The filters of the log's page and API (all optional, combined with AND)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    source: str | None = None
    result: str | None = None
    operation: str | None = None
    user: str | None = None  # a connector id, an object id / externalId or a userName
    run: int | None = None  # an Entra sync run: its entries

    def query_args(self) -> dict[str, str]:
        """The filters as query-string arguments (links, paging)."""
        out = {"since": self.since.isoformat() if self.since else "",
               "until": self.until.isoformat() if self.until else "",
               "source": self.source or "", "result": self.result or "",
               "operation": self.operation or "", "user": self.user or "",
               "run": str(self.run) if self.run is not None else ""}
        return {k: v for k, v in out.items() if v}


def parse_filter(args: Mapping[str, str]) -> LogFilter:
    """Filters from query-string arguments; a bad value raises InvalidSetting naming it."""
    def choice(name: str, allowed: Sequence[str]) -> str | None:
        value = (args.get(name) or "").strip()
        if value and value not in allowed:
            raise InvalidSetting(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
        return value or None

    def instant(name: str) -> dt.datetime | None:
        value = (args.get(name) or "").strip()
        if not value:
            return None
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidSetting(f"{name} must be a date or an ISO 8601 time, e.g. "
                                 f"2026-12-01T08:00:00Z; got {value!r}.") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

    run = (args.get("run") or "").strip()
    if run and not (digits(run) and int(run) <= MAX_ROW_ID):
        raise InvalidSetting(f"run must be a sync run's number; got {run!r}.")
    user = (args.get("user") or "").strip()[:512] or None
    return LogFilter(since=instant("since"), until=instant("until"),
                     source=choice("source", SOURCES), result=choice("result", RESULTS),
                     operation=choice("operation", OPERATIONS), user=user,
                     run=int(run) if run else None)


def _where(tenant_id: str, f: LogFilter) -> list[Any]:
    e = ProvisioningEntry
    where: list[Any] = [e.tenant_id == tenant_id]
    if f.since:
        where.append(e.at >= f.since)
    if f.until:
        where.append(e.at < f.until)
    if f.source:
        where.append(e.source == f.source)
    if f.result:
        where.append(e.result == f.result)
    if f.operation:
        where.append(e.operation == f.operation)
    if f.run is not None:
        where.append(e.source_ref == f"sync-run:{f.run}")
    if f.user:
        where.append(or_(e.user_id == f.user, e.object_id == f.user, e.name == f.user))
    return where


def search(session: Session, tenant_id: str, f: LogFilter, page: int = 1, per_page: int = 50
           ) -> tuple[list[ProvisioningEntry], int]:
    """One page of entries, newest first, and how many match."""
    where = _where(tenant_id, f)
    total = session.scalar(select(func.count()).select_from(ProvisioningEntry)
                           .where(*where)) or 0
    rows = list(session.scalars(select(ProvisioningEntry).where(*where)
                                .order_by(ProvisioningEntry.id.desc())
                                .offset((page - 1) * per_page).limit(per_page)))
    return rows, total


def get_entry(session: Session, tenant_id: str, entry_id: str) -> ProvisioningEntry:
    row = (session.get(ProvisioningEntry, int(entry_id))
           if digits(entry_id) and int(entry_id) <= MAX_ROW_ID else None)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"No provisioning log entry {entry_id!r} in this tenant.")
    return row


def export_rows(session: Session, tenant_id: str, f: LogFilter, batch: int = 2000
                ) -> Iterator[tuple[Any, ...]]:
    """The CSV export's rows (heading first), oldest first, read in batches by id."""
    yield CSV_COLUMNS
    after = 0
    while True:
        rows = list(session.scalars(select(ProvisioningEntry)
                                    .where(*_where(tenant_id, f), ProvisioningEntry.id > after)
                                    .order_by(ProvisioningEntry.id).limit(batch)))
        for r in rows:
            yield (r.at.isoformat(), r.source, r.source_ref, r.client, r.operation, r.result,
                   r.code, r.reason, r.user_id, r.object_id, r.name,
                   json.dumps(r.changes, sort_keys=True) if r.changes else None)
        if len(rows) < batch:
            return
        after = rows[-1].id


CSV_COLUMNS = ("time", "source", "source ref", "client", "operation", "result", "code",
               "reason", "connector id", "object id", "name", "changes")
