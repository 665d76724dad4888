"""Secrets shown once (a new SCIM token, a new API token) without the POST rendering them.

The POST that issues a secret stashes it in the browser's session, encrypted (Fernet,
with a key derived from the instance's session key, so the signed-but-readable cookie
never holds it in clear), and redirects to a page that shows it. That GET takes it out
of the session: a reload, the back button or a copied address finds nothing and says
the secret was shown once and how to get a new one. Nothing is re-issued by a reload.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken
from flask import current_app, session

STASH = "shown_once"
KEEP = 5  # stashed secrets per browser, the newest kept: a cookie stays small
TTL_SECONDS = 600  # a secret not displayed within ten minutes is dropped


def _fernet() -> Fernet:
    key = current_app.extensions["session_key"]
    digest = hashlib.sha256(b"connector shown-once secrets\x00" + str(key).encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def stash(secret: str, ticket: str | None = None) -> str:
    """Keep `secret` for one display; returns the id the display page is given (a new
    one, or `ticket`: a page that always shows the latest secret of its kind)."""
    ticket = ticket or secrets.token_urlsafe(12)
    held = dict(session.get(STASH) or {})
    held[ticket] = _fernet().encrypt(f"{ticket}\x00{secret}".encode()).decode()
    session[STASH] = dict(list(held.items())[-KEEP:])
    return ticket


def take(ticket: str | None) -> str | None:
    """The secret stashed under `ticket`, removed from the session; None once shown
    (or expired, or never stashed in this browser)."""
    held = dict(session.get(STASH) or {})
    sealed = held.pop(ticket or "", None)
    if sealed is None:
        return None
    session[STASH] = held
    try:
        clear = _fernet().decrypt(sealed.encode(), ttl=TTL_SECONDS).decode()
    except InvalidToken:
        return None
    owner, _, secret = clear.partition("\x00")
    return secret if owner == ticket else None
