"""How the connector reaches Entra ID and Graph: whom it trusts, which proxy, which addresses.

One `ReachSession` carries both Graph's requests and msal's token requests:

- **Trust**: the operating system's trust store (through `truststore`), plus the CA
  bundle of `azure_sync.ca_bundle` when set. certifi is not used: a site whose TLS
  inspection proxy or private CA is in the OS store just works.
- **Proxy**: `azure_sync.proxy` (minus the hosts of `azure_sync.no_proxy`); without
  it, the environment's HTTPS_PROXY / NO_PROXY. Nothing else is taken from the
  environment (a REQUESTS_CA_BUNDLE or a .netrc must not change whom we trust or what
  we send), so the session keeps `trust_env` off and picks proxies itself.
- **Addresses**: unless
  `azure_sync.allow_private_hosts`, a connection whose peer is
  not a global address (private, loopback, link-local, shared, reserved…) is closed
  before a byte is sent. The check is on the connected socket's peer, at every new
  connection, so a DNS answer that changes after a check (rebinding) cannot get around
  it. Through a proxy the peer is the proxy (the operator's choice); the target is
  then checked on the addresses its name resolves to here, and an IP literal always.

All three are connector/outbound.py's `OutboundSession`, shared with webhooks; this
module gives it the azure_sync settings. Transport failures become `Unreachable` with a
cause in plain words (`describe_failure`).
"""

from __future__ import annotations

import socket
import ssl
import urllib.parse
from collections.abc import Iterator
from typing import Any

import requests
from urllib3.exceptions import NameResolutionError

from azure_sync.errors import Unreachable
from connector.outbound import (  # noqa: F401 - is_public, is_private_literal: API too
    BlockedAddress,
    OutboundSession,
    is_private_literal,
    is_public,
)

PRIVATE_HINT = "azure_sync.allow_private_hosts"


class ReachSession(OutboundSession):
    """The session of Graph and the token endpoint (msal ignores its own timeout once
    handed a session): connector.outbound's rules with the azure_sync settings."""

    def __init__(self, timeout: float, ca_bundle: str = "", proxy: str = "",
                 no_proxy: str = "", allow_private_hosts: bool = False) -> None:
        super().__init__(timeout, ca_bundle, proxy, no_proxy, allow_private_hosts,
                         PRIVATE_HINT, "azure_sync")


# -- failures in plain words --------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it wraps (urllib3 keeps it in `reason` or args) and causes."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (getattr(current, "reason", None), current.__cause__, current.__context__,
                    *current.args):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def describe_failure(exc: BaseException, url: str) -> Unreachable:
    """An `Unreachable` saying in plain words why `url` gave no answer."""
    host = urllib.parse.urlsplit(url).hostname or url
    chain = list(_chain(exc))
    detail = (" <- ".join(type(e).__name__ for e in chain) + f": {chain[-1]}")[:2000]

    def has(*kinds: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kinds)), None)

    lasting = _lasting_cause(has, host)
    if lasting is not None:
        failure = Unreachable(lasting, detail)
        failure.lasting = True
        return failure
    if has(ConnectionResetError) is not None:
        return Unreachable(f"connection reset by {host}", detail)
    if has(requests.Timeout, TimeoutError, socket.timeout) is not None:
        return Unreachable(f"{host} did not answer in time", detail)
    return Unreachable(f"a network error talking to {host}", detail)


def _lasting_cause(has: Any, host: str) -> str | None:
    """The cause of a failure that will not pass within seconds, in plain words."""
    blocked = has(BlockedAddress)
    if blocked is not None:
        return f"the connector does not connect there: {str(blocked).split(': ', 1)[-1]}"
    if has(requests.exceptions.ProxyError) is not None:
        return f"the outbound proxy did not connect to {host}"
    if has(ssl.SSLCertVerificationError) is not None:
        return (f"the TLS certificate of {host} is not trusted (add its CA to the system's "
                "trust store or azure_sync.ca_bundle)")
    if has(requests.exceptions.SSLError, ssl.SSLError) is not None:
        return f"the TLS handshake with {host} failed"
    if has(socket.gaierror) is not None or has(NameResolutionError) is not None:
        return f"the name {host} does not resolve"
    if has(ConnectionRefusedError) is not None:
        return f"connection refused by {host}"
    return None


def is_lasting(failure: Unreachable) -> bool:
    """Whether retrying within the round is pointless (the next round tries again):
    refused, DNS, TLS, proxy, a blocked address. Timeouts, resets and dropped
    connections are often passing, and retried within the round's budget."""
    return failure.lasting
