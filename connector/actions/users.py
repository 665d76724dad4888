"""A tenant's users: create, change flags and modules, set status, restore, remove."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from connector import limits
from connector.actions import AdminCall
from connector.commands import IndexedValue, UserFields
from connector.errors import InvalidSetting, NotFound
from connector.models import User

STATUSES = ("active", "inactive")


@dataclass(frozen=True)
class NewUser:
    """A user as an admin types it (what `create_user` checks and creates)."""

    user_name: str
    display_name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None
    active: bool | None = None  # None: the tenant's rules decide
    guest: bool = False
    admin: bool = False
    modules: Sequence[str] | None = None


def live_user(call: AdminCall, tenant_id: str, user_id: str, lock: bool = True) -> User:
    """A user that is not deleted (by default locked for the change that follows)."""
    user = call.session.get(User, (tenant_id, user_id), with_for_update=lock or None)
    if user is None or user.removed_at is not None:
        raise NotFound(f"User {user_id} not found in this tenant.")
    return user


def listed_user(call: AdminCall, tenant_id: str, user_id: str) -> User:
    """A user on the deleted-users list, locked."""
    user = call.session.get(User, (tenant_id, user_id), with_for_update=True)
    if user is None or user.purged_at is not None:
        raise NotFound(f"User {user_id} is not on this tenant's deleted-users list.")
    return user


def module_names(modules: Any) -> list[str]:
    """`modules` as a list of module names, or a refusal saying what it must be."""
    if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) for m in modules):
        raise InvalidSetting("modules must be a list of module names.")
    return list(modules)


def create_user(call: AdminCall, tenant_id: str, new: NewUser) -> User:
    """Create a user by hand (not through an identity provider)."""
    tenant = call.tenant(tenant_id)
    user_name = new.user_name.strip()
    if not user_name:
        raise InvalidSetting("userName is required: give the user's sign-in name.")
    limits.check("userName", user_name, limits.NAME)
    data: dict[str, Any] = {}
    names = {key: value.strip() for key, value in (("givenName", new.given_name),
                                                   ("familyName", new.family_name)) if value}
    for key, value in names.items():
        limits.check(key, value, limits.NAME)
    if names:
        data["name"] = names
    values: tuple[IndexedValue, ...] = ()
    if new.email:
        email = new.email.strip()
        limits.check("email", email, limits.NAME)
        if "@" not in email:
            raise InvalidSetting(f"{email!r} is not an e-mail address.")
        data["emails"] = [{"value": email, "type": "work", "primary": True}]
        values = (IndexedValue("emails", 0, email, "work", True),)
    display = (new.display_name or "").strip()
    limits.check("displayName", display, limits.NAME)
    modules = module_names(new.modules) if new.modules is not None else None
    fields = UserFields(user_name=user_name, display_name=display or None, data=data,
                        values=values, active=new.active, guest=new.guest, admin=new.admin,
                        modules=tuple(modules) if modules is not None else None)
    user = call.directory(tenant).create_user(fields)
    call.audit("user.created", tenant_id, user.id, {"userName": user_name})
    call.session.flush()
    return user


def change_user(call: AdminCall, tenant_id: str, user_id: str, *, guest: bool | None = None,
                admin: bool | None = None, modules: Sequence[str] | None = None
                ) -> tuple[User, bool]:
    """Set a user's guest and admin flags and its own modules (None: leave as is).
    Returns the user and whether anything changed."""
    tenant = call.tenant(tenant_id)
    names = module_names(modules) if modules is not None else None
    user = live_user(call, tenant_id, user_id)
    directory = call.directory(tenant)
    changed = directory.set_user_flags(user, guest=guest, admin=admin)
    if names is not None:
        changed = directory.set_user_modules(user, names) or changed
    if changed:
        asked = {"guest": guest, "admin": admin, "modules": names}
        call.audit("user.changed", tenant_id, user_id,
                   {k: v for k, v in asked.items() if v is not None})
    call.session.flush()
    return user, changed


def set_status(call: AdminCall, tenant_id: str, user_id: str, status: str
               ) -> tuple[User, bool]:
    """Make a user active or inactive, as the status rules allow (else refused with the
    setting to change). Returns the user and whether its status changed."""
    tenant = call.tenant(tenant_id)
    if status not in STATUSES:
        raise InvalidSetting(f"status must be 'active' or 'inactive'; got {status!r}.")
    user = live_user(call, tenant_id, user_id)
    changed = call.directory(tenant).admin_set_status(user, status == "active")
    if changed:
        call.audit("user.status", tenant_id, user_id, {"status": status})
    call.session.flush()
    return user, changed


def restore_user(call: AdminCall, tenant_id: str, user_id: str) -> User:
    """Bring a user back from the deleted-users list, active, with its history."""
    tenant = call.tenant(tenant_id)
    user = listed_user(call, tenant_id, user_id)
    call.directory(tenant).restore_user(user)
    call.audit("user.restored", tenant_id, user_id)
    call.session.flush()
    return user


def purge_user(call: AdminCall, tenant_id: str, user_id: str) -> User:
    """Remove a user on the deleted-users list for good (its history stays for billing)."""
    tenant = call.tenant(tenant_id)
    user = listed_user(call, tenant_id, user_id)
    call.directory(tenant).purge_user(user)
    call.audit("user.purged", tenant_id, user_id)
    return user


def note_export(call: AdminCall, tenant_id: str, action: str, target: str | None = None,
                detail: Any = None) -> None:
    """Audit a download of a tenant's data (the download itself streams afterwards)."""
    call.tenant(tenant_id)
    call.audit(action, tenant_id, target, detail)
