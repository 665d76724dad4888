"""Admin accounts: passwords, personal API tokens, sign-in throttling and the audit log.

Passwords are hashed with werkzeug's scrypt (a memory-hard KDF, N=2^15, r=8, p=1) and
salted per hash. API tokens, like SCIM tokens, are 256 random bits kept as a SHA-256
digest: nobody can guess a pre-image of a random secret, so the lookup stays one index
read. Every admin action is one `AuditEntry` in the same transaction as what it did.

    AuthError (connector.errors.DomainError)
     ├── BadCredentials        wrong e-mail/password, unknown/revoked token, disabled account
     ├── TooManyFailedLogins   throttled (retry_after seconds)
     └── Forbidden             signed in, but the role does not reach that tenant/action
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from connector.errors import (
    Conflict,
    DomainError,
    FieldChecks,
    InvalidFields,
    InvalidSetting,
    NotFound,
)
from connector.models import AdminAccount, AdminToken, AuditEntry, InstanceKey, Tenant
from connector.tenants import hash_token

PARTNER, TENANT = "partner", "tenant"
TOKEN_PREFIX = "cadm_"
MIN_PASSWORD_LENGTH = 12
# A hash to check against when the e-mail is unknown, so that a wrong e-mail and a wrong
# password take the same time and the answer does not tell which accounts exist.
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))


class AuthError(DomainError):
    pass


class BadCredentials(AuthError):
    pass


class TooManyFailedLogins(AuthError):
    def __init__(self, retry_after: int):
        super().__init__("Too many failed sign-ins for this account or address. "
                         f"Wait {_wait_words(retry_after)}, then try again.")
        self.retry_after = retry_after


def _wait_words(seconds: int) -> str:
    """898 → "15 minutes" (rounded up: never say less than the wait); under a minute in
    seconds."""
    if seconds < 60:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    minutes = -(-seconds // 60)
    return f"{minutes} minute{'' if minutes == 1 else 's'}"


class Forbidden(AuthError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is acting: an admin account, and how it proved it (session or token)."""

    admin_id: str
    email: str
    role: str
    tenant_id: str | None
    via: str  # session | token
    must_change_password: bool = False

    @property
    def actor(self) -> str:
        return f"admin:{self.email}"

    def can_see(self, tenant_id: str) -> bool:
        return self.role == PARTNER or self.tenant_id == tenant_id

    def require_tenant(self, tenant_id: str) -> None:
        # The same answer as for a tenant that does not exist: a tenant admin learns
        # nothing about other tenants, not even that an id is taken.
        if not self.can_see(tenant_id):
            raise NotFound(f"Tenant {tenant_id} not found.")

    def require_partner(self) -> None:
        if self.role != PARTNER:
            raise Forbidden("Only a partner admin may do this.")


def principal_of(account: AdminAccount, via: str) -> Principal:
    return Principal(account.id, account.email, account.role, account.tenant_id, via,
                     account.must_change_password)


