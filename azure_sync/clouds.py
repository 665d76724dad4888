"""Where a registration may point: the Microsoft clouds, and who may choose another host.

The four presets are Microsoft's own endpoints (learn.microsoft.com/graph/deployments:
"App registration and token service root endpoints" and "Microsoft Graph and Graph
Explorer service root endpoints"). A tenant admin may pick among them; any other https
host (a proxy in front of Graph, a test stand-in) is a partner admin's choice, and never
a private, loopback or link-local address unless `azure_sync.allow_private_hosts` says
so. This module judges what an admin typed; `azure_sync.transport` checks the address
actually connected to, at every connection. Pure: no I/O.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from azure_sync.transport import is_private_literal
from connector.errors import InvalidSetting


@dataclass(frozen=True)
class Cloud:
    name: str
    authority_hosts: tuple[str, ...]
    graph_base_url: str


CLOUDS = {
    "global": Cloud("Global (most tenants)", ("https://login.microsoftonline.com",),
                    "https://graph.microsoft.com"),
    "usgov": Cloud("US Government L4 (GCC High)", ("https://login.microsoftonline.us",),
                   "https://graph.microsoft.us"),
    "usgov-dod": Cloud("US Government L5 (DoD)", ("https://login.microsoftonline.us",),
                       "https://dod-graph.microsoft.us"),
    "china": Cloud("China (operated by 21Vianet)",
                   ("https://login.chinacloudapi.cn", "https://login.partner.microsoftonline.cn"),
                   "https://microsoftgraph.chinacloudapi.cn"),
}
MICROSOFT_AUTHORITIES = frozenset(h for c in CLOUDS.values() for h in c.authority_hosts)
MICROSOFT_GRAPHS = frozenset(c.graph_base_url for c in CLOUDS.values())
# As the registration form labels them (people read these in the UI and the API alike).
LABELS = {"authority_host": "The sign-in (authority) host",
          "graph_base_url": "The Microsoft Graph base URL"}


def normalized(url: str) -> str:
    """An https URL as stored: no trailing slash, host in lower case, no default port."""
    parts = urllib.parse.urlsplit(url.strip())
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port not in (None, 443)
                                       else "")
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc.lower(),
                                    parts.path.rstrip("/"), "", ""))


def check_url(name: str, url: str, allow_private_hosts: bool) -> str:
    """An https host URL anyone may store (before who-may-choose-it): returns it
    normalized, or InvalidSetting."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host, _port = parts.hostname, parts.port
    except ValueError:
        host = None
    if parts.scheme.lower() != "https" or not host or parts.query or parts.fragment \
            or parts.username or parts.password:
        raise InvalidSetting(f"{LABELS.get(name, name)} must be an https:// URL of a host "
                             "(https://graph.microsoft.com).")
    if not allow_private_hosts and is_private_literal(host):
        raise InvalidSetting(f"{LABELS.get(name, name)} may not be a private, loopback or "
                             "link-local address.")
    return normalized(url)


def check_choice(name: str, url: str, partner: bool) -> None:
    """A tenant admin may choose only a Microsoft cloud's endpoint (InvalidSetting
    otherwise, naming the presets: a 400 in the API, a flash on the form); a partner admin
    any host `check_url` accepts."""
    allowed = MICROSOFT_AUTHORITIES if name == "authority_host" else MICROSOFT_GRAPHS
    if partner or normalized(url) in allowed:
        return
    raise InvalidSetting(f"{LABELS.get(name, name)} must be one of Microsoft's clouds "
                    f"({', '.join(sorted(allowed))}); other hosts are set by a partner "
                    "admin.")
