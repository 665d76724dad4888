"""Admin accounts: the signed-in admin's own password, two-factor sign-in and API
tokens, and the partner admins' management of accounts (invite, disable/enable, reset
password, reset two-factor sign-in)."""

from __future__ import annotations

from sqlalchemy import select

from connector import admins
from connector.actions import AdminCall
from connector.admins import Throttle, TooManyFailedLogins
from connector.config import AzureSyncSettings
from connector.errors import NotFound, StateConflict
from connector.models import AdminAccount, AdminToken


def own_account(call: AdminCall) -> AdminAccount:
    account = call.session.get(AdminAccount, call.principal.admin_id)
    assert account is not None  # the sign-in gate checked it this request
    return account


def change_password(call: AdminCall, current: str, new: str, repeated: str | None = None,
                    limits: Throttle | None = None) -> AdminAccount:
    """Change the signed-in admin's password; every other session of it ends. `repeated`
    is the new password typed a second time, where a form asks for it.

    Wrong current passwords are throttled like sign-ins: each is audited and committed
    (the request fails, the count must stay); at `limits.max_failures` within the window
    the change answers 429 and every browser session of the account ends (a stolen
    session cannot go on guessing)."""
    limits = limits or Throttle()
    account = own_account(call)
    failures, retry = admins.password_failures(call.session, account, call.now,
                                               limits.window_seconds)
    if failures >= limits.max_failures:
        raise TooManyFailedLogins(retry, "Too many wrong current passwords for this account.")
    try:
        admins.change_password(call.session, account, current, new, call.now, repeated)
    except admins.WrongPassword:
        call.session.rollback()
        account = own_account(call)
        call.audit(admins.PASSWORD_FAILED, account.tenant_id, account.email_norm)
        if failures + 1 >= limits.max_failures:
            admins.sign_out_everywhere(call.session, account, call.now)
            call.audit("sessions.ended", account.tenant_id, account.email,
                       {"why": "too many wrong current passwords"})
            call.session.commit()
            raise TooManyFailedLogins(
                limits.window_seconds, "Too many wrong current passwords: every browser "
                "session of this account is signed out. Sign in again with the right "
                "password.") from None
        call.session.commit()
        raise
    call.audit("password.changed", account.tenant_id, account.email)
    return account


# -- two-factor sign-in -------------------------------------------------------------------------


def start_two_factor(call: AdminCall, keys: AzureSyncSettings) -> str:
    """A secret for the signed-in admin's authenticator app (pending until confirmed,
    sealed with the instance key `keys` names)."""
    account = own_account(call)
    if account.totp_secret is not None:
        raise StateConflict("Two-factor sign-in is on already. To move it to another "
                            "phone, ask a partner admin to reset it, then set it up again.")
    return admins.start_two_factor(account, keys)


def confirm_two_factor(call: AdminCall, code: str, keys: AzureSyncSettings) -> list[str]:
    """Turn two-factor sign-in on with a code from the app; returns the recovery codes."""
    account = own_account(call)
    codes = admins.confirm_two_factor(account, code, call.now, keys)
    call.audit("two_factor.enabled", account.tenant_id, account.email)
    return codes


# -- managing admin accounts (partner admins) ---------------------------------------------------


def _account(call: AdminCall, admin_id: str) -> AdminAccount:
    call.principal.require_partner()
    account = call.session.get(AdminAccount, admin_id)
    if account is None:
        raise NotFound(f"Admin account {admin_id} not found.")
    return account


def create_admin(call: AdminCall, email: str, role: str, tenant_id: str | None,
                 one_time_hours: int = admins.ONE_TIME_HOURS
                 ) -> tuple[AdminAccount, str | None]:
    """A partner admin invites an admin: a new account with a one-time password."""
    call.principal.require_partner()
    account, one_time = admins.create_admin(call.session, email, role, tenant_id, call.now,
                                            one_time_hours=one_time_hours)
    call.audit("admin.created", account.tenant_id, account.email, {"role": role})
    return account, one_time


def set_disabled(call: AdminCall, admin_id: str, disabled: bool) -> AdminAccount:
    """Disable (signed out everywhere, its tokens refused) or enable an account. A partner
    admin cannot disable itself: nobody might be left to enable it."""
    account = _account(call, admin_id)
    if disabled and account.id == call.principal.admin_id:
        raise StateConflict("You cannot disable your own account; another partner admin "
                            "can.")
    if admins.set_disabled(call.session, account, disabled, call.now):
        call.audit("admin.disabled" if disabled else "admin.enabled", account.tenant_id,
                   account.email)
    return account


def reset_password(call: AdminCall, admin_id: str,
                   one_time_hours: int = admins.ONE_TIME_HOURS) -> tuple[AdminAccount, str]:
    """A new one-time password for an account; it is signed out everywhere and its API
    tokens are revoked."""
    account = _account(call, admin_id)
    if account.id == call.principal.admin_id:
        raise StateConflict("Change your own password on your account page; a reset is "
                            "for someone else's.")
    account, one_time = admins.reset_password(call.session, account.email, call.now,
                                              one_time_hours)
    call.audit("admin.password_reset", account.tenant_id, account.email)
    return account, one_time


def reset_two_factor(call: AdminCall, admin_id: str) -> AdminAccount:
    """Turn off an account's two-factor sign-in (a lost phone); it is signed out
    everywhere and sets it up again at its next sign-in when it is required."""
    account = _account(call, admin_id)
    if account.totp_secret is None and account.totp_pending_secret is None:
        raise StateConflict(f"{account.email} has no two-factor sign-in to reset.")
    admins.reset_two_factor(call.session, account, call.now)
    call.audit("admin.two_factor_reset", account.tenant_id, account.email)
    return account


def create_token(call: AdminCall, name: str) -> tuple[AdminToken, str]:
    """A personal API token for the signed-in admin; the clear token is returned once."""
    token, clear = admins.create_token(call.session, call.principal.admin_id, name, call.now)
    call.audit("token.created", call.principal.tenant_id, token.name, {"token_id": token.id})
    return token, clear


def own_token(call: AdminCall, token_id: str) -> AdminToken:
    """One of the signed-in admin's API tokens (NotFound for anyone else's)."""
    token = call.session.scalar(select(AdminToken).where(
        AdminToken.id == token_id, AdminToken.admin_id == call.principal.admin_id))
    if token is None:
        raise NotFound(f"You have no API token with id {token_id}; your account page lists "
                       "your tokens.")
    return token


def revoke_token(call: AdminCall, token_id: str) -> AdminToken:
    token = admins.revoke_token(call.session, call.principal.admin_id, token_id, call.now)
    call.audit("token.revoked", call.principal.tenant_id, token.name, {"token_id": token.id})
    return token