# -- accounts ---------------------------------------------------------------------------


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidSetting(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > 1024:
        raise InvalidSetting("A password may have at most 1024 characters.")


def create_admin(session: Session, email: str, role: str, tenant_id: str | None,
                 now: dt.datetime, password: str | None = None
                 ) -> tuple[AdminAccount, str | None]:
    """Create an account. Without `password`, a one-time password is generated and
    returned (the account must choose its own at first sign-in)."""
    email = email.strip()
    if "@" not in email or len(email) > 320 or any(c.isspace() for c in email):
        raise InvalidSetting(f"{email!r} is not an e-mail address.")
    if role not in (PARTNER, TENANT):
        raise InvalidSetting("role must be 'partner' or 'tenant'.")
    if role == TENANT:
        if not tenant_id:
            raise InvalidSetting("A tenant admin needs the id of its tenant.")
        if session.get(Tenant, tenant_id) is None:
            raise NotFound(f"Tenant {tenant_id} not found; `connector tenant list` shows them.")
    else:
        tenant_id = None
    if session.scalar(select(AdminAccount.id).where(AdminAccount.email_norm == email.casefold())):
        raise Conflict(f"An admin account for {email} already exists.", "email")
    one_time = None
    if password is None:
        one_time = password = secrets.token_urlsafe(12)
    else:
        check_password_rules(password)
    account = AdminAccount(id=str(uuid.uuid4()), email=email, email_norm=email.casefold(),
                           role=role, tenant_id=tenant_id,
                           password_hash=generate_password_hash(password),
                           must_change_password=one_time is not None, session_epoch=0,
                           created_at=now)
    session.add(account)
    session.flush()
    return account, one_time


def reset_password(session: Session, email: str, now: dt.datetime
                   ) -> tuple[AdminAccount, str]:
    """Give an account a new one-time password and sign it out everywhere: its sessions
    and its personal API tokens (a reset follows a lost or leaked credential, and a
    token kept working would be a way back in)."""
    account = find_admin(session, email)
    if account is None:
        raise NotFound(f"No admin account for {email}.")
    one_time = secrets.token_urlsafe(12)
    account.password_hash = generate_password_hash(one_time)
    account.must_change_password = True
    account.session_epoch += 1
    session.execute(update(AdminToken).where(AdminToken.admin_id == account.id,
                                             AdminToken.revoked_at.is_(None))
                    .values(revoked_at=now))
    return account, one_time


def change_password(session: Session, account: AdminAccount, current: str, new: str,
                    repeated: str | None = None) -> None:
    """Every wrong field is said at once (`repeated`: the new password typed again, where
    a form asks for it)."""
    fields = FieldChecks()
    if not check_password_hash(account.password_hash, current):
        # Not BadCredentials: the caller is signed in; the form's value is wrong.
        fields.add("current_password", "The current password is not right.")
    with fields.field("new_password"):
        check_password_rules(new)
    if hmac.compare_digest(current.encode(), new.encode()):
        fields.add("new_password", "Choose a password different from the current one.")
    if repeated is not None and new != repeated:
        fields.add("new_password_again", "The two new passwords are not the same; type them "
                                         "again.")
    fields.raise_any()
    account.password_hash = generate_password_hash(new)
    account.must_change_password = False
    account.session_epoch += 1  # other browsers signed in as this account are signed out


def find_admin(session: Session, email: str) -> AdminAccount | None:
    return session.scalar(select(AdminAccount).where(
        AdminAccount.email_norm == email.strip().casefold()))


def list_admins(session: Session) -> list[AdminAccount]:
    return list(session.scalars(select(AdminAccount).order_by(AdminAccount.email_norm)))


def verify_login(session: Session, email: str, password: str) -> AdminAccount:
    """The account for these credentials, or BadCredentials (same message either way)."""
    account = find_admin(session, email)
    ok = check_password_hash(account.password_hash if account else _DUMMY_HASH, password)
    if account is None or not ok or account.disabled_at is not None:
        raise BadCredentials("E-mail or password is not right.")
    return account


# -- throttling ---------------------------------------------------------------------------

LOGIN_FAILED = "login.failed"


def check_throttle(session: Session, email: str, remote_addr: str | None, now: dt.datetime,
                   max_failures: int, window_seconds: int) -> None:
    """Refuse a sign-in when the account, or the address, failed too often lately.

    Counted from the audit log (shared by every process), per account and per address, so
    neither guessing one account's password nor spraying many accounts gets far.
    """
    since = now - dt.timedelta(seconds=window_seconds)
    for column, value, limit in ((AuditEntry.target, email.strip().casefold(), max_failures),
                                 (AuditEntry.remote_addr, remote_addr, max_failures * 4)):
        if value is None:
            continue
        rows = session.execute(
            select(func.count(), func.min(AuditEntry.at))
            .where(AuditEntry.action == LOGIN_FAILED, column == value, AuditEntry.at > since)
        ).one()
        if rows[0] >= limit:
            oldest = rows[1]
            retry = window_seconds - int((now - oldest).total_seconds()) if oldest else 60
            raise TooManyFailedLogins(max(retry, 1))


# -- API tokens ---------------------------------------------------------------------------


def create_token(session: Session, account_id: str, name: str, now: dt.datetime
                 ) -> tuple[AdminToken, str]:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidFields({"name": "A token needs a name of 1 to 100 characters (what it "
                                     "is for)."})
    clear = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = AdminToken(id=str(uuid.uuid4()), admin_id=account_id, name=name,
                       token_hash=hash_token(clear), hint=clear[:10], created_at=now)
    session.add(token)
    session.flush()
    return token, clear


def list_tokens(session: Session, account_id: str) -> list[AdminToken]:
    return list(session.scalars(select(AdminToken).where(AdminToken.admin_id == account_id)
                                .order_by(AdminToken.created_at, AdminToken.id)))


def revoke_token(session: Session, account_id: str, token_id: str, now: dt.datetime
                 ) -> AdminToken:
    token = session.scalar(select(AdminToken).where(AdminToken.id == token_id,
                                                    AdminToken.admin_id == account_id))
    if token is None:
        raise NotFound(f"Token {token_id} not found.")
    if token.revoked_at is None:
        token.revoked_at = now
    return token


def authenticate_token(session: Session, clear: str, now: dt.datetime) -> Principal:
    digest = hash_token(clear)
    row = session.execute(
        select(AdminToken, AdminAccount)
        .join(AdminAccount, AdminAccount.id == AdminToken.admin_id)
        .where(AdminToken.token_hash == digest, AdminToken.revoked_at.is_(None))
    ).first()
    if row is None or not hmac.compare_digest(row[0].token_hash, digest):
        raise BadCredentials("The API token is not valid (revoked, or never issued).")
    token, account = row
    if account.disabled_at is not None:
        raise BadCredentials("The API token's account is disabled.")
    # Once a minute at most: a script's every call should not be a write.
    if token.last_used_at is None or now - token.last_used_at > dt.timedelta(minutes=1):
        session.execute(update(AdminToken).where(AdminToken.id == token.id)
                        .values(last_used_at=now))
    return principal_of(account, "token")


# -- audit ----------------------------------------------------------------------------------


def audit(session: Session, *, at: dt.datetime, actor: str, action: str,
          correlation_id: str, admin_id: str | None = None, tenant_id: str | None = None,
          target: str | None = None, detail: Any = None, remote_addr: str | None = None
          ) -> None:
    """Append one audit line in the caller's transaction."""
    session.add(AuditEntry(at=at, admin_id=admin_id, actor=actor, action=action,
                           tenant_id=tenant_id, target=target, detail=detail,
                           remote_addr=remote_addr, correlation_id=correlation_id))


# -- instance keys ----------------------------------------------------------------------------


def instance_key(session: Session, name: str, now: dt.datetime) -> str:
    """A random key the instance made for itself, the same in every process."""
    value = session.scalar(select(InstanceKey.value).where(InstanceKey.name == name))
    if value is not None:
        return value
    session.add(InstanceKey(name=name, value=secrets.token_urlsafe(48), created_at=now))
    try:
        session.commit()
    except IntegrityError:  # another process made it first: take theirs
        session.rollback()
    return session.scalar(select(InstanceKey.value).where(InstanceKey.name == name)) or ""
