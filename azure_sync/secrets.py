"""Entra credentials at rest: sealed with the instance key (connector.sealed, which
webhook signing secrets share)."""

from __future__ import annotations

from connector.config import AzureSyncSettings
from connector.sealed import KeyMissing, ensure_key_file, load_key, new_key, seal, unseal

__all__ = ["KeyMissing", "decrypt", "encrypt", "ensure_key_file", "load_key", "new_key"]


def encrypt(settings: AzureSyncSettings, clear: str) -> str:
    return seal(settings, clear)


def decrypt(settings: AzureSyncSettings, sealed: str) -> str:
    return unseal(settings, sealed, "Entra credential",
                  "Enter the client secret or certificate again.")
