"""A fake Microsoft identity platform (Entra ID) for msal's client-credentials flow.

It serves exactly what `msal.ConfidentialClientApplication` asks for when given
`authority=f"{fake.url}/{tenant_id}"` and `instance_discovery=False`:

- `GET /{tenant}/v2.0/.well-known/openid-configuration` (msal's tenant discovery, once
  per app object: msal caches it), 400 `invalid_tenant`/AADSTS90002 for an unknown tenant;
- `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials`, a
  `scope` of `{resource}/.default`, and a client secret or a client assertion (a JWT signed
  with a registered certificate's key, found by its `x5t#S256` or `x5t` header).

Answers and errors have Entra's shapes (`error`, `error_description` starting with the
AADSTS code, `error_codes`, `trace_id`, `correlation_id`, `timestamp`). Access tokens are
opaque random strings (real ones are JWTs, which clients must not read either); the fake
remembers each with its tenant, app, audience, roles and expiry on the shared
`FakeClock`, so `FakeGraph` can validate it and tests can expire it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.clock import FakeClock
from tests.fakes.faults import Fault, FaultPlan
from tests.fakes.server import LoopbackService, Request, Response
from tests.fakes.tls import LoopbackTLS

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
DEFAULT_ROLES = frozenset({"User.Read.All", "GroupMember.Read.All"})
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW = 300.0  # Entra tolerates five minutes on an assertion's exp/nbf


@dataclass
class RegisteredApp:
    """An app registration in one tenant; tests may flip `disabled` or edit `roles`."""

    tenant_id: str
    client_id: str
    secrets: list[str] = field(default_factory=list)
    certificates: list[x509.Certificate] = field(default_factory=list)
    roles: frozenset[str] = DEFAULT_ROLES
    disabled: bool = False


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    tenant_id: str
    client_id: str
    audience: str
    roles: frozenset[str]
    issued_at: float
    expires_at: float


class TokenRejected(Exception):
    """Why a bearer token is not good (any more); the message is Graph's wording."""


@dataclass(frozen=True)
class AppCertificate:
    """A self-signed RSA certificate and its key, as an app registration would hold."""

    private_key_pem: str
    certificate_pem: str

    def msal_credential(self) -> dict[str, str]:
        """The `client_credential` msal wants (it derives the SHA-256 thumbprint)."""
        return {"private_key": self.private_key_pem, "public_certificate": self.certificate_pem}


def generate_app_certificate(common_name: str = "connector-test-app") -> AppCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return AppCertificate(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()).decode(),
        cert.public_bytes(serialization.Encoding.PEM).decode())


