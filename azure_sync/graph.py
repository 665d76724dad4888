"""A small client for the Graph calls the poller makes, over a `requests` session.

It follows links Graph hands out verbatim (refusing other hosts), signs every request
with an app-only token (a 401 drops the cached token and retries once), waits out
throttling (Retry-After in seconds or as a date, else exponential backoff with jitter)
within a retry budget per round, and honours a "paused until" shared by every tenant of
the same app registration. Errors come out as the types of `azure_sync.errors`.
"""

from __future__ import annotations

import datetime as dt
import json
import random as random_module
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from azure_sync.errors import (
    GraphError,
    PermissionDenied,
    ResyncRequired,
    RetryBudgetExhausted,
    TokenError,
    Unreachable,
    UnsafeLink,
)
from azure_sync.retry import (
    RETRIED_STATUSES,
    RetryBudget,
    backoff_seconds,
    retry_after_seconds,
)
from azure_sync.tokens import Credential, TokenProvider
from azure_sync.transport import describe_failure, is_lasting
from connector.clock import now as wall_clock

# The sign-in service failing for a moment (a 5xx): msal's own pause before asking again.
TOKEN_RETRY_SECONDS = 5.0
RESYNC_CODES = frozenset({"syncstatenotfound", "resyncrequired"})
PERMISSION_HINT = ("grant the app registration the Microsoft Graph application permissions "
                   "User.Read.All and GroupMember.Read.All (with admin consent)")


@dataclass(frozen=True)
class AppIdentity:
    """Which app registration signs in where, and which Graph it reads."""

    authority_host: str
    directory_id: str
    client_id: str
    credential: Credential
    graph_base_url: str
    scope: str = ""  # empty: graph_base_url + /.default

    @property
    def token_scope(self) -> str:
        return self.scope or self.graph_base_url.rstrip("/") + "/.default"


class ThrottleGate(Protocol):
    """Where the shared "paused until" of an app registration lives (the database)."""

    def paused_until(self, client_id: str) -> dt.datetime | None: ...

    def pause(self, client_id: str, until: dt.datetime) -> None: ...


class MemoryGate:
    def __init__(self) -> None:
        self._until: dict[str, dt.datetime] = {}

    def paused_until(self, client_id: str) -> dt.datetime | None:
        return self._until.get(client_id)

    def pause(self, client_id: str, until: dt.datetime) -> None:
        current = self._until.get(client_id)
        if current is None or until > current:
            self._until[client_id] = until


