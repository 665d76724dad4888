"""What can go wrong talking to Entra ID and Graph, as one typed tree.

    SyncError
     ├── TokenError            msal's error dict, or the token endpoint unreachable
     ├── GraphError            an HTTP answer from Graph that is not retried (status, code)
     │    ├── PermissionDenied 403 Authorization_RequestDenied: the app lacks permissions
     │    └── ResyncRequired   410, or syncStateNotFound / resyncRequired: start over
     ├── RetryBudgetExhausted  the round used up its retries (429/5xx/timeouts)
     ├── UnsafeLink            a nextLink to another host, or one that loops
     ├── Unreachable           no HTTP answer at all: refused, reset, timeout, DNS, TLS,
     │                         proxy, or an address the connector must not connect to
     └── ScopeEmpty            the scope's groups are all empty or gone

msal reports most failures as `{"error": ...}` dicts and raises for transport errors;
`azure_sync.tokens` turns both into TokenError so callers handle one thing.

A message is written for the admin, in plain words; the raw detail (the exception chain
of requests/urllib3) travels apart in `detail`. Where only one text can be stored (a run's
`error` column), `stored_text` joins them with DETAIL_MARK and `split_detail` takes
them apart again for the surfaces (a <details> on the run page, `detail` in the API).
"""

from __future__ import annotations

from connector.sync_status import DETAIL_MARK, UNREACHABLE, plain_error


class SyncError(Exception):
    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.plain = message
        self.detail = detail
        # What a run row keeps: the plain words, and the raw detail after DETAIL_MARK.
        self.message = stored_text(message, detail)


def stored_text(message: str, detail: str | None) -> str:
    return message + (DETAIL_MARK + detail if detail else "")


def split_detail(text: str | None) -> tuple[str | None, str | None]:
    """The plain message and the raw detail of a stored error text (an old one stored
    raw is put in plain words: `connector.sync_status.plain_error`)."""
    return plain_error(text)


def for_tenant_admin(plain: str | None) -> str | None:
    """The message a tenant admin sees: an unreachable host without its cause (refused,
    reset or timed out would tell an open port from a closed one)."""
    if plain is not None and plain.startswith(UNREACHABLE):
        return f"{UNREACHABLE}. Ask your partner admin to check the connection."
    return plain


class TokenError(SyncError):
    """`transient`: Entra ID said to try again (a 5xx, temporarily_unavailable)."""

    def __init__(self, message: str, code: str | None = None, detail: str | None = None,
                 transient: bool = False):
        super().__init__(message, detail)
        self.code = code
        self.transient = transient


class GraphError(SyncError):
    def __init__(self, message: str, status: int, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class PermissionDenied(GraphError):
    pass


class ResyncRequired(GraphError):
    pass


class RetryBudgetExhausted(SyncError):
    pass


class UnsafeLink(SyncError):
    pass


class Unreachable(SyncError):
    """No HTTP answer: `cause` in plain words (connection refused by graph.example), the
    exception chain in `detail`. Retried at the next round, not within this one."""

    def __init__(self, cause: str, detail: str | None = None):
        super().__init__(f"{UNREACHABLE}: {cause}.", detail)
        self.cause = cause
        self.lasting = False  # True: not worth retrying within the round


class ScopeEmpty(SyncError):
    """Every group the scope names is empty or gone: syncing "nobody" would remove
    everyone, so the round stops instead."""
