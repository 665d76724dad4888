"""The fake Entra token endpoint, exercised through msal and plain requests."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.entra_token import AppCertificate, FakeTokenEndpoint, generate_app_certificate
from tests.fakes.fixtures import FakeApp, GraphCaller

GRAPH_SCOPE = ["https://graph.microsoft.com/.default"]
USER_SELECT = ("/v1.0/users/delta?$select=accountEnabled,userPrincipalName,mail,givenName,"
               "surname,displayName,userType,employeeId")


@pytest.fixture(scope="module")
def certificate() -> AppCertificate:
    return generate_app_certificate()


def msal_app(fake_entra: FakeTokenEndpoint, session: requests.Session, tenant_id: str,
             client_id: str, credential: Any) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id, client_credential=credential, authority=fake_entra.authority(tenant_id),
        instance_discovery=False, http_client=session)


def post_token(session: requests.Session, fake_entra: FakeTokenEndpoint, tenant_id: str,
               **form: str) -> requests.Response:
    form = {"grant_type": "client_credentials", "scope": GRAPH_SCOPE[0], **form}
    return session.post(f"{fake_entra.url}/{tenant_id}/oauth2/v2.0/token", data=form, timeout=5)


def signed_assertion(cert: AppCertificate, claims: dict[str, Any], alg: str = "PS256") -> str:
    """A client assertion built by hand, to get claims msal would never send."""
    certificate = x509.load_pem_x509_certificate(cert.certificate_pem.encode())
    thumbprint = b64(certificate.fingerprint(hashes.SHA256()))
    header = b64(json.dumps({"alg": alg, "typ": "JWT", "x5t#S256": thumbprint}).encode())
    payload = b64(json.dumps(claims).encode())
    key = serialization.load_pem_private_key(cert.private_key_pem.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(f"{header}.{payload}".encode(), padding.PSS(
        mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    return f"{header}.{payload}.{b64(signature)}"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- the token endpoint --------------------------------------------------------------------

def test_msal_gets_a_token_with_a_secret_and_then_hits_its_cache(
        fake_entra: FakeTokenEndpoint, fake_app: FakeApp,
        fake_https_session: requests.Session) -> None:
    app = msal_app(fake_entra, fake_https_session, fake_app.tenant_id, fake_app.client_id,
                   fake_app.client_secret)
    first = app.acquire_token_for_client(GRAPH_SCOPE)
    second = app.acquire_token_for_client(GRAPH_SCOPE)
    assert first["token_type"] == "Bearer" and first["expires_in"] == 3599
    assert first["token_source"] == "identity_provider"
    assert second["token_source"] == "cache"
    assert second["access_token"] == first["access_token"]
    assert (fake_entra.discovery_requests, fake_entra.token_requests) == (1, 1)
    method, path, form = fake_entra.requests[-1]
    assert (method, form["grant_type"], form["scope"]) == ("POST", "client_credentials",
                                                           GRAPH_SCOPE[0])
    assert form["client_secret"] == "<hidden>"


@pytest.mark.parametrize("sha1", [False, True], ids=["PS256 x5t#S256", "RS256 x5t"])
def test_msal_gets_a_token_with_a_certificate(
        fake_entra: FakeTokenEndpoint, fake_https_session: requests.Session,
        certificate: AppCertificate, sha1: bool) -> None:
    fake_entra.add_app("tenant-c", "client-c", certificate_pem=certificate.certificate_pem)
    credential: dict[str, str] = certificate.msal_credential()
    if sha1:  # a SHA-1 thumbprint makes msal fall back to RS256 and the x5t header
        cert = x509.load_pem_x509_certificate(certificate.certificate_pem.encode())
        credential = {"private_key": certificate.private_key_pem,
                      "thumbprint": cert.fingerprint(hashes.SHA1()).hex()}
    app = msal_app(fake_entra, fake_https_session, "tenant-c", "client-c", credential)
    assert app.acquire_token_for_client(GRAPH_SCOPE)["token_type"] == "Bearer"
    assert app.acquire_token_for_client(GRAPH_SCOPE)["token_source"] == "cache"


def test_an_unregistered_certificate_is_refused(
        fake_entra: FakeTokenEndpoint, fake_https_session: requests.Session,
        certificate: AppCertificate) -> None:
    fake_entra.add_app("tenant-c", "client-c", certificate_pem=certificate.certificate_pem)
    stranger = generate_app_certificate("someone-else")
    app = msal_app(fake_entra, fake_https_session, "tenant-c", "client-c",
                   stranger.msal_credential())
    result = app.acquire_token_for_client(GRAPH_SCOPE)
    assert result["error"] == "invalid_client" and result["error_codes"] == [700027]


@pytest.mark.parametrize(("claims", "code"), [
    ({"iss": "other-client"}, 700021),
    ({"aud": "https://login.example/tenant-c/oauth2/v2.0/token"}, 700212),
    ({"exp": time.time() - 3600}, 700024),
], ids=["issuer", "audience", "expired"])
def test_assertion_claims_are_checked(
        fake_entra: FakeTokenEndpoint, fake_https_session: requests.Session,
        certificate: AppCertificate, claims: dict[str, Any], code: int) -> None:
    fake_entra.add_app("tenant-c", "client-c", certificate_pem=certificate.certificate_pem)
    now = time.time()
    good = {"aud": f"{fake_entra.url}/tenant-c/oauth2/v2.0/token", "iss": "client-c",
            "sub": "client-c", "exp": now + 600, "iat": now, "jti": str(uuid.uuid4())}
    assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ok = post_token(fake_https_session, fake_entra, "tenant-c", client_id="client-c",
                    client_assertion_type=assertion_type,
                    client_assertion=signed_assertion(certificate, good))
    assert ok.status_code == 200
    bad = post_token(fake_https_session, fake_entra, "tenant-c", client_id="client-c",
                     client_assertion_type=assertion_type,
                     client_assertion=signed_assertion(certificate, {**good, **claims}))
    assert bad.status_code == 401
    assert bad.json()["error_codes"] == [code]
    tampered = signed_assertion(certificate, good).rsplit(".", 1)[0] + "." + b64(b"x" * 256)
    forged = post_token(fake_https_session, fake_entra, "tenant-c", client_id="client-c",
                        client_assertion_type=assertion_type, client_assertion=tampered)
    assert forged.json()["error_codes"] == [700027]


def test_a_wrong_secret_is_entras_401_invalid_client(
        fake_entra: FakeTokenEndpoint, fake_app: FakeApp,
        fake_https_session: requests.Session) -> None:
    response = post_token(fake_https_session, fake_entra, fake_app.tenant_id,
                          client_id=fake_app.client_id, client_secret="wrong")
    body = response.json()
    assert response.status_code == 401
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215: Invalid client secret")
    assert {"trace_id", "correlation_id", "timestamp", "error_uri"} <= body.keys()
    app = msal_app(fake_entra, fake_https_session, fake_app.tenant_id, fake_app.client_id,
                   "wrong")
    assert app.acquire_token_for_client(GRAPH_SCOPE)["error"] == "invalid_client"


@pytest.mark.parametrize(("form", "status", "error", "code"), [
    ({"client_id": "nobody", "client_secret": "x"}, 400, "unauthorized_client", 700016),
    ({"scope": "User.Read"}, 400, "invalid_scope", 1002012),
    ({"scope": "https://management.azure.com/.default"}, 400, "invalid_resource", 500011),
    ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ({"client_secret": ""}, 401, "invalid_client", 7000218),
])
def test_token_request_errors(fake_entra: FakeTokenEndpoint, fake_app: FakeApp,
                              fake_https_session: requests.Session, form: dict[str, str],
                              status: int, error: str, code: int) -> None:
    form = {"client_id": fake_app.client_id, "client_secret": fake_app.client_secret, **form}
    response = post_token(fake_https_session, fake_entra, fake_app.tenant_id, **form)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response.json()["error_codes"] == [code]


def test_an_unknown_tenant_fails_discovery_so_msal_raises(
        fake_entra: FakeTokenEndpoint, fake_https_session: requests.Session) -> None:
    url = f"{fake_entra.url}/no-such-tenant/v2.0/.well-known/openid-configuration"
    response = fake_https_session.get(url, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_tenant"
    assert response.json()["error_codes"] == [90002]
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        msal_app(fake_entra, fake_https_session, "no-such-tenant", "c", "s")


def test_tokens_expire_on_the_fake_clock_and_can_be_revoked(
        fake_entra: FakeTokenEndpoint, fake_graph_caller: GraphCaller) -> None:
    assert fake_graph_caller.get("/v1.0/users/delta").status_code == 200
    fake_entra.clock.advance(3598)
    assert fake_graph_caller.get("/v1.0/users/delta").status_code == 200
    fake_entra.clock.advance(2)
    expired = fake_graph_caller.get("/v1.0/users/delta")
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == "Lifetime validation failed, the token is expired."
    fake_entra.revoke_all_tokens()
    assert fake_graph_caller.get("/v1.0/users/delta").status_code == 401


def test_the_token_endpoint_answers_5xx_and_msal_raises_then_throttles_itself(
        fake_entra: FakeTokenEndpoint, fake_app: FakeApp,
        fake_https_session: requests.Session) -> None:
    fake_entra.fail_next(503, retry_after="1")
    raw = post_token(fake_https_session, fake_entra, fake_app.tenant_id,
                     client_id=fake_app.client_id, client_secret=fake_app.client_secret)
    assert (raw.status_code, raw.headers["Retry-After"]) == (503, "1")
    assert raw.json()["error"] == "temporarily_unavailable"
    fake_entra.fail_next(500)
    app = msal_app(fake_entra, fake_https_session, fake_app.tenant_id, fake_app.client_id,
                   fake_app.client_secret)
    for _ in range(2):
        with pytest.raises(msal.exceptions.MsalServiceError, match="HTTP Error: 500"):
            app.acquire_token_for_client(GRAPH_SCOPE)
    assert fake_entra.token_requests == 2  # msal served its second failure from its cache


def test_a_hanging_token_endpoint_trips_the_client_timeout(
        fake_entra: FakeTokenEndpoint, fake_app: FakeApp,
        fake_https_session: requests.Session) -> None:
    fake_entra.hang_next(seconds=30)
    with pytest.raises(requests.exceptions.ReadTimeout):
        fake_https_session.post(f"{fake_entra.authority(fake_app.tenant_id)}/oauth2/v2.0/token",
                                data={}, timeout=0.05)
    # The client may give up before the fake's handler thread has read the request.
    deadline = time.monotonic() + 10
    while fake_entra.token_requests == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_entra.token_requests == 1  # and stop() must not wait the 30 s out
