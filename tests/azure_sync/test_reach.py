"""Reach and trust (issue 16, defect 8): rounds through an outbound proxy (the setting, or
HTTPS_PROXY / NO_PROXY), the OS trust store, and the address guard, against the fakes
on loopback and a real CONNECT proxy in front of them."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import requests

from azure_sync import rounds
from azure_sync.service import SyncService
from azure_sync.transport import ReachSession, describe_failure, is_public
from connector.config import ConfigError
from connector.db import make_sessionmaker
from tests.azure_sync.harness import Sync
from tests.fakes.entra_token import FakeTokenEndpoint
from tests.fakes.proxy import ConnectProxy
from tests.fakes.tls import LoopbackTLS

ROOT = Path(__file__).resolve().parents[2]


def service_with(sync: Sync, **settings: Any) -> SyncService:
    """The harness's service with some settings changed (a fresh token cache, too)."""
    changed = dataclasses.replace(sync.service.settings, **settings)
    return SyncService(changed, make_sessionmaker(sync.engine),
                       make_sessionmaker(sync.engine, writes=True), verify=sync.service.ca_bundle)


def run_with(sync: Sync, service: SyncService) -> rounds.RoundResult:
    return service.run(sync.tenant_id, "manual", rounds.RoundOptions(), sleep=sync.sleeps.append)


def host_port(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])



# -- proxy ----------------------------------------------------------------------------------


def test_a_round_goes_through_the_proxy_setting(sync: Sync, no_env_proxy: Any) -> None:
    sync.entra.seed_users(3)
    with ConnectProxy() as proxy:
        result = run_with(sync, service_with(sync, proxy=proxy.url))
        connects = proxy.connects
    assert result.status == "succeeded", result.error
    assert len(sync.users()) == 3
    # Both the token endpoint and Graph were reached through CONNECT tunnels.
    assert host_port(sync.app.authority_host) in connects
    assert host_port(sync.app.graph_base_url) in connects


def test_no_proxy_setting_sends_a_host_direct(sync: Sync, no_env_proxy: Any) -> None:
    sync.entra.seed_users(2)
    with ConnectProxy() as proxy:
        result = run_with(sync, service_with(sync, proxy=proxy.url, no_proxy="127.0.0.1"))
        assert proxy.connects == []
    assert result.status == "succeeded", result.error
    assert len(sync.users()) == 2


def test_https_proxy_and_no_proxy_from_the_environment_are_honoured(
        sync: Sync, no_env_proxy: pytest.MonkeyPatch) -> None:
    sync.entra.seed_users(2)
    with ConnectProxy() as proxy:
        no_env_proxy.setenv("HTTPS_PROXY", proxy.url)
        through = run_with(sync, service_with(sync))
        tunnelled = proxy.connects
        no_env_proxy.setenv("NO_PROXY", "127.0.0.1")
        sync.entra.seed_users(1, prefix="later")
        direct = run_with(sync, service_with(sync))
        assert proxy.connects == tunnelled  # nothing more went through the proxy
    assert through.status == direct.status == "succeeded"
    assert host_port(sync.app.authority_host) in tunnelled
    assert host_port(sync.app.graph_base_url) in tunnelled
    assert len(sync.users()) == 3


def test_a_proxy_that_cannot_be_reached_fails_the_round_in_plain_words(
        sync: Sync, no_env_proxy: Any) -> None:
    result = run_with(sync, service_with(sync, proxy=f"http://127.0.0.1:{closed_port()}"))
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("Entra ID could not be reached: the outbound proxy did "
                                   "not connect to 127.0.0.1.")
    assert "\n\nDetail: ProxyError" in result.error  # the raw cause, kept for the detail


@pytest.mark.parametrize("proxy", ["proxy.example:3128", "socks5://proxy.example:1080",
                                   "http://:3128", "http://proxy.example:port"])
def test_a_proxy_setting_that_is_not_a_url_fails_at_start(proxy: str) -> None:
    with pytest.raises(ConfigError, match=r"azure_sync\.proxy must be an http:// URL"):
        ReachSession(5, proxy=proxy)


# -- the address guard ----------------------------------------------------------------------


def test_a_round_never_connects_to_a_loopback_address_unless_allowed(
        sync: Sync, fake_entra: FakeTokenEndpoint, no_env_proxy: Any) -> None:
    before = len(fake_entra.requests)
    result = run_with(sync, service_with(sync, allow_private_hosts=False))
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith(
        "Entra ID could not be reached: the connector does not connect there: 127.0.0.1 is "
        "at 127.0.0.1, a private, loopback or link-local address")
    assert len(fake_entra.requests) == before  # closed before a byte was sent


def test_the_guard_judges_the_address_connected_to_not_the_name(
        fake_entra: FakeTokenEndpoint, fake_tls: LoopbackTLS, no_env_proxy: Any) -> None:
    # A name that resolves to loopback (as a rebinding DNS would answer) is caught on the
    # socket's peer; with private hosts allowed the same request is answered.
    url = fake_entra.url.replace("127.0.0.1", "localhost") + "/nobody/v2.0/.well-known/x"
    with ReachSession(5, str(fake_tls.ca_path)) as guarded, \
            pytest.raises(requests.ConnectionError) as caught:
        guarded.get(url)
    failure = describe_failure(caught.value, url)
    assert failure.cause.startswith("the connector does not connect there: localhost is at "
                                    "127.0.0.1")
    with ReachSession(5, str(fake_tls.ca_path), allow_private_hosts=True) as allowed:
        assert allowed.get(url).status_code in (400, 404)


