"""Where the connector is reached: the public addresses its pages and answers name.

`server.public_base_url` wins when it is set (behind a proxy the request's own host is
not what identity providers and admins use); otherwise a request's root, or for a
command with no request, the address `connector serve` binds.
"""

from __future__ import annotations

from connector.config import Settings

SCIM_PATH = "/scim/v2"
ADMIN_PATH = "/admin/"


def host_port(host: str, port: int) -> str:
    """`host:port` as a URL and gunicorn's bind write it: an IPv6 literal in brackets
    (`[::1]:8080`; `::1:8080` is no URL, and gunicorn read it as no port at all)."""
    bare = host.strip("[]")
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def public_base(settings: Settings, request_root: str | None = None) -> str:
    """The scheme, host and port the connector is reached at, without a trailing slash."""
    configured = settings.server.public_base_url.rstrip("/")
    if configured:
        return configured
    if request_root:
        return request_root.rstrip("/")
    return f"http://{host_port(settings.server.host, settings.server.port)}"


def scim_base_url(settings: Settings, request_root: str | None = None) -> str:
    """The SCIM base URL (RFC 7644 §3.13) to give identity providers."""
    return public_base(settings, request_root) + SCIM_PATH


def admin_url(settings: Settings, request_root: str | None = None) -> str:
    """The admin UI's start page."""
    return public_base(settings, request_root) + ADMIN_PATH