class FakeTokenEndpoint(LoopbackService):
    """Entra's token endpoint for registered tenants and apps; see the module docstring.

    Knobs: `latency` (seconds per request), `token_lifetime` (expires_in, default 3599),
    `fail_next()`, `hang_next()`. Counters: `token_requests` (POSTs that reached the
    endpoint, whatever their outcome), `tokens_issued`, `discovery_requests`, `requests`
    (a log of (method, path, form fields without secrets)).
    """

    def __init__(self, tls: LoopbackTLS, *, clock: FakeClock | None = None,
                 graph_resource: str = GRAPH_RESOURCE) -> None:
        super().__init__(tls)
        self.clock = clock or FakeClock()
        self.graph_resource = graph_resource.rstrip("/")
        self.token_lifetime = 3599
        self.latency = 0.0
        self.faults = FaultPlan()
        self.counters: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._tenants: set[str] = set()
        self._apps: dict[tuple[str, str], RegisteredApp] = {}
        self._tokens: dict[str, IssuedToken] = {}
        self._lock = threading.Lock()

    # -- registrations ----------------------------------------------------------------

    def add_tenant(self, tenant_id: str) -> None:
        with self._lock:
            self._tenants.add(tenant_id.lower())

    def add_app(self, tenant_id: str, client_id: str, secret: str | None = None,
                certificate_pem: str | None = None,
                roles: frozenset[str] | set[str] = DEFAULT_ROLES) -> RegisteredApp:
        """Register an app (again, to add a credential) with the Graph roles it was granted."""
        with self._lock:
            self._tenants.add(tenant_id.lower())
            app = self._apps.setdefault((tenant_id.lower(), client_id.lower()),
                                        RegisteredApp(tenant_id, client_id))
            if secret is not None:
                app.secrets.append(secret)
            if certificate_pem is not None:
                app.certificates.append(x509.load_pem_x509_certificate(certificate_pem.encode()))
            app.roles = frozenset(roles)
            return app

    def authority(self, tenant_id: str) -> str:
        return f"{self.url}/{tenant_id}"

    # -- tokens, as the fake Graph sees them ------------------------------------------

    def validate(self, access_token: str, audience: str) -> IssuedToken:
        """The token's grant if it is live for `audience`, else TokenRejected."""
        with self._lock:
            issued = self._tokens.get(access_token)
        if issued is None:
            raise TokenRejected("Invalid JWT token. The token is not in JWS format.")
        if issued.audience not in (audience.rstrip("/"), GRAPH_APP_ID):
            raise TokenRejected("Access token validation failure. Invalid audience.")
        if issued.expires_at <= self.clock.now():
            raise TokenRejected("Lifetime validation failed, the token is expired.")
        return issued

    def expire_token(self, access_token: str) -> None:
        with self._lock:
            if issued := self._tokens.get(access_token):
                self._tokens[access_token] = _expired(issued, self.clock.now())

    def expire_all_tokens(self) -> None:
        """Make every issued token expired now, as if an hour had passed for them."""
        now = self.clock.now()
        with self._lock:
            self._tokens = {k: _expired(t, now) for k, t in self._tokens.items()}

    def revoke_all_tokens(self) -> None:
        """Forget every issued token: Graph then sees them as not even well formed."""
        with self._lock:
            self._tokens.clear()

    @property
    def issued_tokens(self) -> list[IssuedToken]:
        with self._lock:
            return list(self._tokens.values())

    # -- knobs ------------------------------------------------------------------------

    def fail_next(self, status: int = 503, count: int = 1, *, retry_after: str | None = None,
                  after: int = 0, path: str = "") -> Fault:
        """Answer the next `count` token requests (or requests under `path`) with `status`."""
        def answer(request: Request) -> Response:
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            error = "temporarily_unavailable" if status == 503 else "server_error"
            return _entra_error(status, error, 90033, "A transient error has occurred. Please "
                                "try again.", headers)
        return self.faults.add(Fault(answer, count, after, path, None if path else "POST"))

    def hang_next(self, count: int = 1, *, seconds: float = 30.0, after: int = 0,
                  path: str = "") -> Fault:
        """Leave the next token requests unanswered for `seconds` (stop() ends the wait)."""
        def answer(request: Request) -> Response:
            response = self._route(request)
            response.delay = seconds
            return response
        return self.faults.add(Fault(answer, count, after, path, None if path else "POST"))

    # -- HTTP -------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        form = dict(parse_qsl(request.body.decode(errors="replace"))) if request.body else {}
        with self._lock:
            self.requests.append((request.method, request.path, _loggable(form)))
            if request.path.endswith("/oauth2/v2.0/token"):
                self.counters["token_requests"] += 1
            elif request.path.endswith("/.well-known/openid-configuration"):
                self.counters["discovery_requests"] += 1
        fault = self.faults.take(request)
        response = fault.answer(request) if fault else self._route(request, form)
        if self.latency and not response.delay:
            response.delay = self.latency
        return response

    def _route(self, request: Request, form: dict[str, str] | None = None) -> Response:
        parts = request.path.strip("/").split("/")
        tenant = parts[0].lower() if parts else ""
        rest = "/".join(parts[1:])
        if request.method == "GET" and rest == "v2.0/.well-known/openid-configuration":
            return self._discovery(tenant)
        if request.method == "POST" and rest == "oauth2/v2.0/token":
            if form is None:
                form = dict(parse_qsl(request.body.decode(errors="replace")))
            return self._token(tenant, form)
        return Response.json(404, {"error": "not_found",
                                   "error_description": f"No route for {request.path}"})

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    @property
    def token_requests(self) -> int:
        return self.counters["token_requests"]

    @property
    def tokens_issued(self) -> int:
        return self.counters["tokens_issued"]

    @property
    def discovery_requests(self) -> int:
        return self.counters["discovery_requests"]

    def _discovery(self, tenant: str) -> Response:
        if tenant not in self._tenants:
            return _unknown_tenant(tenant)
        base = f"{self.url}/{tenant}"
        return Response.json(200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.graph_resource}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "msgraph_host": self.graph_resource.removeprefix("https://"),
        })

    def _token(self, tenant: str, form: dict[str, str]) -> Response:
        if tenant not in self._tenants:
            return _unknown_tenant(tenant)
        if form.get("grant_type") != "client_credentials":
            return _entra_error(400, "unsupported_grant_type", 70003,
                                "The app requested an unsupported grant type "
                                f"'{form.get('grant_type', '')}'.")
        client_id = form.get("client_id", "")
        app = self._apps.get((tenant, client_id.lower()))
        if app is None:
            return _entra_error(400, "unauthorized_client", 700016,
                                f"Application with identifier '{client_id}' was not found in "
                                f"the directory '{tenant}'.")
        if refused := self._authenticate(app, tenant, form):
            return refused
        if app.disabled:
            return _entra_error(400, "unauthorized_client", 7000112,
                                f"Application '{client_id}' is disabled.")
        resource = _resource_of(form.get("scope", ""))
        if resource is None:
            return _entra_error(400, "invalid_scope", 1002012,
                                f"The provided value for scope {form.get('scope', '')} is not "
                                "valid. Client credential flows must have a scope value with "
                                "/.default suffixed to the resource identifier.")
        if resource not in (self.graph_resource, GRAPH_APP_ID):
            return _entra_error(400, "invalid_resource", 500011,
                                f"The resource principal named {resource} was not found in "
                                f"the tenant named {tenant}.")
        return self._issue(app, resource)

    def _authenticate(self, app: RegisteredApp, tenant: str,
                      form: dict[str, str]) -> Response | None:
        if form.get("client_assertion"):
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                return _entra_error(400, "invalid_request", 50027,
                                    "Invalid client_assertion_type.")
            problem = _check_assertion(form["client_assertion"], app,
                                       f"{self.url}/{tenant}/oauth2", time.time())
            return _entra_error(401, "invalid_client", *problem) if problem else None
        if "client_secret" not in form:
            return _entra_error(401, "invalid_client", 7000218,
                                "The request body must contain the following parameter: "
                                "'client_assertion' or 'client_secret'.")
        if not any(secrets.compare_digest(form["client_secret"], s) for s in app.secrets):
            return _entra_error(401, "invalid_client", 7000215,
                                "Invalid client secret provided. Ensure the secret being sent "
                                "in the request is the client secret value, not the client "
                                f"secret ID, for a secret added to app '{app.client_id}'.")
        return None

    def _issue(self, app: RegisteredApp, resource: str) -> Response:
        now = self.clock.now()
        issued = IssuedToken(secrets.token_urlsafe(48), app.tenant_id.lower(), app.client_id,
                             resource, app.roles, now, now + self.token_lifetime)
        with self._lock:
            self._tokens[issued.access_token] = issued
        self._count("tokens_issued")
        return Response.json(200, {
            "token_type": "Bearer", "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime, "access_token": issued.access_token})


def _expired(issued: IssuedToken, now: float) -> IssuedToken:
    return IssuedToken(issued.access_token, issued.tenant_id, issued.client_id, issued.audience,
                       issued.roles, issued.issued_at, min(issued.expires_at, now))


def _resource_of(scope: str) -> str | None:
    scopes = scope.split()
    if len(scopes) != 1 or not scopes[0].endswith("/.default"):
        return None
    return scopes[0].removesuffix("/.default").rstrip("/")


def _loggable(form: dict[str, str]) -> dict[str, str]:
    hidden = {"client_secret", "client_assertion"}
    return {k: ("<hidden>" if k in hidden else v) for k, v in form.items()}


def _unknown_tenant(tenant: str) -> Response:
    return _entra_error(400, "invalid_tenant", 90002,
                        f"Tenant '{tenant}' not found. Check to make sure you have the correct "
                        "tenant ID and are signing into the correct cloud.")


def _entra_error(status: int, error: str, code: int, description: str,
                 headers: dict[str, str] | None = None) -> Response:
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return Response.json(status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace_id} "
                             f"Correlation ID: {correlation_id} Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }, headers)


# -- client assertions (RFC 7523 §3, with Entra's certificate thumbprint headers) ----

def _check_assertion(assertion: str, app: RegisteredApp, token_url_prefix: str,
                     now: float) -> tuple[int, str] | None:
    """None if the JWT is valid for this app, else (AADSTS code, description)."""
    try:
        header_b64, payload_b64, signature_b64 = assertion.split(".")
        header = json.loads(_b64decode(header_b64))
        claims = json.loads(_b64decode(payload_b64))
        signature = _b64decode(signature_b64)
    except (ValueError, binascii.Error):
        return 50027, "JWT token is invalid or malformed."
    cert = _certificate_for(header, app)
    if cert is None:
        return 700027, ("Client assertion contains an invalid signature. [Reason - The key "
                        f"was not found., Thumbprint of key used by client: "
                        f"'{header.get('x5t#S256') or header.get('x5t')}']")
    if not _signature_ok(header.get("alg"), cert, f"{header_b64}.{payload_b64}".encode(),
                         signature):
        return 700027, "Client assertion contains an invalid signature."
    if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
        return 700021, ("Client assertion application identifier doesn't match "
                        "'client_id' parameter.")
    if claims.get("aud") not in (f"{token_url_prefix}/v2.0/token", f"{token_url_prefix}/token"):
        # Entra's own code for this case is not documented; the message is what matters.
        return 700212, f"Client assertion audience claim does not match: {claims.get('aud')}."
    exp, nbf = claims.get("exp", 0), claims.get("nbf", claims.get("iat", 0))
    if not (nbf - CLOCK_SKEW <= now <= exp + CLOCK_SKEW):
        return 700024, "Client assertion is not within its valid time range."
    return None


def _certificate_for(header: dict[str, Any], app: RegisteredApp) -> x509.Certificate | None:
    for cert in app.certificates:
        # msal pads these base64url values, RFC 7515 §4.1.7 doesn't: compare unpadded.
        if _unpadded(header.get("x5t#S256")) == _b64encode(cert.fingerprint(hashes.SHA256())):
            return cert
        if _unpadded(header.get("x5t")) == _b64encode(cert.fingerprint(hashes.SHA1())):
            return cert
    return None


def _signature_ok(alg: Any, cert: x509.Certificate, signed: bytes, signature: bytes) -> bool:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    if alg == "PS256":
        scheme: padding.AsymmetricPadding = padding.PSS(
            mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
    elif alg == "RS256":
        scheme = padding.PKCS1v15()
    else:
        return False
    try:
        key.verify(signature, signed, scheme, hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unpadded(value: Any) -> str | None:
    return value.rstrip("=") if isinstance(value, str) else None
