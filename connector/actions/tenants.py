"""Tenants: create one, change its provisioning settings, rotate its SCIM token, add a
module to its catalogue."""

from __future__ import annotations

from typing import Any

from connector import tenant_settings, tenants
from connector.actions import AdminCall
from connector.errors import InvalidFields
from connector.models import Tenant
from connector.tenants import IssuedToken

NAME_LENGTH = 200


def create_tenant(call: AdminCall, name: str) -> tuple[Tenant, IssuedToken]:
    """A partner admin creates a tenant; its first SCIM token is returned (shown once)."""
    call.principal.require_partner()
    name = name.strip()
    if not 1 <= len(name) <= NAME_LENGTH:
        raise InvalidFields({"name": f"A tenant name needs 1 to {NAME_LENGTH} characters."})
    tenant, issued = tenants.create_tenant(call.session, name, call.now, call.principal.actor)
    call.audit("tenant.created", tenant.id, name)
    call.session.flush()
    return tenant, issued


def change_settings(call: AdminCall, tenant_id: str, **changes: Any
                    ) -> dict[str, tuple[Any, Any]]:
    """Change provisioning settings (`tenant_settings.CHOICES`); returns
    {setting: (old, new)} for what changed."""
    call.tenant(tenant_id)
    changed = tenant_settings.change_settings(call.session, tenant_id,
                                              call.context(tenant_id), **changes)
    if changed:
        call.audit("tenant.settings", tenant_id, None,
                   {k: list(v) for k, v in changed.items()})
    return changed


def rotate_scim_token(call: AdminCall, tenant_id: str) -> IssuedToken:
    """Revoke the tenant's SCIM tokens and issue a new one (shown once)."""
    call.tenant(tenant_id)
    issued = tenants.rotate_token(call.session, tenant_id, call.now, call.principal.actor)
    call.audit("tenant.scim_token_rotated", tenant_id)
    return issued


def add_module(call: AdminCall, tenant_id: str, name: str) -> str:
    """Add a module to the tenant's catalogue; returns its name as stored."""
    call.tenant(tenant_id)
    module = tenants.add_module(call.session, call.context(tenant_id), name)
    call.audit("module.added", tenant_id, module)
    return module