@dataclass
class GraphClient:
    http: requests.Session
    tokens: TokenProvider
    app: AppIdentity
    budget: RetryBudget
    gate: ThrottleGate = field(default_factory=MemoryGate)
    clock: Callable[[], dt.datetime] = wall_clock
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = random_module.random
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    max_wait: float = 600.0  # longest single wait; beyond it the round gives up for now
    # What happens after giving up, for the message: a round resumes; an admin's preview
    # or "sync this user now" is tried again by the admin.
    then: str = "the next round resumes here"
    requests_made: int = 0
    # What this round's retries cost (throttling, 5xx, timeouts): its run counts them.
    retries: int = 0
    waited: float = 0.0

    def url(self, path: str, query: dict[str, str] | None = None) -> str:
        base = self.app.graph_base_url.rstrip("/")
        return f"{base}/v1.0/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def check_link(self, link: str) -> str:
        """A link Graph returned must point at the Graph we talk to (never follow a
        link elsewhere with our token)."""
        ours = urllib.parse.urlsplit(self.app.graph_base_url)
        theirs = urllib.parse.urlsplit(link)
        if (theirs.scheme, theirs.netloc.lower()) != (ours.scheme, ours.netloc.lower()):
            raise UnsafeLink(f"Graph returned a link to another host ({theirs.netloc}); "
                             "refusing to follow it.")
        return link

    def get(self, url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """GET a Graph URL and return its JSON object, retrying what may be retried."""
        self.check_link(url)
        attempt = 0
        refreshed = False
        while True:
            self._wait_for_gate()
            try:
                response = self._send(url, headers)
            except TokenError as exc:
                if not exc.transient:
                    raise
                # msal replays a failure it saw for a few seconds: wait at least that
                # long, then ask with a fresh app (and cache) rather than its replay.
                self.tokens.forget(self.app.authority_host, self.app.directory_id,
                                   self.app.client_id, self.app.credential)
                self._retry_later(max(TOKEN_RETRY_SECONDS, self._backoff(attempt)), attempt,
                                  "the sign-in service failed", exc)
                attempt += 1
                continue
            if isinstance(response, Unreachable):  # a timeout or a dropped connection
                self._retry_later(None, attempt, response.cause, response)
                attempt += 1
                continue
            status = response.status_code
            if status == 200:
                return self._json(response, url)
            code, said = _graph_error(response)
            if status == 401 and not refreshed:
                self.tokens.forget(self.app.authority_host, self.app.directory_id,
                                   self.app.client_id, self.app.credential)
                refreshed = True
                continue
            if status == 403:
                raise PermissionDenied(
                    f"Graph refused access ({code or 'Forbidden'}): {PERMISSION_HINT}.",
                    status, code)
            if status in (400, 404, 410) and (status == 410 or (code or "").lower()
                                              in RESYNC_CODES):
                raise ResyncRequired(f"Graph says the delta state is gone ({status} "
                                     f"{code or ''}); a full round starts over.", status, code)
            if status in RETRIED_STATUSES:
                wait = retry_after_seconds(response.headers.get("Retry-After"), self.clock())
                if status == 429 or wait is not None:
                    self.gate.pause(self.app.client_id, self.clock() + dt.timedelta(
                        seconds=wait if wait is not None else self._backoff(attempt)))
                self._retry_later(wait, attempt, f"HTTP {status} {code or ''}".strip())
                attempt += 1
                continue
            raise GraphError(f"Graph answered {status} {code or ''} for "
                             f"{urllib.parse.urlsplit(url).path}".replace("  ", " ")
                             + (f": {said}" if said else "."), status, code)

    # -- plumbing ------------------------------------------------------------------------

    def _send(self, url: str, headers: dict[str, str] | None
              ) -> requests.Response | Unreachable:
        """Graph's answer, or why there was none when it may pass (a timeout, a reset);
        a lasting failure (refused, DNS, TLS, proxy, a blocked address) is raised: the
        next round tries again."""
        token = self.tokens.token(self.app.authority_host, self.app.directory_id,
                                  self.app.client_id, self.app.credential,
                                  self.app.token_scope)
        self.requests_made += 1
        try:
            return self.http.get(url, headers={"Authorization": f"Bearer {token}",
                                               "Accept": "application/json",
                                               **(headers or {})},
                                 allow_redirects=False)
        except requests.RequestException as exc:
            failure = describe_failure(exc, url)
            if is_lasting(failure):
                raise failure from exc
            return failure

    def _json(self, response: requests.Response, url: str) -> dict[str, Any]:
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError):
            body = None
        if not isinstance(body, dict):
            # A truncated or garbled page: retried like a transient fault.
            self._retry_later(None, 0, "a page that is not a JSON object")
            return self.get(url)
        return body

    def _backoff(self, attempt: int) -> float:
        return backoff_seconds(attempt, self.backoff_base, self.backoff_cap, self.random)

    def _retry_later(self, wait: float | None, attempt: int, what: str,
                     failure: Unreachable | TokenError | None = None) -> None:
        if not self.budget.spend():
            if failure is not None:
                raise failure
            raise RetryBudgetExhausted(f"Gave up after repeated failures from Graph "
                                       f"(last: {what}); {self.then}.")
        seconds = wait if wait is not None else self._backoff(attempt)
        if seconds > self.max_wait:
            raise RetryBudgetExhausted(f"Graph asked to wait {seconds:.0f} s ({what}); "
                                       f"{self.then}.")
        self.retries += 1
        self.waited += seconds
        self.sleep(seconds)

    def _wait_for_gate(self) -> None:
        until = self.gate.paused_until(self.app.client_id)
        if until is None:
            return
        seconds = (until - self.clock()).total_seconds()
        if seconds > self.max_wait:
            raise RetryBudgetExhausted("This app registration is throttled by Graph for "
                                       f"{seconds:.0f} s more; {self.then}.")
        if seconds > 0:
            self.waited += seconds
            self.sleep(seconds)


def _graph_error(response: requests.Response) -> tuple[str | None, str | None]:
    """Graph's `error.code` and its own words for a refusal (`error.message`, cut to one
    short line), read from one parse of the body; None for what it did not say."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    code = error["code"] if isinstance(error.get("code"), str) else None
    message = error.get("message")
    if not isinstance(message, str) or not message.strip():
        return code, None
    line = " ".join(message.split())
    return code, line if len(line) <= 300 else line[:299] + "…"


__all__ = ["AppIdentity", "GraphClient", "MemoryGate", "ThrottleGate", "TokenError"]
