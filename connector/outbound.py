"""Outbound HTTP to addresses others choose: whom it trusts, which addresses it may reach.

Shared by Entra ID sync (azure_sync/transport.py: Graph and the token endpoint, at a
registration's URLs) and webhooks (connector/webhooks: at an endpoint's URL), both
through one `OutboundSession`. Both let an admin name the host the connector connects
to, so both must not be turned into a way into the hosting network:

- **Trust**: the operating system's trust store (through `truststore`), plus a CA
  bundle when given (`azure_sync.ca_bundle`, `webhooks.ca_bundle`). certifi is not used.
- **Proxy**: the `proxy` setting (minus the hosts of `no_proxy`); without it, the
  environment's HTTPS_PROXY / NO_PROXY. Nothing else is taken from the environment (a
  REQUESTS_CA_BUNDLE or a .netrc must not change whom we trust or what we send), so
  the session keeps `trust_env` off and picks proxies itself.
- **Addresses**: unless private hosts are allowed, a connection whose peer is not a
  global address (private, loopback, link-local, shared, reserved…) is closed before a
  byte is sent. The check is on the connected socket's peer, at every new connection,
  so a DNS answer that changes after a check (rebinding) cannot get around it. Through
  a proxy the peer is the proxy (the operator's choice); the target is then checked on
  the addresses its name resolves to here, and an IP literal always.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import math
import socket
import ssl
import urllib.parse
import urllib.request
from typing import Any

import requests
import truststore
from requests.adapters import HTTPAdapter
from requests.utils import should_bypass_proxies
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError
from urllib3.poolmanager import PoolManager

from connector.config import ConfigError


class BlockedAddress(NewConnectionError):
    """A connection to an address the connector must not reach (not retried)."""


# IPv6 prefixes that carry an IPv4 address in their last 32 bits, which a translator
# on the way (NAT64: RFC 6052; the deprecated IPv4-compatible form) may deliver to:
# `64:ff9b::10.0.0.8` reaches 10.0.0.8 wherever the hosting network runs NAT64.
_CARRY_IPV4 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))


def is_public(address: str) -> bool:
    """Whether an IP address is globally routable (not private, loopback, link-local,
    shared, reserved, multicast or unspecified); an IPv6 address that carries an IPv4
    one (mapped, NAT64, 6to4, IPv4-compatible) is judged by that IPv4 address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        ip = _carried_ipv4(ip) or ip
    return ip.is_global and not ip.is_multicast


