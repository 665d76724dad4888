"""A tenant's attribute mapping table: read for a round, changed by an admin.

The table itself and what it means are pure (`azure_sync.mapping`); this module stores
it (`entra_attribute_maps`, no row: Entra's default), compiles it with a manager
resolver for a page, and is the admin action both the API and the UI call.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from azure_sync import lease, mapping
from azure_sync.writer import stored_profile
from connector.actions import AdminCall
from connector.directory import Directory
from connector.errors import InvalidSetting, StateConflict
from connector.models import (
    EntraAttributeMap,
    EntraManagerWait,
    EntraRegistration,
    SyncState,
    User,
)


class InvalidTable(InvalidSetting):
    """A table an admin gave that cannot be applied; `field` is the Graph property at
    fault (None: the table as a whole), so the form shows the error next to it."""

    def __init__(self, message: str, field: str | None,
                 errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.errors = errors or ({field: message} if field else {})


@dataclass(frozen=True)
class TableView:
    """What the API and the UI show of a tenant's table."""

    mappings: dict[str, str]
    is_default: bool
    select: tuple[str, ...]


def table_of(s: Session, tenant_id: str) -> dict[str, str]:
    row = s.get(EntraAttributeMap, tenant_id)
    return dict(row.mappings) if row is not None else dict(mapping.DEFAULT_TABLE)


def users_select(s: Session, tenant_id: str) -> tuple[str, ...]:
    """The $select of the tenant's users delta requests: the table's properties, what
    the sync always needs, and the matching attribute when it is a Graph property."""
    registration = s.get(EntraRegistration, tenant_id)
    matching = registration.matching_attribute if registration is not None else None
    also = (matching,) if matching in ("mail", "employeeId") else ()
    return mapping.select_for(table_of(s, tenant_id), also)


class ManagerLinks:
    """A page's manager references: resolved to live connector users by object id (one
    lookup per manager and page), or noted as waiting for the manager to arrive."""

    def __init__(self, s: Session, tenant_id: str) -> None:
        self.s = s
        self.tenant_id = tenant_id
        self.known: dict[str, str | None] = {}
        self.waiting: dict[str, str] = {}  # report object id → manager object id
        self.decided: set[str] = set()  # reports whose manager is settled (or cleared)

    def resolve(self, report: str, manager: str | None) -> str | None:
        if manager is None:
            self.decided.add(report)
            self.waiting.pop(report, None)
            return None
        if manager not in self.known:
            self.known[manager] = self.s.scalar(select(User.id).where(
                User.tenant_id == self.tenant_id, User.external_id == manager,
                User.removed_at.is_(None)).limit(1))
        found = self.known[manager]
        if found is None:
            self.waiting[report] = manager
            self.decided.discard(report)
        else:
            self.decided.add(report)
            self.waiting.pop(report, None)
        return found


_LINKS = "entra_manager_links"


def rules_for(s: Session, tenant_id: str) -> mapping.Rules:
    """The tenant's table, ready for a page, with the page's manager resolver."""
    links = ManagerLinks(s, tenant_id)
    s.info[_LINKS] = links
    row = s.get(EntraAttributeMap, tenant_id)
    if row is not None:
        try:
            return mapping.Rules.of(row.mappings, links.resolve)
        except mapping.InvalidMapping:
            pass  # saved tables are validated; one no longer valid: the default
    return mapping.Rules(mapping.DEFAULT_RULES.table, links.resolve,
                         mapping.DEFAULT_RULES.steps)


