"""Tenants: create, rename, close, reopen one; change its provisioning settings, rotate
its SCIM token; add, rename and remove modules of its catalogue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from connector import events, tenant_settings, tenants
from connector.actions import AdminCall
from connector.errors import Conflict, ModuleHeld, NotFound
from connector.models import Group, GroupModule, Module, Tenant, User, UserModule
from connector.tenants import IssuedToken


def create_tenant(call: AdminCall, name: str) -> tuple[Tenant, IssuedToken]:
    """A partner admin creates a tenant; its first SCIM token is returned (shown once)."""
    call.principal.require_partner()
    name = tenants.check_tenant_name(name)
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


def rename_module(call: AdminCall, tenant_id: str, old: str, new: str) -> str:
    """Rename a module of the catalogue; every user and group holding it holds the new
    name (their events record the change; older events keep the old name). Returns the
    new name."""
    tenant = call.tenant(tenant_id, lock=True)
    module = _module(call, tenant_id, old)
    new = tenants.check_module_name(new)
    taken = tenants.module_catalogue(call.session, tenant_id).get(new.casefold())
    if taken is not None and taken != module.name:
        raise Conflict(f"Module {taken!r} is already in the catalogue; choose another name.",
                       "name")
    if new == module.name:
        return new
    old_name = module.name
    call.session.delete(module)
    call.session.flush()
    call.session.add(Module(tenant_id=tenant_id, name=new, created_at=module.created_at))
    call.session.flush()
    _replace_module(call, tenant, old_name, new)
    ctx = call.context(tenant_id)
    events.record(call.session, ctx, "tenant", tenant_id, events.MODULE_RENAMED, old_name, new)
    call.audit("module.renamed", tenant_id, new, {"from": old_name})
    return new


def module_holders(call: AdminCall, tenant_id: str, name: str) -> tuple[str, int, int]:
    """A module's catalogue spelling and how many live users and groups hold it directly."""
    call.tenant(tenant_id)
    module = _module(call, tenant_id, name)
    users = len(_holders(call, tenant_id, module.name)[0])
    groups = len(_holders(call, tenant_id, module.name)[1])
    return module.name, users, groups


def remove_module(call: AdminCall, tenant_id: str, name: str, confirmed: bool = False
                  ) -> tuple[str, int, int]:
    """Remove a module from the catalogue; one still assigned is refused unless
    `confirmed` (the refusal says how many users and groups hold it). Its holders lose
    it (their events record that); history keeps the name. Returns (name, users,
    groups) that held it."""
    tenant = call.tenant(tenant_id, lock=True)
    module = _module(call, tenant_id, name)
    users, groups = _holders(call, tenant_id, module.name)
    if (users or groups) and not confirmed:
        raise ModuleHeld(
            f"Module {module.name!r} is assigned to {len(users)} user(s) and {len(groups)} "
            "group(s); removing it takes it away from them.")
    _replace_module(call, tenant, module.name, None)
    call.session.delete(module)
    ctx = call.context(tenant_id)
    events.record(call.session, ctx, "tenant", tenant_id, events.MODULE_REMOVED,
                  module.name, None)
    call.audit("module.removed", tenant_id, module.name,
               {"users": len(users), "groups": len(groups)})
    return module.name, len(users), len(groups)


def _module(call: AdminCall, tenant_id: str, name: str) -> Module:
    found = call.session.scalar(select(Module).where(Module.tenant_id == tenant_id,
                                                     Module.name == name))
    if found is None:
        raise NotFound(f"Module {name!r} is not in this tenant's catalogue.")
    return found


def _holders(call: AdminCall, tenant_id: str, name: str) -> tuple[list[User], list[Group]]:
    """The live users and the groups that hold the module directly."""
    users = list(call.session.scalars(
        select(User).join(UserModule, (UserModule.tenant_id == User.tenant_id)
                          & (UserModule.user_id == User.id))
        .where(User.tenant_id == tenant_id, UserModule.module == name,
               User.removed_at.is_(None)).order_by(User.id)))
    groups = list(call.session.scalars(
        select(Group).join(GroupModule, (GroupModule.tenant_id == Group.tenant_id)
                           & (GroupModule.group_id == Group.id))
        .where(Group.tenant_id == tenant_id, GroupModule.module == name).order_by(Group.id)))
    return users, groups


def _replace_module(call: AdminCall, tenant: Tenant, old: str, new: str | None) -> None:
    """Every holder of `old` holds `new` instead (None: nothing), through the directory,
    so each change is an event billing reads. Deleted users' rows follow silently (a
    restored user comes back with the catalogue's name)."""
    directory = call.directory(tenant)
    users, groups = _holders(call, tenant.id, old)
    for user in users:
        own = list(call.session.scalars(select(UserModule.module).where(
            UserModule.tenant_id == tenant.id, UserModule.user_id == user.id)))
        directory.set_user_modules(user, _swap(own, old, new))
    for group in groups:
        own = list(call.session.scalars(select(GroupModule.module).where(
            GroupModule.tenant_id == tenant.id, GroupModule.group_id == group.id)))
        directory.set_group_modules(group, _swap(own, old, new))
    gone = select(UserModule).where(UserModule.tenant_id == tenant.id,
                                    UserModule.module == old)
    for row in call.session.scalars(gone):  # deleted users' rows
        if new is None:
            call.session.delete(row)
        else:
            row.module = new
    call.session.flush()


def _swap(names: list[str], old: str, new: str | None) -> list[str]:
    kept = [n for n in names if n != old]
    return kept if new is None else [*kept, new]


# -- renaming, closing and reopening the tenant ----------------------------------------------


def rename_tenant(call: AdminCall, tenant_id: str, name: str) -> tuple[str, str]:
    """A partner admin renames a tenant; returns (old, new)."""
    call.principal.require_partner()
    tenant = call.tenant(tenant_id, lock=True)
    old, new = tenants.rename_tenant(call.session, call.context(tenant_id), tenant, name)
    if old != new:
        call.audit("tenant.renamed", tenant_id, new, {"from": old})
    return old, new


def close_tenant(call: AdminCall, tenant_id: str) -> Tenant:
    """A partner admin closes a tenant (what "delete" does: see `tenants.close_tenant`)."""
    call.principal.require_partner()
    tenant = call.tenant(tenant_id, lock=True)
    tenants.close_tenant(call.session, call.context(tenant_id), tenant)
    call.audit("tenant.closed", tenant_id, tenant.name)
    return tenant


def reopen_tenant(call: AdminCall, tenant_id: str) -> Tenant:
    call.principal.require_partner()
    tenant = call.tenant(tenant_id, lock=True)
    tenants.reopen_tenant(call.session, call.context(tenant_id), tenant)
    call.audit("tenant.reopened", tenant_id, tenant.name)
    return tenant
