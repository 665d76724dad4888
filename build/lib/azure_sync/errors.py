"""What can go wrong talking to Entra ID and Graph, as one typed tree.

    SyncError
     ├── TokenError            msal's error dict, or the token endpoint unreachable
     ├── GraphError            an HTTP answer from Graph that is not retried (status, code)
     │    ├── PermissionDenied 403 Authorization_RequestDenied: the app lacks permissions
     │    └── ResyncRequired   410, or syncStateNotFound / resyncRequired: start over
     ├── RetryBudgetExhausted  the round used up its retries (429/5xx/timeouts)
     ├── UnsafeLink            a nextLink to another host, or one that loops
     └── ScopeEmpty            the scope's groups are all empty or gone

msal reports most failures as `{"error": ...}` dicts and raises for transport errors;
`azure_sync.tokens` turns both into TokenError so callers handle one thing.
"""

from __future__ import annotations


class SyncError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class TokenError(SyncError):
    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


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


class ScopeEmpty(SyncError):
    """Every group the scope names is empty or gone: syncing "nobody" would remove
    everyone, so the round stops instead."""
