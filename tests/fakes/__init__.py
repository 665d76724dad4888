"""Fakes of Microsoft Entra ID and Microsoft Graph: real HTTPS servers on 127.0.0.1.

The pieces (each module's docstring has the details):

- `tls.create_loopback_tls(dir)` -> `LoopbackTLS`: a throwaway CA and a certificate for
  127.0.0.1/localhost; `.session()` gives a `requests.Session` that trusts it
  (`trust_env=False`, because REQUESTS_CA_BUNDLE would override `verify`);
- `entra_token.FakeTokenEndpoint(tls)`: tenant discovery and the client-credentials token
  endpoint, for secrets and certificate assertions; `.clock` is the `FakeClock` every
  fake shares (tests advance it instead of sleeping);
- `graph.FakeGraph(tls, token_endpoint)`: users/groups delta and single-user reads over
  per-tenant `directory.Directory` objects, with fault knobs;
- `proxy.ConnectProxy()`: an outbound forward proxy on loopback that tunnels HTTPS with
  CONNECT and records each target in `.connects` (`with ConnectProxy() as proxy:`).

The connector refuses loopback hosts by default: settings that point it at the fakes set
`azure_sync.allow_private_hosts = true` (tests/azure_sync/harness.py does).

Fixtures (tests/fakes/fixtures.py): `fake_tls` (session scope), `fake_https_session`,
`fake_entra`, `fake_graph`, `fake_app` (a fresh tenant and app with a secret, a
`FakeApp`) and `fake_graph_caller` (bare GETs and `walk()` of a delta round as that app).

Test data goes in `fake_graph.directory(tenant_id)`: `add_user`, `seed_users(n)`,
`update_user`, `disable_user`/`enable_user`, `soft_delete_user`, `hard_delete_user`,
`restore_user`, `create_group`, `rename_group`, `delete_group`, `add_members`,
`remove_members` (properties by Graph's names: `givenName=...`). Faults:
`fake_graph.throttle/fail/hang/corrupt/expire_token_after/resync/deny`,
`fake_entra.fail_next/hang_next`; page shapes: `fake_graph.knobs`; time:
`fake_entra.clock.advance(days=...)`; observations: `fake_graph.log`, `.counters`,
`fake_entra.token_requests`.

As Graph documents, an incremental round sends every selected property that is set
unless the request carries `Prefer: return=minimal` (then only the changed ones);
`fake_graph.knobs.minimal_by_default = True` answers minimally regardless. Delta links
die after 7 days of the fake clock: advance it in steps, with a round per step.

A test registers an app and points real clients at the fakes like this::

    def test_sync(fake_entra, fake_graph, fake_https_session):
        fake_entra.add_app(TENANT, CLIENT, secret="s3cret")           # or certificate_pem=
        fake_graph.directory(TENANT).add_user("ada@contoso.example", accountEnabled=True)
        app = msal.ConfidentialClientApplication(
            CLIENT, client_credential="s3cret",
            authority=f"{fake_entra.url}/{TENANT}",    # authority host: https://127.0.0.1:port
            instance_discovery=False,                  # else msal asks login.microsoftonline.com
            http_client=fake_https_session)
        token = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
        fake_https_session.get(f"{fake_graph.url}/v1.0/users/delta",   # Graph base URL
                               headers={"Authorization": f"Bearer {token['access_token']}"})

`entra_token.generate_app_certificate()` makes an RSA certificate for the certificate
flow: register `cert.certificate_pem`, give msal `cert.msal_credential()`.

Mind msal's own behaviour against any token endpoint: it caches the discovery document
and tokens per app object (the cache is keyed on msal's wall clock, not the FakeClock:
after `fake_entra.clock.advance(...)` or `expire_all_tokens()`, drop the cached token
with `app.remove_tokens_for_client()`), it raises for a 5xx and then replays that failure
from its own throttle cache for Retry-After seconds (5 by default), and it replays an
HTTP 400 token error for 60 seconds.
"""
