"""Domain errors: each carries its meaning; every surface translates them once.

    DomainError
     ├── NotFound              the resource does not exist in this tenant
     ├── Conflict              a unique value is taken (field says which)
     ├── InvalidReference      a referenced id does not exist in this tenant
     ├── UnknownModule         a module not in the tenant's catalogue
     ├── VersionMismatch       If-Match / expected version differs
     ├── ProvisioningPaused    provisioning is paused (retry_after seconds)
     ├── InvalidSetting        a tenant setting name or value that does not exist
     │    └── InvalidFields    several fields wrong at once ({field: message})
     ├── StateConflict         not possible in the resource's current state
     │    └── ModuleHeld       removing a module users or groups hold, unconfirmed
     ├── WrongProvisioningPath SCIM write to a tenant fed by Entra sync
     └── StatusChangeRefused   the status rules forbid the change (reason says what to change)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class DomainError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    pass


class Conflict(DomainError):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


class InvalidReference(DomainError):
    pass


class UnknownModule(DomainError):
    pass


class VersionMismatch(DomainError):
    pass


class ProvisioningPaused(DomainError):
    def __init__(self, retry_after: int):
        super().__init__(
            "Provisioning is paused for this tenant; an admin must resume it. Retry later."
        )
        self.retry_after = retry_after


class InvalidSetting(DomainError):
    """`field`, when given, names the input at fault (a form shows the message there)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class StateConflict(DomainError):
    pass


class ModuleHeld(StateConflict):
    """A module still held, removed without confirming: each surface says how to
    confirm (the API's ?confirm=true, the UI's page)."""


class WrongProvisioningPath(DomainError):
    """A write through the provisioning path this tenant does not use (SCIM vs Entra)."""


class StatusChangeRefused(DomainError):
    def __init__(self, reason: str, setting: str):
        super().__init__(reason)
        self.reason = reason
        self.setting = setting


class InvalidFields(InvalidSetting):
    """Several fields refused at once, {field: message}; each message names its field
    as a person reads it (its label), so a form can show every one next to its field."""

    def __init__(self, errors: dict[str, str]):
        super().__init__(" ".join(errors.values()))
        self.errors = errors


class FieldChecks:
    """Collects refusals field by field, so a form hears about every wrong field at once:

        checks = FieldChecks()
        with checks.field("time_zone"):
            check_time_zone(value)
        checks.raise_any()
    """

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    @contextmanager
    def field(self, name: str) -> Iterator[None]:
        try:
            yield
        except InvalidFields as exc:
            for key, message in exc.errors.items():
                self.errors.setdefault(key, message)
        except InvalidSetting as exc:
            self.errors.setdefault(name, exc.message)

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    def raise_any(self) -> None:
        if self.errors:
            raise InvalidFields(dict(self.errors))