def settle_managers(s: Session, directory: Directory, tenant_id: str,
                    applied: list[str]) -> int:
    """After a page: remember the users whose manager has not arrived, and fill in the
    manager of those waiting for one of the users this page wrote (or for a manager
    created later in the same page). Returns how many managers it filled in."""
    links = s.info.pop(_LINKS, None)
    if not isinstance(links, ManagerLinks) or links.tenant_id != tenant_id:
        return 0
    touched = sorted(links.decided | set(links.waiting))
    if not touched and (not applied or not s.scalar(select(EntraManagerWait.tenant_id).where(
            EntraManagerWait.tenant_id == tenant_id).limit(1))):
        return 0  # no reference on this page, and nobody waits for a manager
    for start in range(0, len(touched), 1000):
        s.execute(delete(EntraManagerWait).where(
            EntraManagerWait.tenant_id == tenant_id,
            EntraManagerWait.report_object_id.in_(touched[start:start + 1000])))
    if links.waiting:
        s.add_all(EntraManagerWait(tenant_id=tenant_id, report_object_id=report,
                                   manager_object_id=manager)
                  for report, manager in links.waiting.items())
    s.flush()
    candidates = sorted(set(applied) | set(links.waiting.values()))
    filled = 0
    for start in range(0, len(candidates), 1000):
        filled += _fill(s, directory, tenant_id, candidates[start:start + 1000])
    return filled


def _fill(s: Session, directory: Directory, tenant_id: str, managers: list[str]) -> int:
    rows = s.execute(select(EntraManagerWait.report_object_id, User.id).join(
        User, (User.tenant_id == EntraManagerWait.tenant_id)
        & (User.external_id == EntraManagerWait.manager_object_id)
        & User.removed_at.is_(None)).where(
        EntraManagerWait.tenant_id == tenant_id,
        EntraManagerWait.manager_object_id.in_(managers))).all()
    if not rows:
        return 0
    manager_of = dict(rows)
    reports = s.scalars(select(User).where(
        User.tenant_id == tenant_id, User.external_id.in_(list(manager_of)),
        User.removed_at.is_(None))).all()
    only_manager = mapping.Rules.of({mapping.MANAGER: mapping.MANAGER_TARGET})

    def connector_id(report: str, _manager: str | None) -> str | None:
        return manager_of.get(report)

    rules = mapping.Rules(only_manager.table, connector_id, only_manager.steps)
    for user in reports:
        fields = mapping.user_fields(user.external_id or "", stored_profile(user),
                                     {mapping.MANAGER: "resolved"}, rules)
        assert fields is not None
        directory.update_user(user, fields)
    s.execute(delete(EntraManagerWait).where(
        EntraManagerWait.tenant_id == tenant_id,
        EntraManagerWait.report_object_id.in_(list(manager_of))))
    return len(reports)


def view(s: Session, tenant_id: str) -> TableView:
    return TableView(table_of(s, tenant_id), s.get(EntraAttributeMap, tenant_id) is None,
                     users_select(s, tenant_id))


def save_table(call: AdminCall, tenant_id: str, table: object) -> TableView:
    """Replace the tenant's table (None or {} of the default's keys: back to the
    default). A table that changes what is read from Graph drops the users deltaLink,
    so the next round is a full one that reads every user's newly mapped properties (as
    Entra restarts provisioning on a mapping change); refused while a round runs."""
    call.tenant(tenant_id, lock=True)
    try:
        checked = mapping.validate_table(table)
    except mapping.InvalidMapping as exc:
        raise InvalidTable(exc.message, exc.field, exc.errors) from None
    s = call.session
    before = users_select(s, tenant_id)
    row = s.get(EntraAttributeMap, tenant_id)
    if checked == mapping.DEFAULT_TABLE:
        if row is not None:
            s.delete(row)
    elif row is None:
        s.add(EntraAttributeMap(tenant_id=tenant_id, mappings=checked, updated_at=call.now,
                                updated_by=call.principal.actor))
    else:
        row.mappings, row.updated_at = checked, call.now
        row.updated_by = call.principal.actor
    s.flush()
    after = users_select(s, tenant_id)
    if set(after) != set(before):
        state = s.get(SyncState, tenant_id, with_for_update=True)
        if state is not None:
            if lease.is_held(state, call.now):
                raise StateConflict("A round of this tenant is running; change the mapping "
                                    "when it has finished (the run log shows it).")
            state.users_delta_link = state.pending_users_delta_link = None
    call.audit("entra.mappings_changed", tenant_id, None,
               {"mappings": checked, "select": list(after)})
    s.flush()
    return view(s, tenant_id)
