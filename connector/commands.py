"""What writers hand the directory service: plain values, no I/O.

SCIM requests, Graph delta pages and admin forms each translate into these; the
directory service (`connector.directory`) is the only thing that applies them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Set
from dataclasses import dataclass, field
from typing import Any, TypeAlias

# The version a writer expects a resource to be at: None (no condition), one version, or
# a set of which any one will do (an If-Match list, RFC 7232 §3.1).
ExpectedVersion: TypeAlias = int | Set[int] | None


@dataclass(frozen=True)
class IndexedValue:
    """One element of a multi-valued attribute, as indexed for filtering."""

    attr: str
    position: int
    value: str | None
    type: str | None = None
    primary: bool = False
    display: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UserFields:
    """Everything a writer says about a user, already validated by its surface."""

    user_name: str
    external_id: str | None = None
    display_name: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    values: tuple[IndexedValue, ...] = ()
    active: bool | None = None  # None: the writer did not say
    # The flags below and `modules`/`frontline`: None means the writer did not mention
    # them, which leaves an update's stored value alone (a new user gets False / none).
    # An attribute an identity provider does not send is not one it set to nothing.
    guest: bool | None = False
    external_company_guest: bool | None = False
    admin: bool | None = False
    modules: tuple[str, ...] | None = None  # None: leave as they are
    # The frontline plan's attributes (desklessPercent, paidHourly, hasEmail,
    # frontlineRole); None: leave as they are.
    frontline: dict[str, Any] | None = None


@dataclass(frozen=True)
class GroupFields:
    display_name: str
    external_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    modules: tuple[str, ...] | None = None


@dataclass(frozen=True)
class MemberChange:
    action: str  # add | remove | replace
    member_ids: tuple[str, ...]


# What a back-dated correction may set (connector.directory.Directory.correct_user).
CORRECTION_KINDS = ("status", "deletion", "modules", "guest", "external_company_guest",
                    "frontline")


@dataclass(frozen=True)
class Correction:
    """What held for a user from `effective_at` (in the past) on, and why: a billing
    clerk's correction of what the identity provider failed to say in time.

    `value` by `kind`: status: True (active) / False; deletion: None (the user was
    deleted then); modules: module names; guest, external_company_guest: bool;
    frontline: the plan's attributes (empty: none)."""

    kind: str
    value: Any
    effective_at: dt.datetime
    reason: str