def test_through_a_proxy_the_target_is_checked_before_connect(
        fake_entra: FakeTokenEndpoint, fake_tls: LoopbackTLS, no_env_proxy: Any) -> None:
    with ConnectProxy() as proxy, \
            ReachSession(5, str(fake_tls.ca_path), proxy=proxy.url) as session:
        with pytest.raises(requests.ConnectionError) as caught:
            session.get(fake_entra.url + "/x")
        assert proxy.connects == []  # the proxy (on loopback, the operator's) never asked
    assert "127.0.0.1 is a private, loopback or link-local address" in str(caught.value)


@pytest.mark.parametrize(("address", "public"), [
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("0.0.0.0", False), ("::1", False), ("fe80::1%eth0", False), ("fd00::1", False),
    ("::ffff:127.0.0.1", False), ("224.0.0.1", False),
    # IPv4 addresses carried in IPv6 ones that a translator delivers (NAT64, 6to4, the
    # deprecated IPv4-compatible form): judged by the IPv4 address they carry.
    ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::10.0.0.8", False),
    ("2002:a00:8::1", False), ("::192.168.1.1", False), ("::1", False),
    ("64:ff9b::14be:9744", True), ("2002:14be:9744::1", True),
    ("20.190.151.68", True), ("2603:1037:1:c8::8", True)])
def test_which_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


# -- failures in plain words ----------------------------------------------------------------


def test_a_closed_port_is_a_refused_connection_in_plain_words(
        fake_tls: LoopbackTLS) -> None:
    url = f"https://127.0.0.1:{closed_port()}/v1.0/users"
    with ReachSession(5, str(fake_tls.ca_path), allow_private_hosts=True) as session, \
            pytest.raises(requests.ConnectionError) as caught:
        session.get(url)
    failure = describe_failure(caught.value, url)
    assert failure.plain == "Entra ID could not be reached: connection refused by 127.0.0.1."
    assert failure.detail is not None and "ConnectionRefusedError" in failure.detail


def test_an_untrusted_certificate_is_said_so(fake_entra: FakeTokenEndpoint,
                                             no_env_proxy: Any) -> None:
    # The fakes' CA is in neither the system store nor a bundle here.
    url = fake_entra.url + "/x"
    with ReachSession(5, allow_private_hosts=True) as session, \
            pytest.raises(requests.exceptions.SSLError) as caught:
        session.get(url)
    assert describe_failure(caught.value, url).cause.startswith(
        "the TLS certificate of 127.0.0.1 is not trusted")


# -- the OS trust store ---------------------------------------------------------------------

CHILD = """
import json, sys
import requests
from azure_sync.tokens import Credential, TokenProvider
from azure_sync.transport import ReachSession

app = json.loads(sys.argv[1])
session = ReachSession(10, allow_private_hosts=True)  # no CA bundle: the OS store only
try:
    token = TokenProvider(session).token(app["authority"], app["directory"], app["client"],
                                         Credential(secret=app["secret"]), app["scope"])
    answer = session.get(app["graph"] + "/v1.0/users/delta",
                         headers={"Authorization": "Bearer " + token})
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc)[:300])
    sys.exit(3)
print(answer.status_code, len(answer.json()["value"]))
"""


def run_child(sync: Sync, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    app = {"authority": sync.app.authority_host, "directory": sync.app.tenant_id,
           "client": sync.app.client_id, "secret": sync.app.client_secret,
           "scope": "https://graph.microsoft.com/.default", "graph": sync.app.graph_base_url}
    env = {k: v for k, v in os.environ.items()
           if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
                        "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy", "NO_PROXY")}
    return subprocess.run([sys.executable, "-c", CHILD, json.dumps(app)], cwd=ROOT,
                          env={**env, **environ}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_os_trust_store_is_trusted_without_a_ca_bundle(
        sync: Sync, fake_tls: LoopbackTLS, tmp_path: Path) -> None:
    sync.entra.seed_users(2)
    empty_dir = tmp_path / "no-certs"
    empty_dir.mkdir()
    # The test CA installed where OpenSSL (and so truststore) reads the OS store from:
    # certifi does not have it, so a certifi-only client fails this.
    trusted = run_child(sync, {"SSL_CERT_FILE": str(fake_tls.ca_path),
                               "SSL_CERT_DIR": str(empty_dir)})
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert trusted.stdout.split() == ["200", "2"]
    # The control: an OS store without the test CA (even with REQUESTS_CA_BUNDLE naming
    # it: that variable is not how the connector is told whom to trust) is refused.
    system = "/etc/ssl/certs/ca-certificates.crt"
    untrusted = run_child(sync, {"SSL_CERT_FILE": system if os.path.exists(system)
                                 else str(tmp_path / "none.pem"),
                                 "SSL_CERT_DIR": str(empty_dir),
                                 "REQUESTS_CA_BUNDLE": str(fake_tls.ca_path)})
    assert untrusted.returncode == 3, untrusted.stdout + untrusted.stderr
    assert "could not be reached: the TLS certificate of 127.0.0.1 is not trusted" \
        in untrusted.stdout
