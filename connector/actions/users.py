"""A tenant's users: create, change flags and modules, set status, restore, remove."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connector import limits
from connector.actions import AdminCall
from connector.commands import Correction, IndexedValue, UserFields
from connector.errors import (
    Conflict,
    InvalidSetting,
    NotFound,
    StateConflict,
    StatusChangeRefused,
)
from connector.models import User
from connector.text import storable_text

STATUSES = ("active", "inactive")
FRONTLINE_ROLES = ("customerFacing", "backstage", "publicService", "medical", "other")
# A correction's kinds as the API, the form and the CLI name them -> the directory's.
CORRECTION_KINDS = {"status": "status", "deletion": "deletion", "modules": "modules",
                    "guest": "guest", "externalCompanyGuest": "external_company_guest",
                    "frontline": "frontline"}
REASON_LENGTH = 500


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
    external_company_guest: bool = False
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


def flag(name: str, value: Any) -> bool | None:
    """A yes/no setting as given (None: not given), or a refusal naming it."""
    if value is not None and not isinstance(value, bool):
        raise InvalidSetting(f"{name} must be true or false; got {value!r:.40}.")
    return value


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
                        values=values, active=new.active,
                        guest=flag("guest", new.guest) or False,
                        external_company_guest=flag("externalCompanyGuest",
                                                    new.external_company_guest) or False,
                        admin=flag("admin", new.admin) or False,
                        modules=tuple(modules) if modules is not None else None)
    user = call.directory(tenant).create_user(fields)
    call.audit("user.created", tenant_id, user.id, {"userName": user_name})
    call.session.flush()
    return user


def change_user(call: AdminCall, tenant_id: str, user_id: str, *, guest: bool | None = None,
                admin: bool | None = None, modules: Sequence[str] | None = None,
                external_company_guest: bool | None = None) -> tuple[User, bool]:
    """Set a user's guest, external-company guest and admin flags and its own modules
    (None: leave as is). Returns the user and whether anything changed."""
    tenant = call.tenant(tenant_id)
    names = module_names(modules) if modules is not None else None
    guest, admin = flag("guest", guest), flag("admin", admin)
    external_company_guest = flag("externalCompanyGuest", external_company_guest)
    user = live_user(call, tenant_id, user_id)
    directory = call.directory(tenant)
    changed = directory.set_user_flags(user, guest=guest, admin=admin,
                                       external_company_guest=external_company_guest)
    if names is not None:
        changed = directory.set_user_modules(user, names) or changed
    if changed:
        asked = {"guest": guest, "externalCompanyGuest": external_company_guest,
                 "admin": admin, "modules": names}
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


def frontline_attributes(attributes: Any) -> dict[str, Any]:
    """The frontline plan's attributes as given (desklessPercent 0-100, paidHourly and
    hasEmail true/false, frontlineRole one of FRONTLINE_ROLES), or a refusal naming the
    one at fault."""
    if not isinstance(attributes, Mapping):
        raise InvalidSetting("The frontline attributes must be an object.", "frontline")
    checks = {"desklessPercent": lambda v: isinstance(v, (int, float))
              and not isinstance(v, bool) and 0 <= v <= 100,
              "paidHourly": lambda v: isinstance(v, bool),
              "hasEmail": lambda v: isinstance(v, bool),
              "frontlineRole": lambda v: v in FRONTLINE_ROLES}
    musts = {"desklessPercent": "a number from 0 to 100", "paidHourly": "true or false",
             "hasEmail": "true or false", "frontlineRole": ", ".join(FRONTLINE_ROLES)}
    attributes = {k: v for k, v in attributes.items() if v is not None}  # null: unset
    for key, value in attributes.items():
        if key not in checks:
            raise InvalidSetting(f"{key!r:.60} is not a frontline attribute (they are "
                                 f"{', '.join(checks)}).", "frontline")
        if not checks[key](value):
            raise InvalidSetting(f"{key} must be {musts[key]}; got {value!r:.40}.", key)
    return dict(attributes)


def effective_instant(value: Any) -> dt.datetime:
    """An ISO 8601 instant with its zone (or a datetime with one), in UTC."""
    when = value
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            when = None
    if not isinstance(when, dt.datetime) or when.tzinfo is None:
        raise InvalidSetting(f"effectiveAt must be an instant with its zone, e.g. "
                             f"2026-10-28T00:00:00Z; got {value!r:.60}.", "effectiveAt")
    return when.astimezone(dt.UTC)


def _corrected_value(kind: str, value: Any) -> Any:
    if kind == "status":
        if value not in STATUSES:
            raise InvalidSetting(f"A status correction's value is 'active' or 'inactive'; "
                                 f"got {value!r:.40}.", "value")
        return value == "active"
    if kind == "deletion":
        if value not in (None, "", True):
            raise InvalidSetting("A deletion takes no value: the user was deleted at "
                                 "effectiveAt.", "value")
        return None
    if kind == "modules":
        try:
            return tuple(module_names(value))
        except InvalidSetting as exc:
            raise InvalidSetting(exc.message, "value") from None
    if kind == "frontline":
        return frontline_attributes(value if value is not None else {})
    if not isinstance(value, bool):
        raise InvalidSetting(f"A {kind} correction's value is true or false; got "
                             f"{value!r:.40}.", "value")
    return value


def correction_of(kind: Any, value: Any, effective_at: Any, reason: Any) -> Correction:
    """A correction as a surface received it, checked (each refusal names its field);
    the instants it must fall between are checked by `correct_user`."""
    if kind not in CORRECTION_KINDS:
        raise InvalidSetting(f"kind must be one of {', '.join(CORRECTION_KINDS)}; got "
                             f"{kind!r:.40}.", "kind")
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise InvalidSetting("A correction needs its reason (e.g. \"left on the 28th; the "
                             "IdP sync was down\").", "reason")
    if len(text) > REASON_LENGTH or not storable_text(text):
        raise InvalidSetting(f"The reason may have at most {REASON_LENGTH} characters of "
                             "text.", "reason")
    return Correction(CORRECTION_KINDS[kind], _corrected_value(kind, value),
                      effective_instant(effective_at), text)


def correct_user(call: AdminCall, tenant_id: str, user_id: str, correction: Correction
                 ) -> tuple[User, bool]:
    """Record a back-dated correction of a user (a partner admin's: billing), audited.
    It must take effect in the past, after the tenant and the user were created.
    Returns the user and whether its current state changed too (else only its
    history: something later has the last word)."""
    call.principal.require_partner()
    tenant = call.tenant(tenant_id)
    user = call.session.get(User, (tenant_id, user_id), with_for_update=True)
    if user is None:
        raise NotFound(f"User {user_id} not found in this tenant.")
    at = correction.effective_at
    if at >= call.now:
        raise InvalidSetting(f"effectiveAt {at.isoformat()} is not in the past: a correction "
                             "records what already happened. Give an earlier instant.",
                             "effectiveAt")
    earliest = max(tenant.created_at, user.created_at)
    if at < earliest:
        raise InvalidSetting(f"effectiveAt {at.isoformat()} is before the "
                             f"{'user' if earliest == user.created_at else 'tenant'} existed "
                             f"({earliest.isoformat()}); give a later instant.",
                             "effectiveAt")
    changed_now = call.directory(tenant).correct_user(user, correction)
    value = list(correction.value) if isinstance(correction.value, tuple) else correction.value
    call.audit("user.corrected", tenant_id, user_id,
               {"kind": correction.kind, "value": value, "effectiveAt": at.isoformat(),
                "reason": correction.reason, "currentStateChanged": changed_now})
    call.session.flush()
    return user, changed_now
