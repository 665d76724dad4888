"""The admin web UI's Entra ID sync pages (/admin/tenants/{id}/entra) on the Flask test
client, against the fake Entra ID and Graph (SQLite and PostgreSQL): registration,
status, run log, round detail, run now, preview, sync one user, the held round's
approval and rejection, refusals, failures, tenant isolation and CSRF."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select

from azure_sync import secrets
from connector.config import Settings, load_settings
from connector.db import make_sessionmaker
from connector.models import EntraRegistration, SyncRun, SyncState, Tenant, User
from tests.azure_sync.harness import request_taker
from tests.conftest import ScimClient, make_tenant
from tests.fakes.entra_token import generate_app_certificate
from tests.fakes.fixtures import FakeApp
from tests.fakes.graph import FakeGraph
from tests.web.conftest import WebSession, audit_actions, scim_user, signed_in
from tests.web.test_pages import text


@pytest.fixture
def settings(database_url: str, fake_tls: Any, tmp_path: Path) -> Settings:
    """The `app` fixture's settings, with the poller trusting the fakes (as `sync_app`)."""
    return load_settings(
        environ={"CONNECTOR_CONFIG": str(tmp_path / "none.toml")},
        overrides={"database": {"url": database_url}, "logging": {"access_log": False},
                   "azure_sync": {"encryption_key": secrets.new_key(),
                                  "ca_bundle": str(fake_tls.ca_path),
                                  "allow_private_hosts": True,  # the fakes' loopback
                                  "graph_scope": "https://graph.microsoft.com/.default"}})


@pytest.fixture
def web(app: Flask, engine: Engine, settings: Settings) -> Iterator[WebSession]:
    """Signed in, with a worker taking the app's "Run now" requests (server.schedulers
    is "worker", the default)."""
    with request_taker(settings, engine):
        yield signed_in(app, engine, "partner@example.com")


def entra(tenant_id: str, path: str = "") -> str:
    return f"/admin/tenants/{tenant_id}/entra{path}"


def register(web: WebSession, tenant_id: str, app: FakeApp, **extra: Any) -> Any:
    """Post the registration form as an admin fills it in."""
    return web.post(entra(tenant_id, "/registration"), {
        "directory_id": app.tenant_id, "client_id": app.client_id,
        "client_secret": app.client_secret, "certificate_pem": "",
        "authority_host": app.authority_host, "graph_base_url": app.graph_base_url,
        "interval_minutes": "10", "threshold_count": "500", "threshold_percent": "20",
        **extra})


def latest_run(engine: Engine, tenant_id: str) -> SyncRun | None:
    with make_sessionmaker(engine)() as s:
        return s.scalar(select(SyncRun).where(SyncRun.tenant_id == tenant_id)
                        .order_by(SyncRun.id.desc()).limit(1))


def run_now(web: WebSession, engine: Engine, tenant_id: str, seconds: float = 20) -> SyncRun:
    """Press "Run now" and wait until the round has finished and let go of its lease."""
    before = latest_run(engine, tenant_id)
    response = web.post(entra(tenant_id, "/run"))
    assert response.location == entra(tenant_id, "/runs?started=1"), text(web.follow(response))
    assert "the worker starts it in the background within a few seconds" in \
        text(web.follow(response))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = latest_run(engine, tenant_id)
        with make_sessionmaker(engine)() as s:
            state = s.get(SyncState, tenant_id)
            free = state is not None and state.lease_owner is None
        if run and (before is None or run.id > before.id) and run.status != "running" and free:
            return run
        time.sleep(0.03)
    raise AssertionError("the round did not finish")


def user_count(engine: Engine, tenant_id: str, active: bool | None = None) -> int:
    with make_sessionmaker(engine)() as s:
        where = [User.tenant_id == tenant_id, User.removed_at.is_(None)]
        if active is not None:
            where.append(User.active.is_(active))
        return len(s.scalars(select(User.id).where(*where)).all())


def registration_of(engine: Engine, tenant_id: str) -> EntraRegistration | None:
    with make_sessionmaker(engine)() as s:
        return s.get(EntraRegistration, tenant_id)


def well_formed(html: str) -> None:
    assert html.count("<h1") == 1 and '<main id="main"' in html
    assert "<script>" not in html and " style=" not in html  # CSP: no inline code


