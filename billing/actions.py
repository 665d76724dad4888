"""Admin actions on billing, shared by the admin API (`views`) and the web UI (`pages`):
change the billing info, close or reissue a month, the `invited` policy's invitations
and claims, a user's frontline attributes, the reporting API's provisioning keys, and
the audit line of an export. Each checks, acts and writes its audit line once
(`connector.actions`); the surfaces only parse their input and render the result.

Commercial terms (policy, prices, trial, non-profit, time zone) are a partner admin's to
set; a tenant admin may fill in what the invoice shows, as in the seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from billing import close as closing
from billing import reporting
from billing.calendar import Month
from billing.profiles import update_profile
from connector.actions import AdminCall
from connector.actions.users import frontline_attributes, live_user
from connector.config import BillingSettings
from connector.errors import InvalidSetting, NotFound
from connector.models import BillingProfile, ReportingKey, User

PARTNER_FIELDS = frozenset({"policy", "prices", "trial_ends_on", "trial_starts_on",
                            "non_profit", "time_zone"})
REASON_LENGTH = 500


def update_billing(call: AdminCall, tenant_id: str, changes: Mapping[str, Any]
                   ) -> BillingProfile:
    """Change the billing info (snake_case fields; commercial terms need a partner
    admin). Every field is checked before any is applied."""
    tenant = call.tenant(tenant_id, lock=True)
    if set(changes) & PARTNER_FIELDS:
        call.principal.require_partner()
    profile = update_profile(call.session, call.context(tenant_id), tenant, changes)
    call.audit("billing.updated", tenant_id, None, sorted(changes))
    return profile


def close_month(call: AdminCall, maker: sessionmaker[Session], settings: BillingSettings,
                tenant_id: str, month: Month, reissue_reason: str | None = None
                ) -> closing.Outcome:
    """Close a month now (nothing happens if it is closed), or with a reason, reissue a
    closed one as a new version; a partner admin's to do. Raises `planning.NotDue` when
    the month cannot be closed yet. Commits the request's transaction first: the close
    runs in transactions of its own."""
    call.principal.require_partner()
    call.tenant(tenant_id)
    if reissue_reason is not None:
        reissue_reason = reissue_reason.strip()
        if not reissue_reason or len(reissue_reason) > REASON_LENGTH:
            raise InvalidSetting(f"Say why the month is reissued (at most {REASON_LENGTH} "
                                 "characters).")
    call.session.commit()
    outcome = closing.close_month(maker, tenant_id, month, settings, call.now,
                                  actor=call.principal.actor, reissue_reason=reissue_reason)
    if reissue_reason is None:
        call.audit("billing.closed", tenant_id, str(month),
                   {"created": outcome.created, "hash": outcome.close.content_hash})
    else:
        call.audit("billing.reissued", tenant_id, str(month),
                   {"version": outcome.close.version, "reason": reissue_reason})
    return outcome


def invite_user(call: AdminCall, tenant_id: str, user_id: str) -> User:
    """Invite a user to claim its account (what the `invited` policy counts)."""
    tenant = call.tenant(tenant_id)
    user = live_user(call, tenant_id, user_id)
    if call.directory(tenant).invite_user(user):
        call.audit("user.invited", tenant_id, user_id)
    return user


def claim_user(call: AdminCall, tenant_id: str, user_id: str) -> User:
    """Record that a user claimed its account (which implies the invitation)."""
    tenant = call.tenant(tenant_id)
    user = live_user(call, tenant_id, user_id)
    if call.directory(tenant).claim_user(user):
        call.audit("user.claimed", tenant_id, user_id)
    return user


def set_frontline(call: AdminCall, tenant_id: str, user_id: str, attributes: dict[str, Any]
                  ) -> User:
    """Set the frontline plan's attributes of a user (desklessPercent, paidHourly,
    hasEmail, frontlineRole)."""
    tenant = call.tenant(tenant_id)
    attributes = frontline_attributes(attributes)
    user = live_user(call, tenant_id, user_id)
    if call.directory(tenant).set_user_frontline(user, attributes):
        call.audit("user.frontline", tenant_id, user_id, attributes)
    return user


def create_reporting_key(call: AdminCall, name: str) -> tuple[ReportingKey, str]:
    """A provisioning key for the reporting API; the key itself is returned once."""
    call.principal.require_partner()
    try:
        row, key = reporting.create_key(call.session, name, call.principal.actor, call.now)
    except ValueError as exc:
        raise InvalidSetting(str(exc)) from None
    call.audit("reporting_key.created", None, row.id, {"name": row.name})
    return row, key


def revoke_reporting_key(call: AdminCall, key_id: str) -> ReportingKey:
    call.principal.require_partner()
    row = reporting.revoke_key(call.session, key_id, call.now)
    if row is None:
        raise NotFound(f"No provisioning key {key_id}.")
    call.audit("reporting_key.revoked", None, key_id)
    return row
