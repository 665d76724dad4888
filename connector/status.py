"""The status-authority rules (PRODUCT.md "Status authority"), as pure functions.

Inputs are the tenant's policy, the user's current status state and what a writer
says; the output is the new state or a refusal. No I/O: this is where the property
tests aim. The directory service is the only caller that acts on the answers.

Reading of the rules pinned here:
- A new SCIM user gets the tenant's SCIM default status, and is active only if the
  identity provider did not also say `active: false`.
- The identity provider's word (`idp_active`) is always recorded. It moves the status
  only when the status source is `identity_provider`, and only when the word *changes*
  (so a user kept inactive by the default status is not re-activated by an IdP that
  repeats `active: true` on every update).
- IdP active -> inactive puts the user on the deleted-users list; inactive -> active
  takes it off again.
- An admin may set the status of a user an identity provider provisioned only while
  provisioning is paused and, for a tenant fed by Entra sync, only with status source
  `connector`; users an admin created are always editable. The refusal names the setting
  to change. An admin's activation takes the user off the deleted-users list; an
  admin's deactivation does not put it there (that list is the IdP's word).
- Switching the status source back to `identity_provider` applies the IdP's latest word.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal


class Source(StrEnum):
    SCIM = "scim"
    ENTRA_SYNC = "entra_sync"
    ADMIN = "admin"
    SYSTEM = "system"


IDP_SOURCES = frozenset({Source.SCIM, Source.ENTRA_SYNC})

# Who decides whether a user is active: the identity provider's word, or the connector's
# admins. The tenant setting's allowed values (connector.tenant_settings) come from here.
StatusSource = Literal["identity_provider", "connector"]
# The status a user created through SCIM starts with.
ScimDefaultStatus = Literal["active", "inactive"]


@dataclass(frozen=True)
class TenantPolicy:
    status_source: StatusSource = "identity_provider"
    scim_default_status: ScimDefaultStatus = "active"
    provisioning_paused: bool = False
    entra_sync: bool = False  # fed by the Entra poller, not SCIM


@dataclass(frozen=True)
class StatusState:
    active: bool
    idp_active: bool | None
    in_deleted_list: bool


def idp_drives_status(policy: TenantPolicy) -> bool:
    return policy.status_source == "identity_provider"


def initial_state(policy: TenantPolicy, source: Source, said_active: bool | None) -> StatusState:
    """Status of a user a writer creates (said_active: what the writer sent, if anything)."""
    if source not in IDP_SOURCES:
        return StatusState(active=said_active is not False, idp_active=None, in_deleted_list=False)
    default_active = policy.scim_default_status == "active" if source is Source.SCIM else True
    if not idp_drives_status(policy):
        return StatusState(active=default_active, idp_active=said_active, in_deleted_list=False)
    disabled = said_active is False
    return StatusState(
        active=default_active and not disabled, idp_active=said_active, in_deleted_list=disabled
    )


@dataclass(frozen=True)
class Refusal:
    """Why an admin's change is not allowed, and which setting would allow it."""

    reason: str
    setting: str  # provisioning_paused | status_source


PAUSE_FIRST = Refusal(
    "This user is provisioned by the identity provider: pause provisioning first, so the "
    "next synchronisation does not overwrite your change.", "provisioning_paused")
SOURCE_FIRST = Refusal(
    "This tenant's status comes from Entra ID: set the status source to 'connector' "
    "(\"Manage active status from the connector\") before changing a synchronised user.",
    "status_source")


def admin_may_set_status(policy: TenantPolicy, origin: str, fed_by_entra_sync: bool
                         ) -> Refusal | None:
    """None when an admin may set this user's status; otherwise what to change first."""
    if origin not in IDP_SOURCES:
        return None  # created by an admin (or the system): always editable
    if fed_by_entra_sync and idp_drives_status(policy):
        return SOURCE_FIRST
    if not policy.provisioning_paused:
        return PAUSE_FIRST
    return None


def admin_sets(state: StatusState, active: bool) -> StatusState:
    """What an allowed admin change does (check `admin_may_set_status` first)."""
    return StatusState(active=active, idp_active=state.idp_active,
                       in_deleted_list=state.in_deleted_list and not active)


def source_switched(new_policy: TenantPolicy, state: StatusState) -> StatusState:
    """After the status source changed to `new_policy`'s: back to the IdP, its latest
    word applies again; to the connector, nothing changes."""
    if not idp_drives_status(new_policy) or state.idp_active is None:
        return state
    said = state.idp_active
    if state.active == said and state.in_deleted_list == (not said):
        return state
    return StatusState(active=said, idp_active=said, in_deleted_list=not said)


def idp_reports(policy: TenantPolicy, state: StatusState, said_active: bool) -> StatusState:
    """Apply what the identity provider now says about `active`."""
    if said_active == state.idp_active or not idp_drives_status(policy):
        return replace(state, idp_active=said_active)
    return StatusState(active=said_active, idp_active=said_active, in_deleted_list=not said_active)
