"""Notifications as the signed-in admin sees them: the conditions of the tenants the
admin may see (raised, and recently cleared), and the admin's own opt-outs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from connector import admins, notify
from connector.actions import AdminCall
from connector.models import NotifyCondition, Tenant
from connector.notify_messages import KINDS, PARTNER_WIDE_NAME


@dataclass(frozen=True)
class Notice:
    condition: NotifyCondition
    tenant_name: str
    title: str
    next_step: str
    page: str  # path under the admin UI, without its prefix

    def json(self) -> dict[str, Any]:
        c = self.condition
        return {"id": c.id, "tenantId": c.tenant_id, "tenantName": self.tenant_name,
                "kind": c.kind, "key": c.key, "title": self.title, "detail": c.detail,
                "nextStep": self.next_step, "page": "/admin/" + self.page,
                "raised": c.raised_at.isoformat(),
                "cleared": c.cleared_at.isoformat() if c.cleared_at else None}


def notices(call: AdminCall, recent_days: int, tenant_id: str | None = None) -> list[Notice]:
    """Raised conditions first, then those cleared in the last `recent_days`, of the
    tenants the admin may see (or of one of them)."""
    if tenant_id is not None:
        call.tenant(tenant_id)
        scope: list[str] | None = [tenant_id]
    else:
        scope = None if call.principal.role == admins.PARTNER else [
            call.principal.tenant_id or ""]
    rows = notify.standing(call.session, scope, call.now - dt.timedelta(days=recent_days))
    names = {t.id: t.name for t in call.session.query(Tenant).filter(
        Tenant.id.in_({r.tenant_id for r in rows}))} if rows else {}
    names[""] = PARTNER_WIDE_NAME
    return [Notice(r, names.get(r.tenant_id, r.tenant_id), KINDS[r.kind].title,
                   KINDS[r.kind].next_step,
                   KINDS[r.kind].page.format(tenant=r.tenant_id, key=r.key)) for r in rows]


def opt_outs(call: AdminCall) -> list[str]:
    return sorted(notify.opt_outs(call.session, call.principal.admin_id))


def set_opt_outs(call: AdminCall, kinds: list[str]) -> list[str]:
    """Replace which notifications the signed-in admin is not e-mailed ("*": none)."""
    chosen = sorted(notify.set_opt_outs(call.session, call.principal.admin_id, kinds))
    call.audit("notifications.opt_out", call.principal.tenant_id, call.principal.email,
               {"optOut": chosen})
    return chosen


def kinds() -> list[dict[str, str]]:
    return [{"kind": k, "title": v.title} for k, v in KINDS.items()]
