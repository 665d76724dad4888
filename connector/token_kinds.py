"""Which kind of secret a bearer token is, read from its prefix, so that one sent to the
wrong surface (a tenant's SCIM token to the admin API, an API token to SCIM) is told
what it is and where it belongs instead of only "not valid"."""

from __future__ import annotations

# (prefix, what it is): connector.tenants.TOKEN_PREFIX, connector.admins.TOKEN_PREFIX and
# billing.reporting's keys (tests/connector/test_token_kinds.py keeps them in step).
KINDS = (("scim_", "a tenant's SCIM token, which works under /scim/v2"),
         ("cadm_", "a personal API token, which works under /api/v1"),
         ("rk_", "a provisioning key, which works under /reporting/v1"))


def elsewhere(token: str, expected_prefix: str) -> str:
    """" This is …" when `token` is a kind of secret meant for another surface than the
    one whose tokens start with `expected_prefix`; "" otherwise."""
    for prefix, what in KINDS:
        if token.startswith(prefix) and prefix != expected_prefix:
            return f" This is {what}."
    return ""
