"""The HTTP side of a delivery: which URLs an endpoint may have, and one POST with its
outcome in plain words.

- https:// only; plain http:// only to a loopback host, and only while
  `webhooks.allow_private_targets` is on (tests, a receiver on the same machine).
- No credentials in the URL, no redirects followed (a 3xx is a failure that says where
  it pointed), a connect and a total timeout.
- Reached as Entra ID sync reaches Graph (connector.outbound's `OutboundSession`, one
  code path): trusting the OS store plus `webhooks.ca_bundle`, through `webhooks.proxy`
  (or the environment's HTTPS_PROXY / NO_PROXY; nothing else from the environment, no
  .netrc, no REQUESTS_CA_BUNDLE).
- The address actually connected to is checked at every connection (connector.outbound):
  private, loopback and link-local addresses are refused unless
  `webhooks.allow_private_targets`; so is a name that resolves there.
"""

from __future__ import annotations

import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass

import requests
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import NameResolutionError

from connector.config import WebhooksSettings
from connector.errors import InvalidSetting
from connector.outbound import BlockedAddress, OutboundSession, is_private_literal

HINT = "webhooks.allow_private_targets"
EXCERPT_BYTES = 1024
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    name = host.strip("[]").rstrip(".").lower()
    return name in LOOPBACK_NAMES or name.endswith(".localhost") or name.startswith("127.")


def check_url(url: str, allow_private: bool) -> str:
    """The endpoint URL, or InvalidSetting saying what is wrong with it."""
    url = (url or "").strip()
    if not url or len(url) > 2048:
        raise InvalidSetting("url must be an https:// URL of 2048 characters at most.", "url")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InvalidSetting(f"url {url!r} is not a valid URL.", "url") from None
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidSetting(f"url must be an https:// URL; got {url!r}.", "url")
    if parts.username is not None or parts.password is not None:
        raise InvalidSetting("url may not carry a user name or password: the receiver "
                             "checks the webhook-signature header instead.", "url")
    if parts.fragment:
        raise InvalidSetting("url may not have a #fragment.", "url")
    if parts.scheme == "http" and not (allow_private and is_loopback(host)):
        raise InvalidSetting("url must use https:// (plain http:// only reaches a loopback "
                             f"receiver, and only with {HINT} on).", "url")
    if not allow_private and is_private_literal(host):
        raise InvalidSetting(f"url points at {host}, a private, loopback or link-local "
                             f"address; the connector does not connect there ({HINT} is "
                             "off).", "url")
    return url


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the HTTP status, None when no answer came
    excerpt: str | None  # the answer's first bytes
    error: str | None  # why it failed, in plain words (None: 2xx)
    duration_ms: int
    retry_after: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender:
    """POSTs messages; one per process (its connection pool is shared by threads)."""

    def __init__(self, settings: WebhooksSettings) -> None:
        self.settings = settings
        self.session = OutboundSession(
            (settings.connect_timeout_seconds, settings.read_timeout_seconds),
            settings.ca_bundle, settings.proxy, settings.no_proxy,
            settings.allow_private_targets, HINT, "webhooks")

    def close(self) -> None:
        self.session.close()

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        """POST `body`: prepared alone and sent through the session (its adapter, pool
        and address guard; its proxy as `proxies_for` picks it; its default headers
        under ours), without `Session.request`'s merging of cookies, auth and
        environment settings, which cost more CPU than the rest of a message: nothing
        there applies (trust_env is off, no auth, no cookies are sent to receivers)."""
        started = time.monotonic()
        cfg = self.settings
        try:
            check_url(url, cfg.allow_private_targets)
            merged = CaseInsensitiveDict(self.session.headers)
            merged.update(headers)
            prepared = requests.Request("POST", url, headers=merged, data=body).prepare()
            response = self.session.send(
                prepared, allow_redirects=False, stream=True, verify=True, cert=None,
                proxies=self.session.proxies_for(url),
                timeout=(cfg.connect_timeout_seconds, cfg.read_timeout_seconds))
            excerpt = _read_excerpt(response, started + cfg.read_timeout_seconds
                                    + cfg.connect_timeout_seconds)
        except InvalidSetting as exc:
            return Outcome(None, None, exc.message, _ms(started))
        except requests.RequestException as exc:
            return Outcome(None, None, describe(exc, url), _ms(started))
        status = response.status_code
        error = None
        if 300 <= status < 400:
            where = response.headers.get("Location", "")[:200]
            error = (f"the receiver answered {status}, a redirect to {where or 'elsewhere'}; "
                     "redirects are not followed: set the endpoint's URL to the final one")
        elif not 200 <= status < 300:
            error = f"the receiver answered {status} {response.reason or ''}".rstrip()
        return Outcome(status, excerpt, error, _ms(started), response.headers.get("Retry-After"))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _read_excerpt(response: requests.Response, deadline: float) -> str:
    """The answer's first EXCERPT_BYTES, read until the deadline at most; the rest is
    dropped with the connection (a trickling receiver cannot hold a dispatcher)."""
    taken = b""
    try:
        for chunk in response.iter_content(256):
            taken += chunk
            if len(taken) >= EXCERPT_BYTES or time.monotonic() > deadline:
                break
    except requests.RequestException:
        pass  # the status is what counts; a broken body leaves a shorter excerpt
    finally:
        response.close()
    return taken[:EXCERPT_BYTES].decode("utf-8", "replace")


def describe(exc: BaseException, url: str) -> str:
    """Why `url` gave no answer, in plain words."""
    host = urllib.parse.urlsplit(url).hostname or url
    chain: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(chain) < 20:
        current = todo.pop(0)
        if any(current is seen for seen in chain):
            continue
        chain.append(current)
        todo += [e for e in (getattr(current, "reason", None), current.__cause__,
                             current.__context__, *current.args) if isinstance(e, BaseException)]

    def has(*kinds: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kinds)), None)

    blocked = has(BlockedAddress)
    if blocked is not None:
        return f"the connector does not connect there: {str(blocked).split(': ', 1)[-1]}"
    if has(requests.exceptions.ProxyError) is not None:
        return f"the outbound proxy did not connect to {host}"
    if has(ssl.SSLCertVerificationError) is not None:
        return (f"the TLS certificate of {host} is not trusted (add its CA to the system's "
                "trust store or webhooks.ca_bundle)")
    if has(requests.exceptions.SSLError, ssl.SSLError) is not None:
        return f"the TLS handshake with {host} failed"
    if has(socket.gaierror, NameResolutionError) is not None:
        return f"the name {host} does not resolve"
    if has(ConnectionRefusedError) is not None:
        return f"connection refused by {host}"
    if has(requests.ConnectTimeout) is not None:
        return f"{host} did not accept a connection in time"
    if has(requests.Timeout, TimeoutError, socket.timeout) is not None:
        return f"{host} did not answer in time"
    if has(ConnectionResetError) is not None:
        return f"connection reset by {host}"
    return f"a network error talking to {host}"
