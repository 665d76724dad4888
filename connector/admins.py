"""Admin accounts: passwords, personal API tokens, sign-in throttling and the audit log.

Passwords are hashed with werkzeug's scrypt (a memory-hard KDF, N=2^15, r=8, p=1) and
salted per hash. API tokens, like SCIM tokens, are 256 random bits kept as a SHA-256
digest: nobody can guess a pre-image of a random secret, so the lookup stays one index
read. Every admin action is one `AuditEntry` in the same transaction as what it did.

One-time passwords (made for a new account or by a reset) expire after
`one_time_password_hours` and work for one sign-in, which must choose a new password
before anything else. New passwords are checked against NIST SP 800-63B's "commonly
used or expected" passwords with zxcvbn (its ranked list of 30,000 common passwords,
plus keyboard walks, sequences, repeats and dates). Admins may add a TOTP second factor
(RFC 6238, pyotp) with single-use recovery codes; its secret is kept sealed with the
instance key (`connector.sealed`), since the code needs it back in clear.

    AuthError (connector.errors.DomainError)
     ├── BadCredentials        wrong e-mail/password/code, unknown/revoked token, disabled
     │                         account, a one-time password expired or already used
     ├── TooManyFailedLogins   throttled (retry_after seconds)
     └── Forbidden             signed in, but the role does not reach that tenant/action
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import pyotp
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector import db, token_kinds
from connector.config import AzureSyncSettings
from connector.errors import (
    Conflict,
    DomainError,
    FieldChecks,
    InvalidFields,
    InvalidSetting,
    NotFound,
)
from connector.models import (
    AdminAccount,
    AdminSession,
    AdminToken,
    AuditEntry,
    InstanceKey,
)
from connector.tenants import hash_token, named_tenant
from connector.text import digits

PARTNER, TENANT = "partner", "tenant"
TOKEN_PREFIX = "cadm_"
MIN_PASSWORD_LENGTH = 12
ONE_TIME_HOURS = 24  # the default of [admin] one_time_password_hours
RECOVERY_CODES = 10
TOTP_ISSUER = "Connector"
log = logging.getLogger(__name__)
# A hash to check against when the e-mail is unknown, so that a wrong e-mail and a wrong
# password take the same time and the answer does not tell which accounts exist. Written
# out, not made at import: one scrypt hash is ~0.3 s of CPU, which every `connector`
# command and every process importing this module paid. What it costs to check is in its
# method and parameters (the same as _hash_password's; a test keeps them so), not in
# which password it hashes: a random one, discarded.
_DUMMY_HASH = ("scrypt:32768:8:1$MOMplTrw7tr5iARe$03a2a2eb0fc03cb192741e2440c4be15fe718f65af"
               "108dfe4137ec2323e2066e467517cb2223514fd1e950f04ab0a11149f80b106fda69d2af91"
               "251fe4537f48")


# werkzeug's hashing, imported on first use: importing werkzeug loads its server and test
# client too, which a `connector` command that never hashes a password need not pay.
def _hash_password(password: str) -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password)


def _password_matches(password_hash: str, password: str) -> bool:
    from werkzeug.security import check_password_hash

    return check_password_hash(password_hash, password)


class AuthError(DomainError):
    pass


class BadCredentials(AuthError):
    pass


class TooManyFailedLogins(AuthError):
    def __init__(self, retry_after: int, message: str | None = None):
        super().__init__((message or "Too many failed sign-ins for this account from your "
                          "address.") + f" Wait {_wait_words(retry_after)}, then try again.")
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


class WrongPassword(InvalidSetting):
    """The current password given for a change is not right."""


@dataclass(frozen=True)
class Principal:
    """Who is acting: an admin account, and how it proved it (session or token)."""

    admin_id: str
    email: str
    role: str
    tenant_id: str | None
    via: str  # session | token
    must_change_password: bool = False
    # Two-factor sign-in is required of this account and it has not set it up yet.
    must_enrol_two_factor: bool = False

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


def principal_of(account: AdminAccount, via: str, require_two_factor: bool = False
                 ) -> Principal:
    return Principal(account.id, account.email, account.role, account.tenant_id, via,
                     account.must_change_password,
                     two_factor_required(account, require_two_factor)
                     and account.totp_secret is None)


def two_factor_required(account: AdminAccount, for_partners: bool) -> bool:
    """Whether the settings require a second factor of this account."""
    return for_partners and account.role == PARTNER


# -- accounts ---------------------------------------------------------------------------


def check_password_rules(password: str, email: str | None = None) -> None:
    """NIST SP 800-63B: at least 12 characters, and not a commonly used, expected or
    compromised one (zxcvbn's common-password list and its patterns; the account's own
    e-mail counts as expected)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidSetting(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > 1024:
        raise InvalidSetting("A password may have at most 1024 characters.")
    folded = password.casefold()
    local = (email or "").strip().casefold().partition("@")[0]
    # The e-mail address, or its name part with little else, is what a guesser tries first.
    if email and (email.strip().casefold() in folded or (
            len(local) >= 3 and len(folded.replace(local, "").strip()) < 8)):
        raise InvalidSetting("A password may not be (or contain) your e-mail address, nor "
                             "be little more than its name part. Choose another.")
    from zxcvbn import zxcvbn  # noqa: PLC0415 - its lists load on first use (~0.3 s)

    context = [part for part in (email or "").replace("@", ".").split(".") if part]
    # zxcvbn refuses more than 72 characters (its cost grows with the length); a password
    # whose first 72 are not guessable is not either.
    result = zxcvbn(password[:72], user_inputs=["connector", *context])
    if result["score"] < 2:
        why = result["feedback"].get("warning") or "It is on the lists of common passwords."
        raise InvalidSetting(f"This password is too easy to guess: {why.rstrip('.')}. "
                             "Choose another, e.g. a few unrelated words.")


def _new_one_time(account: AdminAccount, now: dt.datetime, hours: int) -> str:
    one_time = secrets.token_urlsafe(12)
    account.password_hash = _hash_password(one_time)
    account.must_change_password = True
    account.one_time_expires_at = now + dt.timedelta(hours=hours)
    account.one_time_used_at = None
    return one_time


def create_admin(session: Session, email: str, role: str, tenant_id: str | None,
                 now: dt.datetime, password: str | None = None,
                 one_time_hours: int = ONE_TIME_HOURS) -> tuple[AdminAccount, str | None]:
    """Create an account. Without `password`, a one-time password is generated and
    returned (it expires after `one_time_hours` and works for one sign-in, which must
    choose the account's own password)."""
    email = email.strip()
    if "@" not in email or len(email) > 320 or any(c.isspace() for c in email):
        raise InvalidSetting(f"{email!r} is not an e-mail address.")
    if role not in (PARTNER, TENANT):
        raise InvalidSetting("role must be 'partner' or 'tenant'.")
    if role == TENANT:
        if not tenant_id:
            raise InvalidSetting("A tenant admin needs the id of its tenant.")
        named_tenant(session, tenant_id)
    else:
        tenant_id = None
    if session.scalar(select(AdminAccount.id).where(AdminAccount.email_norm == email.casefold())):
        raise Conflict(f"An admin account for {email} already exists.", "email")
    if password is not None:
        check_password_rules(password, email)
    account = AdminAccount(id=str(uuid.uuid4()), email=email, email_norm=email.casefold(),
                           role=role, tenant_id=tenant_id, password_hash="",
                           must_change_password=False, session_epoch=0, created_at=now)
    one_time = None
    if password is None:
        one_time = _new_one_time(account, now, one_time_hours)
    else:
        account.password_hash = _hash_password(password)
    session.add(account)
    session.flush()
    return account, one_time


def sign_out_everywhere(session: Session, account: AdminAccount, now: dt.datetime) -> None:
    """End every browser session of the account (API tokens are the caller's choice)."""
    account.session_epoch += 1
    session.execute(update(AdminSession).where(AdminSession.admin_id == account.id,
                                               AdminSession.ended_at.is_(None))
                    .values(ended_at=now))


def reset_password(session: Session, email: str, now: dt.datetime,
                   one_time_hours: int = ONE_TIME_HOURS) -> tuple[AdminAccount, str]:
    """Give an account a new one-time password and sign it out everywhere: its sessions
    and its personal API tokens (a reset follows a lost or leaked credential, and a
    token kept working would be a way back in)."""
    account = find_admin(session, email)
    if account is None:
        raise NotFound(f"No admin account for {email}.")
    one_time = _new_one_time(account, now, one_time_hours)
    sign_out_everywhere(session, account, now)
    session.execute(update(AdminToken).where(AdminToken.admin_id == account.id,
                                             AdminToken.revoked_at.is_(None))
                    .values(revoked_at=now))
    return account, one_time


def change_password(session: Session, account: AdminAccount, current: str, new: str,
                    now: dt.datetime | None = None, repeated: str | None = None) -> None:
    """Set the account's own password. The current one must be given, except right after
    signing in with a one-time password (that sign-in used it up). A wrong current
    password is `WrongPassword` (throttled by the caller); otherwise every wrong field is
    said at once (`repeated`: the new password typed again, where a form asks for it)."""
    proven = account.must_change_password and account.one_time_used_at is not None
    if not proven and not _password_matches(account.password_hash, current):
        # Not BadCredentials: the caller is signed in; the form's value is wrong.
        raise WrongPassword("The current password is not right.", "current_password")
    fields = FieldChecks()
    with fields.field("new_password"):
        check_password_rules(new, account.email)
    if _password_matches(account.password_hash, new):
        fields.add("new_password", "Choose a password different from the current one.")
    if repeated is not None and new != repeated:
        fields.add("new_password_again", "The two new passwords are not the same; type them "
                                         "again.")
    fields.raise_any()
    account.password_hash = _hash_password(new)
    account.must_change_password = False
    account.one_time_expires_at = account.one_time_used_at = None
    account.session_epoch += 1  # other browsers signed in as this account are signed out
    if now is not None:
        session.execute(update(AdminSession).where(AdminSession.admin_id == account.id,
                                                   AdminSession.ended_at.is_(None))
                        .values(ended_at=now))


def find_admin(session: Session, email: str, lock: bool = False) -> AdminAccount | None:
    """The account with this e-mail; `lock` takes its row FOR UPDATE (a sign-in that may
    use up a one-time password or a code: two at once must not both succeed)."""
    query = select(AdminAccount).where(AdminAccount.email_norm == email.strip().casefold())
    return session.scalar(query.with_for_update() if lock else query)


def list_admins(session: Session) -> list[AdminAccount]:
    return list(session.scalars(select(AdminAccount).order_by(AdminAccount.email_norm)))


def verify_login(session: Session, email: str, password: str,
                 now: dt.datetime | None = None, lock: bool = False) -> AdminAccount:
    """The account for these credentials, or BadCredentials (same message either way).

    A one-time password that expired or was used already is refused with a message
    that says so: only someone who knows it learns that. `lock`: see `find_admin`."""
    account = find_admin(session, email, lock)
    ok = _password_matches(account.password_hash if account else _DUMMY_HASH, password)
    if account is None or not ok or account.disabled_at is not None:
        raise BadCredentials("E-mail or password is not right.")
    if account.must_change_password and now is not None:
        if account.one_time_used_at is not None:
            raise BadCredentials("This one-time password was used already: it works for one "
                                 "sign-in. Ask a partner admin to reset your password.")
        if account.one_time_expires_at is not None and now >= account.one_time_expires_at:
            raise BadCredentials("This one-time password has expired. Ask a partner admin "
                                 "to reset your password for a new one.")
    return account


def use_one_time_password(account: AdminAccount, now: dt.datetime) -> None:
    """A sign-in with the one-time password: it works no more."""
    if account.must_change_password and account.one_time_used_at is None:
        account.one_time_used_at = now


# -- two-factor sign-in (TOTP) ----------------------------------------------------------------


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _clean_code(code: str) -> str:
    return "".join(c for c in code if c.isalnum()).lower()


# TOTP secrets are kept sealed (connector.sealed: Fernet, with the instance key that also
# protects Entra and webhook secrets), so that a copy of the database alone does not give
# anyone an admin's codes. A secret stored before that is base32 in clear (RFC 4648:
# A-Z, 2-7), which a Fernet token (url-safe base64 beginning "gAAAAA") never is: such a
# row keeps working, and is sealed at its next use or by `seal_clear_totp_secrets`.
_BASE32 = re.compile(r"[A-Z2-7]+=*")
_TOTP_REMEDY = ("Sign in with a recovery code, or ask a partner admin to reset your "
                "two-factor sign-in (`connector admin reset-two-factor EMAIL`) and set "
                "it up again.")


def _stored_in_clear(stored: str) -> bool:
    return _BASE32.fullmatch(stored) is not None


def _seal_totp(keys: AzureSyncSettings, secret: str) -> str:
    from connector import sealed  # cryptography: only for the commands that need it

    return sealed.seal(keys, secret)


def _open_totp(keys: AzureSyncSettings, stored: str) -> str:
    if _stored_in_clear(stored):
        return stored
    from connector import sealed

    return sealed.unseal(keys, stored, "two-factor sign-in secret", _TOTP_REMEDY)


def _reseal(account: AdminAccount, keys: AzureSyncSettings) -> None:
    """Seal the account's secrets still stored in clear. Without a key, a warning: they
    keep working in clear until there is one."""
    from connector.sealed import KeyMissing

    try:
        for column in ("totp_secret", "totp_pending_secret"):
            stored = getattr(account, column)
            if stored is not None and _stored_in_clear(stored):
                setattr(account, column, _seal_totp(keys, stored))
    except KeyMissing as exc:
        log.warning("two-factor secret of %s left in clear: %s", account.email, exc.message)


def seal_clear_totp_secrets(session: Session, keys: AzureSyncSettings) -> int:
    """Seal every two-factor secret still stored in clear (rows from before secrets were
    sealed); returns how many accounts changed. Raises KeyMissing when there are some
    and no key is configured. The caller commits."""
    rows = [a for a in session.scalars(select(AdminAccount).where(
        (AdminAccount.totp_secret.is_not(None))
        | (AdminAccount.totp_pending_secret.is_not(None))).with_for_update())
        if any(v is not None and _stored_in_clear(v)
               for v in (a.totp_secret, a.totp_pending_secret))]
    if rows:
        from connector.sealed import load_key

        load_key(keys)  # KeyMissing, before anything is changed
    for account in rows:
        _reseal(account, keys)
    return len(rows)


def start_two_factor(account: AdminAccount, keys: AzureSyncSettings) -> str:
    """A new secret to set up (kept pending, sealed, until a code from it confirms it);
    returns it in clear, for the authenticator app."""
    if account.totp_pending_secret is None:
        secret = pyotp.random_base32()
        account.totp_pending_secret = _seal_totp(keys, secret)
        return secret
    secret = _open_totp(keys, account.totp_pending_secret)
    if _stored_in_clear(account.totp_pending_secret):
        account.totp_pending_secret = _seal_totp(keys, secret)
    return secret


def pending_two_factor(account: AdminAccount, keys: AzureSyncSettings) -> str | None:
    """The secret being set up, in clear (for the QR code), or None."""
    pending = account.totp_pending_secret
    return _open_totp(keys, pending) if pending is not None else None


def provisioning_uri(account: AdminAccount, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account.email, issuer_name=TOTP_ISSUER)


def _matching_step(secret: str, code: str, now: dt.datetime) -> int | None:
    """The time step the code belongs to (this one or the next/previous, for clocks a
    little apart), or None. Only ASCII digits are compared (hmac.compare_digest refuses
    other text: "²²²²²²" typed as a code was a 500)."""
    if not digits(code):
        return None
    totp = pyotp.TOTP(secret)
    step = int(now.timestamp()) // totp.interval  # pyotp's timecode reads local time
    for candidate in (step, step - 1, step + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            return candidate
    return None


def confirm_two_factor(account: AdminAccount, code: str, now: dt.datetime,
                       keys: AzureSyncSettings) -> list[str]:
    """Turn two-factor sign-in on with the pending secret, if the code is from it;
    returns the recovery codes (shown once, kept as digests)."""
    pending = account.totp_pending_secret
    if pending is None:
        raise InvalidSetting("Start setting up two-factor sign-in first.")
    secret = _open_totp(keys, pending)
    step = _matching_step(secret, _clean_code(code), now)
    if step is None:
        raise InvalidSetting("That code is not right. Check that your phone's clock is "
                             "right, and type the 6 digits the app shows now.")
    account.totp_secret = pending if not _stored_in_clear(pending) else _seal_totp(keys, secret)
    account.totp_pending_secret = None
    account.totp_enabled_at, account.totp_last_step = now, step
    codes = [secrets.token_hex(5) for _ in range(RECOVERY_CODES)]
    account.recovery_codes = [_digest(c) for c in codes]
    return [f"{c[:5]}-{c[5:]}" for c in codes]


def check_second_factor(account: AdminAccount, code: str, now: dt.datetime,
                        keys: AzureSyncSettings) -> str:
    """Accept a TOTP code (once: a code seen before is refused) or an unused recovery
    code (then used up); returns "totp" or "recovery", or raises BadCredentials.

    A secret stored in clear (before secrets were sealed) works, and is sealed on the
    way when a key is configured. A recovery code needs no key: it still signs in when
    the key is lost."""
    clean = _clean_code(code)
    stored = account.totp_secret
    if stored is not None and digits(clean) and len(clean) < 10:
        step = _matching_step(_open_totp(keys, stored), clean, now)
        if step is not None and step > (account.totp_last_step or -1):
            account.totp_last_step = step
            if _stored_in_clear(stored):
                _reseal(account, keys)
            return "totp"
    # Not `elif`: a recovery code is ten hex digits, and one in a hundred is all decimal.
    if account.recovery_codes and len(clean) == 10:
        digest = _digest(clean)
        if digest in account.recovery_codes:
            account.recovery_codes = [d for d in account.recovery_codes if d != digest]
            return "recovery"
    raise BadCredentials("The code is not right (or was used already). Type the 6 digits "
                         "your authenticator app shows now, or one of your recovery codes.")


def reset_two_factor(session: Session, account: AdminAccount, now: dt.datetime) -> None:
    """Turn two-factor sign-in off (a lost phone) and sign the account out everywhere."""
    account.totp_secret = account.totp_pending_secret = None
    account.totp_enabled_at = account.totp_last_step = None
    account.recovery_codes = None
    sign_out_everywhere(session, account, now)


# -- disabling ---------------------------------------------------------------------------------


def set_disabled(session: Session, account: AdminAccount, disabled: bool,
                 now: dt.datetime) -> bool:
    """Disable (signs out everywhere; tokens are refused while disabled) or enable an
    account; returns whether anything changed."""
    if disabled == (account.disabled_at is not None):
        return False
    if disabled:
        account.disabled_at = now
        sign_out_everywhere(session, account, now)
    else:
        account.disabled_at = None
    return True


# -- browser sessions ---------------------------------------------------------------------------


def start_session(session: Session, account: AdminAccount, now: dt.datetime,
                  max_age: dt.timedelta) -> str:
    """A new server-side session for the account; returns the id for the cookie. Its
    sessions that ended or aged out are removed on the way."""
    session.execute(delete(AdminSession).where(
        AdminSession.admin_id == account.id,
        (AdminSession.ended_at.is_not(None)) | (AdminSession.created_at < now - max_age)))
    sid = secrets.token_urlsafe(32)
    session.add(AdminSession(id=hash_token(sid), admin_id=account.id, created_at=now))
    return sid


def session_account(session: Session, sid: str) -> tuple[AdminSession, AdminAccount] | None:
    """The live session the cookie names and its account (one query), or None."""
    row = session.execute(
        select(AdminSession, AdminAccount)
        .join(AdminAccount, AdminAccount.id == AdminSession.admin_id)
        .where(AdminSession.id == hash_token(sid), AdminSession.ended_at.is_(None))
    ).first()
    return (row[0], row[1]) if row is not None else None


def end_session(session: Session, sid: str, now: dt.datetime) -> None:
    session.execute(update(AdminSession).where(AdminSession.id == hash_token(sid),
                                               AdminSession.ended_at.is_(None))
                    .values(ended_at=now))


# -- throttling ---------------------------------------------------------------------------

LOGIN_FAILED = "login.failed"
PASSWORD_FAILED = "password.failed"
MAX_LOCK = dt.timedelta(days=1)


@dataclass(frozen=True)
class Throttle:
    max_failures: int = 5  # per account and client network, before a wait
    window_seconds: int = 900
    account_ceiling: int = 50  # per account, all addresses
    address_ceiling: int = 100  # per client network, all accounts


def client_network(remote_addr: str | None) -> str | None:
    """The client as sign-in throttling counts it: an IPv4 address as it is; an IPv6
    address by its /64, since a subscriber or site is given a whole /64 (RFC 6177) and
    may use any address in it, so counting per /128 would let a guesser take a new
    address per try; an IPv4-mapped IPv6 address (::ffff:a.b.c.d, from a dual-stack
    socket) as its IPv4 address. What is not an IP address is counted as it is."""
    if remote_addr is None:
        return None
    try:
        ip = ipaddress.ip_address(remote_addr.split("%", 1)[0])  # without a zone (%eth0)
    except ValueError:
        return remote_addr[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def check_throttle(session: Session, email: str, remote_addr: str | None, now: dt.datetime,
                   limits: Throttle) -> None:
    """Refuse a sign-in from an address that failed too often for this account lately,
    or when the account or the address passed its ceiling.

    Counted from the audit log (shared by every process). The guesser is throttled, not
    the owner: failures count per (account, address), from the account's last good
    sign-in, and each beyond `max_failures` doubles the wait after the last one; the
    owner signing in from another address is held back only by the account's ceiling,
    far above what one address may try. An address is an IPv4 address or an IPv6 /64
    (`client_network`).
    """
    target = email.strip().casefold()
    window = dt.timedelta(seconds=limits.window_seconds)
    network = client_network(remote_addr)
    if network is not None:
        last_ok = session.scalar(select(func.max(AuditEntry.at)).where(
            AuditEntry.action == "login", AuditEntry.target == target))
        since = max(now - MAX_LOCK, last_ok) if last_ok else now - MAX_LOCK
        count, last = session.execute(
            select(func.count(), func.max(AuditEntry.at))
            .where(AuditEntry.action == LOGIN_FAILED, AuditEntry.target == target,
                   AuditEntry.remote_net == network, AuditEntry.at > since)).one()
        if count >= limits.max_failures and last is not None:
            wait = min(window * 2 ** (count - limits.max_failures), MAX_LOCK)
            retry = int((last + wait - now).total_seconds())
            if retry > 0:
                raise TooManyFailedLogins(retry)
    since = now - window
    for column, value, limit, why in (
            (AuditEntry.target, target, limits.account_ceiling,
             "Too many failed sign-ins for this account from many addresses."),
            (AuditEntry.remote_net, network, limits.address_ceiling,
             "Too many failed sign-ins from your address.")):
        if value is None:
            continue
        count, oldest = session.execute(
            select(func.count(), func.min(AuditEntry.at))
            .where(AuditEntry.action == LOGIN_FAILED, column == value, AuditEntry.at > since)
        ).one()
        if count >= limit:
            retry = limits.window_seconds - int((now - oldest).total_seconds()) if oldest else 60
            raise TooManyFailedLogins(max(retry, 1), why)


def password_failures(session: Session, account: AdminAccount, now: dt.datetime,
                      window_seconds: int) -> tuple[int, int]:
    """Wrong current passwords given for the account within the window, and the seconds
    until the oldest of them leaves it."""
    count, oldest = session.execute(
        select(func.count(), func.min(AuditEntry.at))
        .where(AuditEntry.action == PASSWORD_FAILED, AuditEntry.target == account.email_norm,
               AuditEntry.at > now - dt.timedelta(seconds=window_seconds))).one()
    retry = window_seconds - int((now - oldest).total_seconds()) if oldest else window_seconds
    return count, max(retry, 1)


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


def authenticate_token(session: Session, clear: str, now: dt.datetime,
                       require_two_factor: bool = False) -> Principal:
    digest = hash_token(clear)
    row = session.execute(
        select(AdminToken, AdminAccount)
        .join(AdminAccount, AdminAccount.id == AdminToken.admin_id)
        .where(AdminToken.token_hash == digest, AdminToken.revoked_at.is_(None))
    ).first()
    if row is None or not hmac.compare_digest(row[0].token_hash, digest):
        raise BadCredentials("The API token is not valid (revoked, or never issued)."
                             + token_kinds.elsewhere(clear, TOKEN_PREFIX))
    token, account = row
    if account.disabled_at is not None:
        raise BadCredentials("The API token's account is disabled.")
    if two_factor_required(account, require_two_factor) and account.totp_secret is None:
        raise BadCredentials("Two-factor sign-in is required of this account and it has "
                             "not set it up: sign in to the admin UI to set it up, then "
                             "the token works again.")
    # Once a minute at most: a script's every call should not be a write.
    # Kept when the request writes nothing else: a script whose calls are all refused
    # still shows when it last ran.
    if token.last_used_at is None or now - token.last_used_at > dt.timedelta(minutes=1):
        db.keep_even_if_rolled_back(session, update(AdminToken).where(
            AdminToken.id == token.id).values(last_used_at=now))
    return principal_of(account, "token")


# -- audit ----------------------------------------------------------------------------------


def audit(session: Session, *, at: dt.datetime, actor: str, action: str,
          correlation_id: str, admin_id: str | None = None, tenant_id: str | None = None,
          target: str | None = None, detail: Any = None, remote_addr: str | None = None
          ) -> None:
    """Append one audit line in the caller's transaction (with the client's network, which
    sign-in throttling counts by)."""
    session.add(AuditEntry(at=at, admin_id=admin_id, actor=actor, action=action,
                           tenant_id=tenant_id, target=target, detail=detail,
                           remote_addr=remote_addr, remote_net=client_network(remote_addr),
                           correlation_id=correlation_id))


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
