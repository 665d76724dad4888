"""A tenant's provisioning settings (PRODUCT.md "Status authority"), changed and audited.

Each change is an event in the same transaction. Switching the status source back to
`identity_provider` re-applies every user's latest IdP word through the directory.
"""

from __future__ import annotations

from typing import Any, get_args

from sqlalchemy.orm import Session

from connector import events
from connector.directory import Directory
from connector.errors import InvalidSetting, NotFound
from connector.events import WriteContext
from connector.models import Tenant
from connector.status import ScimDefaultStatus, StatusSource

CHOICES: dict[str, tuple[Any, ...]] = {
    "status_source": get_args(StatusSource),
    "scim_default_status": get_args(ScimDefaultStatus),
    "provisioning_paused": (True, False),
}


def change_settings(session: Session, tenant_id: str, ctx: WriteContext, **changes: Any
                    ) -> dict[str, tuple[Any, Any]]:
    """Apply `changes` (setting=value); return {setting: (old, new)} for what changed."""
    for name, value in changes.items():
        if name not in CHOICES:
            raise InvalidSetting(f"Unknown setting {name!r}; settings are "
                                 f"{', '.join(CHOICES)}.")
        if value not in CHOICES[name] or type(value) is not type(CHOICES[name][0]):
            allowed = " or ".join(repr(c) for c in CHOICES[name])
            raise InvalidSetting(f"{name} must be {allowed}; got {value!r}.")
    tenant = session.get(Tenant, tenant_id, with_for_update=True)
    if tenant is None:
        raise NotFound(f"Tenant {tenant_id} not found.")
    changed: dict[str, tuple[Any, Any]] = {}
    for name, value in changes.items():
        old = getattr(tenant, name)
        if old != value:
            setattr(tenant, name, value)
            changed[name] = (old, value)
            events.record(session, ctx, "tenant", tenant_id, events.TENANT_SETTINGS,
                          {name: old}, {name: value})
    if changed.get("status_source", (None, None))[1] == "identity_provider":
        session.flush()
        Directory(session, tenant, ctx).reapply_idp_status()
    session.flush()  # sessions do not autoflush: later queries must see the new statuses
    return changed
