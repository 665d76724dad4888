"""Admin actions: one service function per thing an admin can do, for every surface.

The admin API, the web UI and the packages' pages (Entra ID sync, billing) only parse
their input and render the result; the action itself (its checks, the directory call
and its one audit line) is written once, here for the connector's own actions and in
`azure_sync.actions` and `billing.actions` for theirs. An action runs in the caller's
transaction and never commits it, unless its docstring says so (an action that starts
work of its own transactions, such as a sync round or a month close, must end the
request's first).

    users.py      create, flags and modules, status, restore, permanent removal
    groups.py     a group's modules
    tenants.py    create a tenant, its provisioning settings, SCIM token, module catalogue
    accounts.py   the signed-in admin's password and API tokens; partners' admin accounts
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from connector import admins
from connector.admins import Principal
from connector.directory import Directory
from connector.errors import NotFound
from connector.events import WriteContext
from connector.models import Tenant
from connector.status import Source


@dataclass(frozen=True)
class AdminCall:
    """Who asks for an action, in which transaction and when: what every action needs
    from the surface that received it. One request is one call: its events and its
    audit line carry the same instant and correlation id."""

    session: Session
    principal: Principal
    now: dt.datetime
    correlation_id: str
    remote_addr: str | None = None

    def tenant(self, tenant_id: str, lock: bool = False) -> Tenant:
        """The tenant acted on: 404 for one the admin may not see, exactly as for one
        that does not exist; `lock` takes its row FOR UPDATE."""
        self.principal.require_tenant(tenant_id)
        tenant = self.session.get(Tenant, tenant_id, with_for_update=lock or None)
        if tenant is None:
            raise NotFound(f"Tenant {tenant_id} not found.")
        return tenant

    def context(self, tenant_id: str) -> WriteContext:
        """How the tenant's events of this call are stamped."""
        return WriteContext(tenant_id, Source.ADMIN, self.principal.actor,
                            self.correlation_id, self.now)

    def directory(self, tenant: Tenant) -> Directory:
        return Directory(self.session, tenant, self.context(tenant.id))

    def audit(self, action: str, tenant_id: str | None = None, target: str | None = None,
              detail: Any = None) -> None:
        """The call's audit line, in its transaction (committed with the change)."""
        admins.audit(self.session, at=self.now, actor=self.principal.actor,
                     admin_id=self.principal.admin_id or None, action=action,
                     tenant_id=tenant_id,
                     target=target, detail=detail, remote_addr=self.remote_addr,
                     correlation_id=self.correlation_id)
