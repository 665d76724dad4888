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
import msal.exceptions
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


# What Entra ID's sign-in refusals mean and what the admin does about them, by AADSTS
# code (learn.microsoft.com/entra/identity-platform/reference-error-codes). {app} and
# {directory} are filled in.
REFUSALS: dict[int, str] = {
    7000215: "the client secret is wrong. Enter the secret's Value (not its Secret ID), "
             "or create a new client secret for the app (Certificates & secrets) and "
             "register it again",
    7000222: "the client secret has expired. Create a new client secret for the app "
             "(Certificates & secrets) and register it again",
    7000218: "no client secret or certificate was sent. Register the app again with its "
             "secret or certificate",
    700016: "the directory {directory} has no application with client id {app}. Check "
            "the application (client) id and the directory (tenant) id, and that an "
            "admin of that directory consented to the app",
    90002: "Entra ID knows no directory {directory}. Check the directory (tenant) id, "
           "and that the authority host is the tenant's cloud",
    900023: "{directory} is not a directory (tenant) id or domain. Check the directory "
            "(tenant) id",
    7000112: "the application {app} is disabled in Entra ID. Enable it (Enterprise "
             "applications → Properties), or register another",
    700027: "Entra ID does not accept the certificate: upload its public certificate to "
            "the app (Certificates & secrets), or register the certificate the app has",
    700024: "the certificate sign-in is outside its valid time: check the clock of the "
            "machine the connector runs on",
    500011: "the tenant does not know the Microsoft Graph asked for. Check that the Graph "
            "base URL is the tenant's cloud",
    53003: "a Conditional Access policy blocks the app's sign-in. Exclude the app from "
           "it in Entra ID",
    90033: "a temporary failure of Entra ID's sign-in service; tried again within the "
           "round, then at the next round",
}
# Refusals that say "try again": retried within the round's budget as Graph's 503s are.
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
TRANSIENT_CODES = frozenset({90033})


def refusal(result: dict[str, Any], client_id: str, directory_id: str) -> TokenError:
    """msal's error dict as a TokenError: what it means and what to do, in plain words,
    with Entra's own description as its detail."""
    code = result.get("error") if isinstance(result.get("error"), str) else None
    description = str(result.get("error_description") or "").strip()
    codes = result.get("error_codes")
    number = next((c for c in codes if isinstance(c, int)), None) if isinstance(
        codes, list) else None
    meaning = REFUSALS.get(number) if number is not None else None
    said = f"AADSTS{number}" if number is not None else (code or "no reason given")
    if meaning is None:
        first = description.splitlines()[0] if description else ""
        # Entra's description ends with trace and correlation ids: for the detail.
        words = first.split(" Trace ID:", 1)[0] or "no detail"
        plain = f"Entra ID refused to sign in app {client_id} ({code or 'error'}): {words}"
    else:
        plain = (f"Entra ID refused to sign in app {client_id} ({said}): "
                 + meaning.format(app=client_id, directory=directory_id) + ".")
    transient = code in TRANSIENT_ERRORS or number in TRANSIENT_CODES
    return TokenError(plain, code, description or None, transient=transient)


def unavailable(exc: msal.exceptions.MsalServiceError, host: str) -> TokenError:
    """msal raises for a 5xx from the sign-in service (its discovery or its token
    endpoint): Entra ID's temporary failure, not the connector's."""
    return TokenError(f"Entra ID's sign-in service at {host} failed ({exc}); a temporary "
                      "failure: tried again within the round, then at the next round.",
                      transient=True)


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
        except msal.exceptions.MsalServiceError as exc:
            raise unavailable(exc, authority_host) from exc
        except (ValueError, OSError, RuntimeError) as exc:
            raise TokenError(f"Could not reach the token endpoint at {authority_host}: "
                             f"{type(exc).__name__}.") from exc
        if not isinstance(result, dict) or "access_token" not in result:
            raise refusal(result if isinstance(result, dict) else {}, client_id,
                          directory_id)
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
            except msal.exceptions.MsalServiceError as exc:
                raise unavailable(exc, host) from exc
            except (ValueError, OSError, RuntimeError) as exc:
                raise TokenError(f"Could not set up sign-in at {host}/{directory_id}: "
                                 f"{type(exc).__name__}: {exc}") from exc
            self._apps[key] = app
            return app
