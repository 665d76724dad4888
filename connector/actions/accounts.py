"""Admin accounts: the signed-in admin's own password and API tokens, and the partner
admins' management of accounts."""

from __future__ import annotations

from sqlalchemy import select

from connector import admins
from connector.actions import AdminCall
from connector.errors import NotFound
from connector.models import AdminAccount, AdminToken


def own_account(call: AdminCall) -> AdminAccount:
    account = call.session.get(AdminAccount, call.principal.admin_id)
    assert account is not None  # the sign-in gate checked it this request
    return account


def change_password(call: AdminCall, current: str, new: str, repeated: str | None = None
                    ) -> AdminAccount:
    """Change the signed-in admin's password; every other session of it ends. `repeated`
    is the new password typed a second time, where a form asks for it."""
    account = own_account(call)
    admins.change_password(call.session, account, current, new, repeated)
    call.audit("password.changed", account.tenant_id, account.email)
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


def create_admin(call: AdminCall, email: str, role: str, tenant_id: str | None
                 ) -> tuple[AdminAccount, str | None]:
    """A partner admin creates an admin account with a one-time password."""
    call.principal.require_partner()
    account, one_time = admins.create_admin(call.session, email, role, tenant_id, call.now)
    call.audit("admin.created", account.tenant_id, account.email, {"role": role})
    return account, one_time
