"""App-only tokens for Microsoft Graph: msal's client-credentials flow, wrapped.

One `msal.ConfidentialClientApplication` per (authority, client id, credential) lives
for the process, so its token cache hits and a round asks the token endpoint once an
hour, not once a page. msal returns `{"error": ...}` dicts for refusals and raises for
transport failures; both become `TokenError`. Its constructor fetches the authority's
OpenID configuration over the network, so apps are built on first use, never at
import or app-factory time.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any

import msal
import requests

from azure_sync.errors import TokenError
from azure_sync.transport import describe_failure

MICROSOFT_HOSTS = ("login.microsoftonline.com", "login.microsoftonline.us",
                   "login.partner.microsoftonline.cn", "login.chinacloudapi.cn")


@dataclass(frozen=True)
class Credential:
    """A client secret, or a certificate (PEM private key + its SHA-1 thumbprint)."""

    secret: str | None = None
    private_key_pem: str | None = None
    thumbprint: str | None = None

    def for_msal(self) -> Any:
        if self.secret is not None:
            return self.secret
        pem = self.private_key_pem or ""
        key = _pem_block(pem, "PRIVATE KEY")
        certificate = _pem_block(pem, "CERTIFICATE")
        if certificate:  # msal then signs with PS256 and the SHA-256 thumbprint
            return {"private_key": key, "public_certificate": certificate}
        return {"private_key": key, "thumbprint": self.thumbprint}

    def fingerprint(self) -> str:
        """Identifies the credential in the app cache without keeping it as a key."""
        material = self.secret or f"{self.thumbprint}:{self.private_key_pem}"
        return hashlib.sha256(material.encode()).hexdigest()


def _pem_block(pem: str, kind: str) -> str | None:
    """The first PEM block whose label ends with `kind` (any private key type)."""
    lines = pem.strip().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("-----BEGIN ") and line.rstrip("-").endswith(kind):
            for j in range(i, len(lines)):
                if lines[j].startswith("-----END "):
                    return "\n".join(lines[i:j + 1]) + "\n"
    return None


class TokenProvider:
    """Graph access tokens per app registration, cached by msal for the process."""

    def __init__(self, http: requests.Session) -> None:
        self.http = http
        self._apps: dict[tuple[str, str, str, str], msal.ConfidentialClientApplication] = {}
        self._lock = threading.Lock()

    def token(self, authority_host: str, directory_id: str, client_id: str,
              credential: Credential, scope: str) -> str:
        app = self._app(authority_host, directory_id, client_id, credential)
        try:
            result = app.acquire_token_for_client(scopes=[scope])
        except requests.RequestException as exc:
            raise describe_failure(exc, authority_host) from exc
        except (ValueError, OSError, RuntimeError) as exc:
            raise TokenError(f"Could not reach the token endpoint at {authority_host}: "
                             f"{type(exc).__name__}.") from exc
        if not isinstance(result, dict) or "access_token" not in result:
            code = result.get("error") if isinstance(result, dict) else None
            detail = (result.get("error_description") or "") if isinstance(result, dict) else ""
            raise TokenError(f"Entra ID refused a token for client {client_id}: {code}: "
                             f"{detail.splitlines()[0] if detail else 'no detail'}", code)
        return str(result["access_token"])

    def forget(self, authority_host: str, directory_id: str, client_id: str,
               credential: Credential) -> None:
        """Drop the cached app (and its tokens): after Graph said 401 for its token."""
        with self._lock:
            self._apps.pop(self._key(authority_host, directory_id, client_id, credential), None)

    def _key(self, authority_host: str, directory_id: str, client_id: str,
             credential: Credential) -> tuple[str, str, str, str]:
        return (authority_host.rstrip("/").lower(), directory_id.lower(), client_id,
                credential.fingerprint())

    def _app(self, authority_host: str, directory_id: str, client_id: str,
             credential: Credential) -> msal.ConfidentialClientApplication:
        key = self._key(authority_host, directory_id, client_id, credential)
        with self._lock:
            app = self._apps.get(key)
            if app is not None:
                return app
            host = authority_host.rstrip("/")
            is_microsoft = any(host.endswith("//" + h) for h in MICROSOFT_HOSTS)
            try:
                app = msal.ConfidentialClientApplication(
                    client_id, client_credential=credential.for_msal(),
                    authority=f"{host}/{directory_id}", http_client=self.http,
                    # Instance discovery asks Microsoft's endpoint about the authority;
                    # for sovereign and test authorities it must not.
                    instance_discovery=None if is_microsoft else False)
            except requests.RequestException as exc:
                raise describe_failure(exc, host) from exc
            except (ValueError, OSError, RuntimeError) as exc:
                raise TokenError(f"Could not set up sign-in at {host}/{directory_id}: "
                                 f"{type(exc).__name__}: {exc}") from exc
            self._apps[key] = app
            return app