def flash_of(html: str) -> str:
    found = re.search(r'<div class="flashes".*?</div>\s*</div>', html, re.DOTALL)
    return text(found.group(0)) if found else ""


# -- registration, a round, the log ------------------------------------------------------------


def test_register_run_and_see_the_round_and_the_users(
        web: WebSession, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Entra-fed")
    fake_graph.directory(fake_app.tenant_id).seed_users(25)
    response = web.get(entra(tenant_id))
    html = response.get_data(as_text=True)
    well_formed(html)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert 'aria-current="page">Entra ID sync</a>' in html
    assert "Set up Entra ID sync" in html and "not both" in text(html)
    form = web.page(entra(tenant_id, "/registration"))
    well_formed(form)
    assert 'value="https://login.microsoftonline.com"' in form  # the defaults are shown
    assert 'value="https://graph.microsoft.com"' in form
    assert "https://graph.microsoft.us" in form and "GCC High" in form  # sovereign clouds
    assert 'type="password"' in form

    response = register(web, tenant_id, fake_app)
    assert response.location == entra(tenant_id)
    html = web.follow(response)
    assert "Entra ID sync is set up" in flash_of(html)
    assert "No round has run yet" in text(html)
    assert "A client secret is stored." in text(web.page(entra(tenant_id, "/registration")))
    settings = web.page(f"/admin/tenants/{tenant_id}/settings")
    assert "fed by Entra ID sync" in text(settings) and entra(tenant_id) in settings

    run = run_now(web, engine, tenant_id)
    assert run.status == "succeeded" and run.counts["created"] == 25
    log = web.page(entra(tenant_id, "/runs"))
    well_formed(log)
    assert f"Round {run.id}" in log and "succeeded" in log and "25 created" in text(log)
    detail = web.page(entra(tenant_id, f"/runs/{run.id}"))
    well_formed(detail)
    assert "Users created 25" in text(detail) and "Staged" not in detail
    status = text(web.page(entra(tenant_id)))
    assert f"Round {run.id} succeeded" in status and "Failures in a row 0" in status
    assert "25 users" in text(web.page(f"/admin/tenants/{tenant_id}/users"))
    for path in ("", "/registration", "/runs", f"/runs/{run.id}", "/remove"):
        assert fake_app.client_secret not in web.page(entra(tenant_id, path)), path
    assert {"entra.registration", "entra.run_requested"} <= set(audit_actions(engine))


def test_the_registration_keeps_its_secret_is_validated_and_can_be_removed(
        web: WebSession, engine: Engine, fake_app: FakeApp) -> None:
    tenant_id, _ = make_tenant(engine, "Validate")
    bad = {"interval_minutes": ("0", "between 1 and 1440"),
           "threshold_count": ("many", "must be a whole number"),
           "authority_host": ("http://insecure.example", "must be an https:// URL"),
           "client_secret": ("", "needs a client secret or a certificate")}
    for field, (value, said) in bad.items():
        html = web.follow(register(web, tenant_id, fake_app, **{field: value}))
        assert said in text(html) and 'role="alert"' in html, field
    assert registration_of(engine, tenant_id) is None

    register(web, tenant_id, fake_app)
    sealed = registration_of(engine, tenant_id).secret_encrypted  # type: ignore[union-attr]
    html = web.follow(register(web, tenant_id, fake_app, client_secret="",
                               interval_minutes="15"))
    assert "The app registration is saved." in flash_of(html)
    kept = registration_of(engine, tenant_id)
    assert kept.secret_encrypted == sealed and kept.interval_minutes == 15  # type: ignore[union-attr]

    cert = generate_app_certificate()
    pem = (cert.private_key_pem + cert.certificate_pem).replace("\n", "\r\n")  # a textarea's
    html = web.follow(register(web, tenant_id, fake_app, client_secret="", certificate_pem=pem))
    assert "The certificate was replaced." in flash_of(html)
    thumbprint = registration_of(engine, tenant_id).certificate_thumbprint  # type: ignore[union-attr]
    assert thumbprint and thumbprint in html and "client secret (stored" not in html
    assert cert.private_key_pem.splitlines()[1] not in web.page(entra(tenant_id, "/registration"))

    confirm = web.page(entra(tenant_id, "/remove"))
    well_formed(confirm)
    assert "Remove the app registration?" in confirm
    html = web.follow(web.post(entra(tenant_id, "/remove")))
    assert "The app registration is removed" in flash_of(html)
    assert registration_of(engine, tenant_id) is None
    with make_sessionmaker(engine)() as s:
        assert s.get(Tenant, tenant_id).entra_sync is False  # type: ignore[union-attr]
    assert web.get(entra(tenant_id, "/remove")).status_code == 404
    assert audit_actions(engine)[-1] == "entra.registration_removed"


def test_a_refused_registration_keeps_what_was_typed_and_says_every_error(
        web: WebSession, engine: Engine, fake_app: FakeApp) -> None:
    tenant_id, _ = make_tenant(engine, "Typos")
    response = register(web, tenant_id, fake_app, directory_id="contoso tenant",
                        client_id="", interval_minutes="0", threshold_count="many",
                        authority_host="http://insecure.example", scope_domains="contoso.com")
    assert response.status_code == 303
    html = unescape(web.page(response.location))
    assert "Nothing was saved: 5 fields need a change" in flash_of(html)
    for field, said in {
            "directory_id": "The Directory (tenant) ID must be the value Entra shows",
            "client_id": "The Application (client) ID must be the value Entra shows",
            "interval_minutes": "Minutes between rounds must be between 1 and 1440",
            "threshold_count": "The deletion threshold in users must be a whole number",
            "authority_host": "The sign-in (authority) host must be an https:// URL"}.items():
        assert re.search(rf'id="{field}-error"[^>]*>{re.escape(said)}', html), field
    assert "client_id must" not in html and "directory_id must" not in html
    assert 'value="contoso tenant"' in html and 'value="many"' in html
    assert 'value="http://insecure.example"' in html and ">contoso.com</textarea>" in html
    assert fake_app.client_secret not in html  # a secret is never kept
    assert registration_of(engine, tenant_id) is None
    reload = web.page(response.location)  # said once; the reload shows the saved form
    assert "field-error" not in reload and 'value="contoso tenant"' not in reload


def test_a_tenant_fed_by_scim_is_refused_clearly(web: WebSession, engine: Engine,
                                                 scim: ScimClient, fake_app: FakeApp) -> None:
    scim_user(scim, "Ruth", "Novak")
    status = text(web.page(entra(scim.tenant_id)))
    assert "This tenant is fed by SCIM, so Entra ID sync cannot be set up here." in status
    form = web.page(entra(scim.tenant_id, "/registration"))
    assert "refused" in text(form) and "<fieldset disabled" in form
    html = web.follow(register(web, scim.tenant_id, fake_app))
    said = flash_of(html)
    assert "1 users provisioned over SCIM" in said and "not both" in said
    assert registration_of(engine, scim.tenant_id) is None
    assert "entra.registration" not in audit_actions(engine)


# -- the held round ----------------------------------------------------------------------------


def test_a_held_round_is_shown_everywhere_then_approved_or_rejected(
        web: WebSession, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Held")
    directory = fake_graph.directory(fake_app.tenant_id)
    ids = [directory.add_user(f"u{i}@contoso.example") for i in range(12)]
    register(web, tenant_id, fake_app, threshold_count="3")
    run_now(web, engine, tenant_id)
    for user_id in ids[:4]:
        directory.disable_user(user_id)
    held = run_now(web, engine, tenant_id)
    assert held.status == "awaiting_approval"
    base = f"/admin/tenants/{tenant_id}"
    for page in ("users", "groups", "settings", "audit", "entra", "entra/runs"):
        html = web.page(f"{base}/{page}")
        assert 'id="held-banner"' in html and f"Review round {held.id}" in html, page
    detail = web.page(entra(tenant_id, f"/runs/{held.id}"))
    assert "4 staged changes" in text(detail) and "awaiting approval" in detail
    for user_id in ids[:4]:
        assert user_id in detail
    assert "u0@contoso.example" in detail and "Disable (disabled in Entra ID)" in detail
    refused = web.follow(web.post(entra(tenant_id, "/run")))
    assert f"Round {held.id} awaits approval" in flash_of(refused)
    assert user_count(engine, tenant_id, active=False) == 0

    confirm = web.page(entra(tenant_id, f"/runs/{held.id}/approve"))
    well_formed(confirm)
    assert f"Approve round {held.id}?" in confirm
    response = web.post(entra(tenant_id, f"/runs/{held.id}/approve"))
    assert response.location == entra(tenant_id, f"/runs/{held.id}")
    html = web.follow(response)
    assert "approved and applied: 4 disabled" in flash_of(html)
    assert user_count(engine, tenant_id, active=False) == 4
    assert 'id="held-banner"' not in web.page(f"{base}/users")
    again = web.follow(web.post(entra(tenant_id, f"/runs/{held.id}/approve")))
    assert "not awaiting approval" in flash_of(again)
    assert web.get(entra(tenant_id, f"/runs/{held.id}/reject")).status_code == 409

    for user_id in ids[4:8]:
        directory.disable_user(user_id)
    second = run_now(web, engine, tenant_id)
    assert second.status == "awaiting_approval"
    assert "Reject round" in web.page(entra(tenant_id, f"/runs/{second.id}/reject"))
    html = web.follow(web.post(entra(tenant_id, f"/runs/{second.id}/reject")))
    assert "rejected: its 4 disables and deletions were dropped" in flash_of(html)
    assert user_count(engine, tenant_id, active=False) == 4
    assert latest_run(engine, tenant_id).status == "rejected"  # type: ignore[union-attr]
    actions = audit_actions(engine)
    assert actions.index("entra.round_approved") < actions.index("entra.round_rejected")


# -- preview, one user, failures ---------------------------------------------------------------


def test_preview_changes_nothing_and_one_user_is_synced_at_once(
        web: WebSession, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Preview")
    directory = fake_graph.directory(fake_app.tenant_id)
    ann = directory.add_user("ann@contoso.example")
    directory.seed_users(5)
    register(web, tenant_id, fake_app)
    response = web.post(entra(tenant_id, "/preview"))
    html = web.follow(response)
    well_formed(html)
    assert "Nothing was applied." in text(html) and "a full round" in text(html)
    assert "Users created 6" in text(html)
    assert user_count(engine, tenant_id) == 0 and latest_run(engine, tenant_id) is None
    again = web.follow(web.get(response.location))  # a reload runs nothing again
    assert "Use “Preview” again" in flash_of(again) and "Users created 6" not in text(again)
    assert audit_actions(engine).count("entra.preview") == 1

    html = web.follow(web.post(entra(tenant_id, "/sync-user"), {"user": "ann@contoso.example"}))
    assert "ann@contoso.example synced from Entra ID: 1 created." in flash_of(html)
    directory.disable_user(ann)
    html = web.follow(web.post(entra(tenant_id, "/sync-user"), {"user": ann}))
    assert "1 disabled" in flash_of(html)  # applied at once, not held
    assert user_count(engine, tenant_id, active=False) == 1
    html = web.follow(web.post(entra(tenant_id, "/sync-user"), {"user": "nobody@x.example"}))
    assert "Entra ID has no user 'nobody@x.example'" in flash_of(html)
    assert 'value="nobody@x.example"' in html  # kept as typed, to correct it
    html = web.follow(web.post(entra(tenant_id, "/sync-user"), {"user": " "}))
    assert "userPrincipalName" in flash_of(html)
    assert audit_actions(engine)[-3:] == ["entra.preview", "entra.user_synced",
                                          "entra.user_synced"]


def test_failures_of_entra_and_graph_say_what_to_fix(
        web: WebSession, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Failing")
    fake_graph.directory(fake_app.tenant_id).seed_users(3)
    register(web, tenant_id, fake_app, client_secret="not-the-secret")
    html = web.follow(web.post(entra(tenant_id, "/preview")))
    said = flash_of(html)
    assert "Entra ID did not sign the app in." in said and "client secret" in said
    assert 'role="alert"' in html

    register(web, tenant_id, fake_app)  # the right secret
    fake_graph.deny(fake_app.client_id)
    html = web.follow(web.post(entra(tenant_id, "/sync-user"), {"user": "x@contoso.example"}))
    assert "Microsoft Graph refused access." in flash_of(html)
    assert "GroupMember.Read.All" in flash_of(html)
    failed = run_now(web, engine, tenant_id)
    assert failed.status == "failed"
    assert "User.Read.All" in text(web.page(entra(tenant_id, "/runs")))

    with make_sessionmaker(engine)() as s:  # as after five failed rounds in a row
        state = s.get(SyncState, tenant_id)
        state.failures = 5  # type: ignore[union-attr]
        state.quarantined_until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)  # type: ignore[union-attr]
        s.commit()
    for path in (f"/admin/tenants/{tenant_id}/users", entra(tenant_id)):
        html = web.page(path)
        assert 'id="quarantine-banner"' in html
        assert "runs once a day until one succeeds" in text(html)

    web.post(f"/admin/tenants/{tenant_id}/settings", {"provisioning_paused": "true"})
    html = web.follow(web.post(entra(tenant_id, "/run")))
    assert "Provisioning is paused" in flash_of(html)


# -- who may do what ---------------------------------------------------------------------------


def test_a_tenant_admin_never_reaches_another_tenants_sync(
        app: Flask, web: WebSession, engine: Engine, fake_app: FakeApp,
        fake_graph: FakeGraph) -> None:
    mine, _ = make_tenant(engine, "Mine")
    theirs, _ = make_tenant(engine, "Theirs")
    fake_graph.directory(fake_app.tenant_id).seed_users(2)
    register(web, theirs, fake_app)
    run = run_now(web, engine, theirs)
    ta = signed_in(app, engine, "ta@example.com", "tenant", mine)
    assert "Set up Entra ID sync" in ta.page(entra(mine))
    for path in ("", "/registration", "/runs", f"/runs/{run.id}", f"/runs/{run.id}/approve",
                 "/remove"):
        response = ta.get(entra(theirs, path))
        assert response.status_code == 404, path
        assert "Theirs" not in response.get_data(as_text=True)
    assert ta.get(entra(mine, f"/runs/{run.id}")).status_code == 404  # not its round
    for path in ("/registration", "/run", "/preview", "/sync-user", "/remove",
                 f"/runs/{run.id}/approve", f"/runs/{run.id}/reject"):
        assert ta.post(entra(theirs, path), {"user": "x", "directory_id": "d",
                                             "client_id": "c"}).status_code == 404, path
    assert registration_of(engine, theirs) is not None
    assert latest_run(engine, theirs).id == run.id  # type: ignore[union-attr]


def test_forms_without_the_csrf_token_are_refused(web: WebSession, engine: Engine,
                                                  fake_app: FakeApp) -> None:
    tenant_id, _ = make_tenant(engine, "Forged")
    for path in ("/registration", "/run", "/preview", "/remove", "/runs/1/approve"):
        for token in (None, "forged"):
            data = {"directory_id": fake_app.tenant_id, "client_id": fake_app.client_id,
                    "client_secret": "s"}
            if token:
                data["csrf_token"] = token
            response = web.post(entra(tenant_id, path), data, csrf=False)
            assert response.status_code == 403, path
            assert "CSRF" in response.get_data(as_text=True)
    assert registration_of(engine, tenant_id) is None
    assert not any(a.startswith("entra.") for a in audit_actions(engine))


def test_the_registration_form_sets_the_scope(
        web: WebSession, engine: Engine, fake_app: FakeApp) -> None:
    tenant_id, _ = make_tenant(engine, "Scoped")
    group = "0b6c1c5e-3f0a-4c1e-9d55-2f1e8a7b9c01"
    response = register(web, tenant_id, fake_app, scope_groups=f" {group}\n",
                        scope_group_mode="transitive", scope_domains="contoso.com, fabrikam.com")
    assert response.location == entra(tenant_id), flash_of(web.follow(response))
    found = registration_of(engine, tenant_id)
    assert found is not None and found.scope_groups == [group]
    assert (found.scope_group_mode, found.scope_domains) == (
        "transitive", ["contoso.com", "fabrikam.com"])
    form = web.page(entra(tenant_id, "/registration"))
    well_formed(form)
    assert group in form and 'value="transitive"\n               checked' in form
    html = web.follow(register(web, tenant_id, fake_app, client_secret="",
                               scope_domains="contoso.com"))
    assert "the next round is a full round" in flash_of(html)
    refused = web.follow(register(web, tenant_id, fake_app, scope_groups="Sales"))
    assert "object ids" in text(refused)


def page_text(response: Any) -> str:
    return text(response.get_data(as_text=True))


def test_restart_provisioning_asks_first_then_runs_a_full_round(
        web: WebSession, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Restart me")
    fake_graph.directory(fake_app.tenant_id).seed_users(5)
    register(web, tenant_id, fake_app, soft_delete="remove", matching_attribute="mail")
    with make_sessionmaker(engine)() as s:
        saved = s.get(EntraRegistration, tenant_id)
        assert saved is not None
        assert (saved.soft_delete, saved.matching_attribute) == ("remove", "mail")
    form = page_text(web.get(entra(tenant_id, "/registration")))
    assert "Match existing accounts by" in form
    first = run_now(web, engine, tenant_id)
    assert first.kind == "full"
    status = web.get(entra(tenant_id))
    assert "Restart provisioning…" in page_text(status)
    confirm = web.get(entra(tenant_id, "/restart"))
    assert confirm.status_code == 200 and "full round" in page_text(confirm)
    response = web.post(entra(tenant_id, "/restart"))
    assert response.status_code == 303 and response.location == entra(tenant_id, "/runs?started=1")
    assert "Provisioning restarted" in text(web.follow(response))
    deadline = time.monotonic() + 20
    run = latest_run(engine, tenant_id)
    while time.monotonic() < deadline and (run is None or run.id == first.id
                                           or run.status == "running"):
        time.sleep(0.03)
        run = latest_run(engine, tenant_id)
    assert run is not None and (run.kind, run.trigger, run.status) == (
        "full", "restart", "succeeded"), run
    assert "entra.restarted" in audit_actions(engine)


def test_kept_items_are_listed_with_their_reason(
        web: WebSession, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Kept")
    directory = fake_graph.directory(fake_app.tenant_id)
    directory.add_user("x@contoso.example")
    register(web, tenant_id, fake_app)
    run_now(web, engine, tenant_id)
    with directory.lock:
        twin = directory.add_user("tmp@contoso.example")
        directory.update_user(twin, userPrincipalName="X@contoso.example")
    run = run_now(web, engine, tenant_id)
    assert run.counts.get("kept") == 1
    page = page_text(web.get(entra(tenant_id)))
    assert "Kept for later (1)" in page and twin in page and "name_taken" in page
    assert "X@contoso.example" in page


def test_the_run_page_names_every_count_a_round_reports() -> None:
    """The counts a round really writes get their words on the run page (a swap's
    renames come back from the round's end as retried_ring_renamed; retries and the
    seconds waited for them), not their raw keys."""
    from azure_sync.pages import COUNT_LABELS, count_rows

    rows = dict(count_rows({"retried_ring_renamed": 2, "retries": 3,
                            "retry_wait_seconds": 7}))
    assert rows == {COUNT_LABELS["retried_ring_renamed"]: 2, COUNT_LABELS["retries"]: 3,
                    COUNT_LABELS["retry_wait_seconds"]: 7}
    assert rows[COUNT_LABELS["retried_ring_renamed"]] == 2
    assert "swapped names" in COUNT_LABELS["retried_ring_renamed"]


def test_a_run_graphs_resync_replaced_is_shown_as_replaced_not_failed(
        web: WebSession, engine: Engine, fake_app: FakeApp, fake_graph: FakeGraph) -> None:
    tenant_id, _ = make_tenant(engine, "Entra-fed")
    fake_graph.directory(fake_app.tenant_id).seed_users(3)
    register(web, tenant_id, fake_app)
    first = run_now(web, engine, tenant_id)
    fake_graph.resync(410, "syncStateNotFound")
    full = run_now(web, engine, tenant_id)
    assert (full.status, full.trigger) == ("succeeded", "resync")
    replaced = full.id - 1
    assert replaced > first.id
    log = web.page(entra(tenant_id, "/runs"))
    well_formed(log)
    row = re.search(rf"<tr>(?:(?!</tr>).)*/runs/{replaced}\".*?</tr>", log, re.S)
    assert row and "replaced by a resync" in row.group(0) and "failed" not in row.group(0)
    detail = text(web.page(entra(tenant_id, f"/runs/{replaced}")))
    assert "replaced by a resync" in detail and "Error" not in detail
    assert "Note Graph says the delta state is gone (410 syncStateNotFound)" in detail
    assert f"Run {full.id} replaced this one." in detail
    assert "Failures in a row 0" in text(web.page(entra(tenant_id)))
