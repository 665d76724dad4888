"""A tenant's users: create, change flags and modules, set status, restore, remove."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from connector.actions import AdminCall
from connector.commands import IndexedValue, UserFields
from connector.errors import (
    Conflict,
    InvalidSetting,
    NotFound,
    StateConflict,
    StatusChangeRefused,
)
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
    if not 1 <= len(user_name) <= 512:
        raise InvalidSetting("userName needs 1 to 512 characters.")
    data: dict[str, Any] = {}
    names = {key: value.strip() for key, value in (("givenName", new.given_name),
                                                   ("familyName", new.family_name)) if value}
    if names:
        data["name"] = names
    values: tuple[IndexedValue, ...] = ()
    if new.email:
        if "@" not in new.email or len(new.email) > 320:
            raise InvalidSetting(f"{new.email!r} is not an e-mail address.")
        email = new.email.strip()
        data["emails"] = [{"value": email, "type": "work", "primary": True}]
        values = (IndexedValue("emails", 0, email, "work", True),)
    display = (new.display_name or "").strip()
    if len(display) > 512:  # the column's size (PostgreSQL refuses longer text)
        raise InvalidSetting("displayName may have at most 512 characters.")
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
    try:
        call.directory(tenant).restore_user(user)
    except StatusChangeRefused as exc:
        raise StatusChangeRefused(f"{user.user_name} was not restored. {exc.reason}",
                                  exc.setting) from exc
    except Conflict as exc:
        raise Conflict(f"{user.user_name} was not restored: {exc.message}", exc.field) from exc
    except StateConflict as exc:
        raise StateConflict(f"{user.user_name} was not restored: {exc.message}") from exc
    call.audit("user.restored", tenant_id, user_id)
    call.session.flush()
    return user


def purge_user(call: AdminCall, tenant_id: str, user_id: str) -> User:
    """Remove a user on the deleted-users list for good (its history stays for billing)."""
    tenant = call.tenant(tenant_id)
    user = listed_user(call, tenant_id, user_id)
    try:
        call.directory(tenant).purge_user(user)
    except StatusChangeRefused as exc:
        raise StatusChangeRefused(f"{user.user_name} was not removed. {exc.reason}",
                                  exc.setting) from exc
    except StateConflict as exc:
        raise StateConflict(f"{user.user_name} was not removed: {exc.message}") from exc
    call.audit("user.purged", tenant_id, user_id)
    return user


def note_export(call: AdminCall, tenant_id: str, action: str, target: str | None = None,
                detail: Any = None) -> None:
    """Audit a download of a tenant's data (the download itself streams afterwards)."""
    call.tenant(tenant_id)
    call.audit(action, tenant_id, target, detail)
