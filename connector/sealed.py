"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`, with the
instance key.

One key protects every secret the connector must be able to read back (Entra client
secrets and certificates, webhook signing secrets, admins' TOTP secrets). It comes from
the settings (`azure_sync.encryption_key`, or the file named by `encryption_key_file`),
never from the database it protects. Losing the key means entering those secrets again
(Entra), rotating them (webhooks) or setting two-factor sign-in up again (admins sign in
with a recovery code, or a partner admin resets it); nothing else is lost.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from connector.config import AzureSyncSettings
from connector.errors import DomainError


class KeyMissing(DomainError):
    pass


def new_key() -> str:
    return Fernet.generate_key().decode()


def load_key(settings: AzureSyncSettings) -> str:
    if settings.encryption_key:
        return settings.encryption_key
    path = Path(settings.encryption_key_file) if settings.encryption_key_file else None
    if path is not None and path.is_file():
        return path.read_text().strip()
    raise KeyMissing("No key to encrypt secrets with (Entra credentials, webhook signing "
                     "secrets, admins' two-factor secrets): set azure_sync.encryption_key "
                     "(`connector keygen` prints one) or create the file named by "
                     "azure_sync.encryption_key_file (`connector bootstrap` does).")


def ensure_key_file(settings: AzureSyncSettings) -> Path | None:
    """Create the key file (owner-only) when no key is configured. Returns it if made."""
    if settings.encryption_key or not settings.encryption_key_file:
        return None
    path = Path(settings.encryption_key_file)
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(new_key() + "\n")
    return path


def seal(settings: AzureSyncSettings, clear: str) -> str:
    return _fernet(settings).encrypt(clear.encode()).decode()


def unseal(settings: AzureSyncSettings, sealed: str, what: str, remedy: str) -> str:
    """The clear text; KeyMissing naming `what` and the `remedy` when the key differs."""
    try:
        return _fernet(settings).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise KeyMissing(f"A stored {what} cannot be decrypted with the configured key (was "
                         f"the key changed?). {remedy}") from None


def _fernet(settings: AzureSyncSettings) -> Fernet:
    try:
        return Fernet(load_key(settings).encode())
    except ValueError:
        raise KeyMissing("azure_sync.encryption_key is not a valid key (32 url-safe "
                         "base64-encoded bytes); `connector keygen` prints one.") from None
