"""A tenant's policy, written in one place: how its users are provisioned and counted.

PRODUCT.md "Status authority": the status source, the SCIM default status and the
provisioning pause, which admins change (`change_settings`); which path feeds the tenant,
SCIM or Entra ID sync (`set_entra_sync`, set by registering an Entra app); and the time
zone its months are closed in (`set_time_zone`, part of the billing info). No other code
writes these columns of `Tenant`. Every change is a `tenant.settings` event
({setting: old} → {setting: new}) in the caller's transaction.

Switching the status source back to `identity_provider` re-applies every user's latest
IdP word through the directory.
"""

from __future__ import annotations

from typing import Any, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
        if _set(session, ctx, tenant, name, value):
            changed[name] = (old, value)
    if changed.get("status_source", (None, None))[1] == "identity_provider":
        session.flush()
        Directory(session, tenant, ctx).reapply_idp_status()
    session.flush()  # sessions do not autoflush: later queries must see the new statuses
    return changed


def set_entra_sync(session: Session, tenant: Tenant, ctx: WriteContext, on: bool) -> bool:
    """Feed the tenant from Entra ID sync (True: SCIM writes are refused) or over SCIM
    (False). Returns whether it changed."""
    if bool(tenant.entra_sync) == on:
        return False
    return _set(session, ctx, tenant, "entra_sync", on)


def check_time_zone(name: Any) -> str:
    """`name` if it is an IANA time zone this machine knows, else a refusal saying so."""
    if isinstance(name, str) and name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
        else:
            return name
    raise InvalidSetting("time_zone must be an IANA time zone such as Europe/Amsterdam or "
                         "UTC.")


def set_time_zone(session: Session, tenant: Tenant, ctx: WriteContext, name: str) -> bool:
    """Close the tenant's months in zone `name` from the next close on (closed months
    keep theirs). Returns whether it changed."""
    return _set(session, ctx, tenant, "time_zone", check_time_zone(name))


def _set(session: Session, ctx: WriteContext, tenant: Tenant, name: str, value: Any) -> bool:
    old = getattr(tenant, name)
    if old == value:
        return False
    setattr(tenant, name, value)
    events.record(session, ctx, "tenant", tenant.id, events.TENANT_SETTINGS,
                  {name: old}, {name: value})
    return True