def _carried_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None or ip.sixtofour is not None:
        return ip.ipv4_mapped or ip.sixtofour
    if any(ip in prefix for prefix in _CARRY_IPV4):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def is_private_literal(host: str) -> bool:
    """Whether a host is written as a non-public IP address, or is `localhost`."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return not is_public(name)
    except ValueError:
        return False


def trust_context(ca_bundle: str = "") -> ssl.SSLContext:
    """A TLS client context trusting the OS store, plus `ca_bundle` when given."""
    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


# -- the address guard, inside urllib3's connections ------------------------------------


class _Guard:
    """Checks the peer of every new connection; see the module docstring. `hint` names
    the setting that would allow the address."""

    hint: str = "allow_private_hosts"
    host: str
    port: int
    proxy: Any
    _tunnel_host: str | None
    _tunnel_port: int | None

    def _new_conn(self) -> socket.socket:
        if self.proxy is not None:  # connected to the operator's proxy: check the target
            _check_name(self, self._tunnel_host or self.host, self._tunnel_port or self.port)
            return super()._new_conn()  # type: ignore[misc]
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        peer = str(sock.getpeername()[0])
        if not is_public(peer):
            sock.close()
            raise BlockedAddress(self, f"{self.host} is at {peer}, a private, loopback or "  # type: ignore[arg-type]
                                 f"link-local address ({self.hint} is off)")
        return sock


def _check_name(conn: Any, host: str, port: int) -> None:
    hint = conn.hint
    if is_private_literal(host):
        raise BlockedAddress(conn, f"{host} is a private, loopback or link-local address "
                             f"({hint} is off)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return  # not resolvable here: only the proxy can (and it is the operator's)
    for info in infos:
        address = str(info[4][0])
        if not is_public(address):
            raise BlockedAddress(conn, f"{host} resolves to {address}, a private, loopback "
                                 f"or link-local address ({hint} is off)")


def guarded_pools(hint: str) -> dict[str, type]:
    """urllib3 pool classes whose connections pass the guard; refusals name `hint`."""
    http_conn = type("GuardedHTTPConnection", (_Guard, HTTPConnection), {"hint": hint})
    https_conn = type("GuardedHTTPSConnection", (_Guard, HTTPSConnection), {"hint": hint})
    return {"http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,),
                         {"ConnectionCls": http_conn}),
            "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,),
                          {"ConnectionCls": https_conn})}


class GuardedAdapter(HTTPAdapter):
    """A transport adapter verifying with `context` (never certifi) whose connections,
    direct or through a proxy, pass the address guard unless private hosts are allowed;
    a refusal names the setting `hint`."""

    def __init__(self, context: ssl.SSLContext, allow_private_hosts: bool,
                 hint: str = "allow_private_hosts") -> None:
        self.context = context
        self.allow_private_hosts = allow_private_hosts
        self.pools = guarded_pools(hint)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._guard(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        fresh = proxy not in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **kwargs)
        if fresh:
            self._guard(manager)
        return manager

    def _guard(self, manager: PoolManager) -> None:
        if not self.allow_private_hosts:
            manager.pool_classes_by_scheme = self.pools

    def build_connection_pool_key_attributes(
            self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> Any:
        host, given = super().build_connection_pool_key_attributes(request, True, cert)
        pool: dict[str, Any] = dict(given)
        pool.pop("ca_certs", None)
        pool.pop("ca_cert_dir", None)
        pool["ssl_context"] = self.context
        pool["cert_reqs"] = "CERT_REQUIRED"
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, False, cert)  # no CA file on the connection…
        conn.cert_reqs = "CERT_REQUIRED"  # …the context's trust, always verified


def check_proxy(proxy: str, name: str) -> str:
    """The proxy setting `name`, or a ConfigError at start (not a failure at 3 a.m.)."""
    if not proxy:
        return proxy
    try:
        parts = urllib.parse.urlsplit(proxy)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"{name} must be an http:// URL of the proxy, such as "
                          f"http://proxy.example:3128; got {proxy!r}")
    return proxy


class OutboundSession(requests.Session):
    """A session with the trust, proxy and address rules above, and a timeout on every
    request (requests has none by default). `section` names the settings (its
    ca_bundle and proxy) and `hint` the one allowing private addresses, in errors: a
    proxy that is not a URL or a CA bundle that cannot be read is a ConfigError."""

    def __init__(self, timeout: float | tuple[float, float], ca_bundle: str = "",
                 proxy: str = "", no_proxy: str = "", allow_private_hosts: bool = False,
                 hint: str = "allow_private_hosts", section: str = "outbound") -> None:
        super().__init__()
        self.timeout = timeout
        self.trust_env = False  # proxies are picked in request(); trust is the adapter's
        self.proxy = check_proxy(proxy, f"{section}.proxy")
        self.no_proxy = no_proxy
        # The environment's proxies, read once (scanning os.environ at each request cost
        # more than a webhook's signing): a process's environment does not change.
        self.env_proxies = {k: v for k, v in urllib.request.getproxies_environment().items()
                            if k != "no"}
        self.env_no_proxy = urllib.request.getproxies_environment().get("no")
        try:
            context = trust_context(ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{section}.ca_bundle: {ca_bundle!r} is not a readable PEM "
                              f"file of CA certificates ({exc})") from exc
        adapter = GuardedAdapter(context, allow_private_hosts, hint)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def proxies_for(self, url: str) -> dict[str, str]:
        """The proxy a request to `url` goes through ({} for a direct connection)."""
        if self.proxy:
            if self.no_proxy and should_bypass_proxies(url, no_proxy=self.no_proxy):
                return {}
            return {"http": self.proxy, "https": self.proxy}
        if not self.env_proxies or should_bypass_proxies(url, no_proxy=self.env_no_proxy):
            return {}
        return dict(self.env_proxies)  # HTTPS_PROXY, NO_PROXY

    def request(self, method: str | bytes, url: str | bytes,
                *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        text = url.decode() if isinstance(url, bytes) else url
        kwargs["proxies"] = self.proxies_for(text)
        return super().request(method, url, *args, **kwargs)


def retry_after_seconds(value: str | None, now: dt.datetime, cap: float) -> float | None:
    """Seconds to wait from a Retry-After header (RFC 9110 §10.2.3): a number of seconds
    (Graph sometimes sends fractions) or an HTTP date, at most `cap`. None when absent
    or unreadable (ignored, not trusted)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - now).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return min(max(seconds, 0.0), cap)
