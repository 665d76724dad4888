"""The admin web UI on the Flask test client: signing in, every page, every action and
its audit line, refusals, tenant isolation and the security headers (SQLite and
PostgreSQL)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from html import unescape
from typing import Any

import openpyxl
import pytest
from flask import Flask
from sqlalchemy import Engine, select

from billing.exports import XLSX_MIMETYPE
from connector import admins, browse
from connector.db import make_sessionmaker
from connector.models import Tenant
from tests.support.clients import PASSWORD, ScimClient, make_tenant
from tests.web.conftest import (
    USER,
    WebSession,
    audit_actions,
    entra_user,
    make_web_admin,
    scim_user,
    seed_directory,
    signed_in,
)


def text(html: str) -> str:
    """The page's visible text, roughly: tags dropped, whitespace folded."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def tenant_of(engine: Engine, tenant_id: str) -> Tenant:
    with make_sessionmaker(engine)() as s:
        return s.get(Tenant, tenant_id)  # type: ignore[return-value]


def user_state(engine: Engine, tenant_id: str, user_id: str) -> browse.UserSummary:
    with make_sessionmaker(engine)() as s:
        return browse.get_user(s, tenant_id, user_id, include_removed=True)


# -- signing in and out ---------------------------------------------------------------------


def test_root_leads_to_the_admin_ui_which_asks_to_sign_in(app: Flask, engine: Engine) -> None:
    client = app.test_client()
    assert client.get("/").location == "/admin/"
    response = client.get("/admin/tenants")
    assert response.status_code == 302
    assert response.location == "/admin/sign-in?next=/admin/tenants"
    page = client.get("/admin/sign-in")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<label for="email">' in html and '<label for="password">' in html


def test_sign_in_then_out(app: Flask, engine: Engine) -> None:
    make_web_admin(engine, "p@example.com")
    web = WebSession(app.test_client())
    response = web.sign_in("p@example.com", next="/admin/account")
    assert response.status_code == 303 and response.location == "/admin/account"
    assert "p@example.com" in web.page("/admin/account")
    response = web.post("/admin/sign-out")
    assert response.status_code == 303 and response.location == "/admin/sign-in"
    assert web.get("/admin/account").status_code == 302
    assert audit_actions(engine) == ["login", "logout"]


def test_sign_in_goes_nowhere_outside_the_admin_ui(app: Flask, engine: Engine) -> None:
    make_web_admin(engine, "p@example.com")
    web = WebSession(app.test_client())
    response = web.sign_in("p@example.com", next="//evil.example/admin/")
    assert response.location == "/admin/"


def test_sign_in_refuses_a_next_with_control_characters(app: Flask, engine: Engine) -> None:
    """A CR LF in `next` would write a header into the redirect: it answered 500 after
    signing in (issue 17, item 22); now it goes to the start page."""
    make_web_admin(engine, "p@example.com")
    for how in ("query", "form"):
        web = WebSession(app.test_client())
        web.get("/admin/sign-in")
        smuggled = "/admin/%0D%0ASet-Cookie:x=1" if how == "query" else "/admin/\r\nSet-Cookie:x=1"
        path = f"/admin/sign-in?next={smuggled}" if how == "query" else "/admin/sign-in"
        form = {"email": "p@example.com", "password": PASSWORD}
        if how == "form":
            form["next"] = smuggled
        response = web.post(path, form)
        assert response.status_code == 303, how
        assert response.location == "/admin/" and "Set-Cookie:x" not in str(response.headers)


def test_wrong_password_is_said_and_then_throttled(app: Flask, engine: Engine) -> None:
    make_web_admin(engine, "p@example.com")
    web = WebSession(app.test_client())
    for _ in range(5):
        response = web.sign_in("p@example.com", "not the password")
        assert response.status_code == 422
        assert "E-mail or password is not right." in text(response.get_data(as_text=True))
    response = web.sign_in("p@example.com", PASSWORD)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    said = text(response.get_data(as_text=True))
    assert "Too many failed sign-ins" in said
    # Said in minutes (the lock-out is 15 of them), not "Wait 898 seconds".
    assert re.search(r"Wait 1[45] minutes, then try again", said), said
    assert audit_actions(engine).count("login.failed") == 5


def test_forms_without_the_csrf_token_are_refused(app: Flask, engine: Engine,
                                                  scim: ScimClient) -> None:
    make_web_admin(engine, "p@example.com")
    web = WebSession(app.test_client())
    web.get("/admin/sign-in")
    response = web.post("/admin/sign-in", {"email": "p@example.com", "password": PASSWORD},
                        csrf=False)
    assert response.status_code == 403 and "CSRF" in response.get_data(as_text=True)
    assert web.sign_in("p@example.com").status_code == 303
    settings = f"/admin/tenants/{scim.tenant_id}/settings"
    for token in (None, "forged"):
        data = {"provisioning_paused": "true"}
        if token:
            data["csrf_token"] = token
        response = web.post(settings, data, csrf=False)
        assert response.status_code == 403
        assert "Traceback" not in response.get_data(as_text=True)
    assert tenant_of(engine, scim.tenant_id).provisioning_paused is False
    assert web.post(settings, {"provisioning_paused": "true"}).status_code == 303
    assert tenant_of(engine, scim.tenant_id).provisioning_paused is True


def test_a_one_time_password_must_be_replaced_first(app: Flask, engine: Engine) -> None:
    with make_sessionmaker(engine)() as s:
        _, one_time = admins.create_admin(s, "new@example.com", "partner", None,
                                          dt.datetime.now(dt.UTC))
        s.commit()
    web = WebSession(app.test_client())
    response = web.sign_in("new@example.com", one_time)
    assert response.location == "/admin/account/password"
    assert web.get("/admin/tenants").location == "/admin/account/password"
    assert "one-time password" in web.page("/admin/account/password")
    new = "a long new password"
    response = web.post("/admin/account/password", {
        "current_password": one_time, "new_password": new, "new_password_again": "other"})
    assert "not the same" in text(web.follow(response))
    response = web.post("/admin/account/password", {
        "current_password": one_time, "new_password": "short", "new_password_again": "short"})
    assert "at least 12 characters" in text(web.follow(response))
    # Every wrong field at once, each next to its field; no password is kept in the form.
    # (The one-time password was used up by signing in: the form does not ask for it.)
    response = web.post("/admin/account/password", {
        "new_password": "short", "new_password_again": "shorter"})
    html = web.follow(response)
    for field, said in (("new_password", "A password needs at least 12 characters."),
                        ("new_password_again", "The two new passwords are not the same")):
        assert re.search(rf'id="{field}-error"[^>]*>{re.escape(said)}', html), field
    assert "shorter" not in html and 'value="short"' not in html
    response = web.post("/admin/account/password", {
        "current_password": one_time, "new_password": new, "new_password_again": new})
    assert response.location == "/admin/"
    assert "Tenants" in web.page("/admin/tenants")  # still signed in, and let through
    assert audit_actions(engine)[-1] == "password.changed"
    other = WebSession(app.test_client())
    assert other.sign_in("new@example.com", new).location == "/admin/"


# -- every page ----------------------------------------------------------------------------


def test_every_page_renders_with_the_security_headers(partner_web: WebSession,
                                                      scim: ScimClient) -> None:
    seed = seed_directory(scim, users=6)
    base = f"/admin/tenants/{scim.tenant_id}"
    user_id = next(iter(seed.users.values()))
    pages = ["/admin/tenants", "/admin/audit", "/admin/account", "/admin/account/password",
             f"{base}/users", f"{base}/users/{user_id}", f"{base}/users/{seed.deleted}",
             f"{base}/deleted-users", f"{base}/deleted-users/{seed.disabled}/remove",
             f"{base}/groups", f"{base}/groups/{seed.groups['Sales']}", f"{base}/modules",
             f"{base}/settings", f"{base}/audit"]
    for path in pages:
        response = partner_web.get(path)
        assert response.status_code == 200, path
        html = response.get_data(as_text=True)
        assert html.count("<h1") == 1 and '<main id="main"' in html, path
        assert "<script>" not in html and " style=" not in html, path  # CSP: no inline code
        headers = response.headers
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cache-Control"] == "no-store"
    static = partner_web.get("/admin/static/admin.css")
    assert static.status_code == 200 and "no-store" not in static.headers.get(
        "Cache-Control", "")
    static.close()


def test_unknown_pages_and_bugs_answer_html_without_internals(
        partner_web: WebSession, scim: ScimClient, monkeypatch: pytest.MonkeyPatch) -> None:
    response = partner_web.get("/admin/no-such-page")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert response.headers["X-Frame-Options"] == "DENY"

    def broken(*args: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(browse, "module_usage", broken)
    response = partner_web.get(f"/admin/tenants/{scim.tenant_id}/modules")
    html = response.get_data(as_text=True)
    assert response.status_code == 500 and "Something went wrong" in html
    assert "secret internals" not in html and "Traceback" not in html
    assert response.headers["X-Request-Id"] in html


def test_nul_characters_are_refused_before_reaching_the_database(
        partner_web: WebSession, scim: ScimClient) -> None:
    base = f"/admin/tenants/{scim.tenant_id}"
    for path in ("/admin/tenants/%00/users", f"{base}/users/%00", f"{base}/users?q=a%00",
                 f"{base}/groups?q=%00"):
        response = partner_web.get(path)
        assert response.status_code == 400, path
        assert "NUL" in response.get_data(as_text=True)
    response = partner_web.post(f"{base}/modules", {"name": "Bo\x00ost"})
    assert response.status_code == 400


def test_the_tenants_page_searches_filters_and_pages_a_fleet(partner_web: WebSession,
                                                             scim: ScimClient,
                                                             engine: Engine) -> None:
    for name in ("Ärzte Nord", "Globex", "Nordwind Ärztehaus"):
        make_tenant(engine, name)
    html = partner_web.page("/admin/tenants")
    assert "4 tenants" in text(html) and 'role="search"' in html
    assert "Page 1 of" not in text(html)
    html = partner_web.page("/admin/tenants?per_page=2&page=2")
    assert "Page 2 of 2" in text(html) and 'rel="prev"' in html and 'rel="next"' not in html
    assert "Nordwind Ärztehaus" in html and "Globex" in html and "Ärzte Nord" not in html
    html = partner_web.page("/admin/tenants?q=arzte")
    assert "2 tenants match" in text(html) and "Globex" not in html
    html = partner_web.page("/admin/tenants?q=nobody")
    assert "No tenants match the search." in text(html)
    html = partner_web.page("/admin/tenants?state=closed")
    assert "0 tenants match" in text(html) and 'value="closed" selected' in html
    html = partner_web.page("/admin/tenants?per_page=2&page=9")
    assert "There is no page 9: the last page of tenants is 2." in text(html)
    response = partner_web.get("/admin/tenants?state=maybe")
    assert response.status_code == 400
    assert "state must be one of open, closed" in text(response.get_data(as_text=True))


def test_the_partner_audit_log_names_the_tenants_of_its_lines(partner_web: WebSession,
                                                               scim: ScimClient) -> None:
    partner_web.get("/admin/tenants")
    partner_web.post("/admin/tenants", {"name": "Initech Ärztehaus"})
    html = partner_web.page("/admin/audit")
    assert re.search(r'/audit">Initech Ärztehaus</a>', html), html


# -- users ------------------------------------------------------------------------------------


def test_users_search_filters_sorting_and_paging(partner_web: WebSession,
                                                 scim: ScimClient) -> None:
    seed_directory(scim, users=24)
    base = f"/admin/tenants/{scim.tenant_id}/users"
    html = partner_web.page(base)
    assert "25 users" in text(html)  # 24 + the one the IdP disabled (the deleted one is gone)
    assert 'aria-sort="ascending"' in html
    assert "Page 1 of 2" not in text(html)
    html = partner_web.page(base + "?per_page=10&page=2")
    assert "Page 2 of 3" in text(html) and 'rel="prev"' in html and 'rel="next"' in html
    assert "Amira De Vries" not in html
    html = partner_web.page(base + "?q=amira.d")
    assert "1 user matches" in text(html) and "amira.devries@northwind.example" in html
    html = partner_web.page(base + "?status=inactive")
    assert "1 user matches" in text(html) and "vera.disabled@northwind.example" in html
    html = partner_web.page(base + "?guest=true")
    assert "4 users match" in text(html)
    html = partner_web.page(base + "?module=Hybrid&source=scim")
    assert "6 users match" in text(html)
    html = partner_web.page(base + "?sort=-userName")
    assert 'aria-sort="descending"' in html
    names = re.findall(r'>([a-z.]+@northwind\.example)</span></a>', html)
    assert names == sorted(names, reverse=True) and names
    response = partner_web.get(base + "?status=maybe")
    assert response.status_code == 400
    assert "status must be one of active, inactive" in text(response.get_data(as_text=True))


def test_user_detail_shows_modules_groups_flags_and_timeline(partner_web: WebSession,
                                                             scim: ScimClient) -> None:
    seed = seed_directory(scim, users=4)
    user_id = seed.users["amira.devries@northwind.example"]
    page = text(partner_web.page(f"/admin/tenants/{scim.tenant_id}/users/{user_id}"))
    assert "Amira de Vries" in page and "Sales" in page and "Everyone" in page
    assert "Effective: Hybrid" in page
    assert "Created" in page and "scim" in page
    deleted = text(partner_web.page(f"/admin/tenants/{scim.tenant_id}/users/{seed.deleted}"))
    assert "deleted this user" in deleted and "Set inactive" not in deleted


def test_a_status_change_the_rules_forbid_is_refused_with_the_way_out(
        partner_web: WebSession, scim: ScimClient, engine: Engine) -> None:
    user = scim_user(scim, "Ruth", "Novak")
    path = f"/admin/tenants/{scim.tenant_id}/users/{user['id']}"
    response = partner_web.post(path + "/status", {"status": "inactive"})
    assert response.location == path
    html = partner_web.follow(response)
    assert "pause provisioning first" in text(html)
    assert f'/admin/tenants/{scim.tenant_id}/settings#provisioning_paused' in html
    assert 'role="alert"' in html
    assert user_state(engine, scim.tenant_id, user["id"]).active is True
    assert "user.status" not in audit_actions(engine)

    partner_web.post(f"/admin/tenants/{scim.tenant_id}/settings",
                     {"provisioning_paused": "true"})
    html = partner_web.follow(partner_web.post(path + "/status", {"status": "inactive"}))
    assert "is now inactive" in text(html)
    assert user_state(engine, scim.tenant_id, user["id"]).active is False
    assert audit_actions(engine)[-2:] == ["tenant.settings", "user.status"]
    assert "Status active inactive" in text(html)  # the timeline's newest line


def test_an_entra_user_refusal_points_at_the_status_source(
        partner_web: WebSession, scim: ScimClient, engine: Engine) -> None:
    user_id = entra_user(engine, scim.tenant_id, "synced@northwind.example")
    path = f"/admin/tenants/{scim.tenant_id}/users/{user_id}"
    partner_web.post(f"/admin/tenants/{scim.tenant_id}/settings",
                     {"provisioning_paused": "true"})
    html = partner_web.follow(partner_web.post(path + "/status", {"status": "inactive"}))
    assert "set the status source to 'connector'" in text(html)
    assert "settings#status_source" in html
    partner_web.post(f"/admin/tenants/{scim.tenant_id}/settings",
                     {"status_source": "connector"})
    html = partner_web.follow(partner_web.post(path + "/status", {"status": "inactive"}))
    assert "is now inactive" in text(html)


def test_flags_and_own_modules(partner_web: WebSession, scim: ScimClient,
                               engine: Engine) -> None:
    user = scim_user(scim, "Ivo", "Horvat")
    path = f"/admin/tenants/{scim.tenant_id}/users/{user['id']}"
    html = partner_web.follow(partner_web.post(path + "/flags", {"guest": "on"}))
    assert "flags saved" in text(html)
    html = partner_web.follow(partner_web.post(path + "/modules",
                                               {"modules": ["Engage", "Unify"]}))
    assert "Own modules saved" in text(html) and "Effective: Engage, Unify" in text(html)
    state = user_state(engine, scim.tenant_id, user["id"])
    assert state.guest is True and state.admin is False and state.modules == ["Engage", "Unify"]
    html = partner_web.follow(partner_web.post(path + "/modules", {"modules": ["Nope"]}))
    assert "Not changed." in text(html) and "not in this tenant's catalogue" in text(html)
    assert audit_actions(engine)[-2:] == ["user.changed", "user.changed"]


def test_restore_and_permanent_removal_from_the_deleted_users_list(
        partner_web: WebSession, scim: ScimClient, engine: Engine) -> None:
    seed = seed_directory(scim, users=2)
    base = f"/admin/tenants/{scim.tenant_id}/deleted-users"
    html = text(partner_web.page(base))
    assert "2 deleted users" in html
    assert "Disabled in the identity provider" in html
    assert "Deleted in the identity provider" in html
    # Provisioning runs: said up front, with one click that pauses and comes back here.
    assert "Pause provisioning to edit" in html and "Pause provisioning to restore" in html
    assert f"/{seed.disabled}/restore" not in partner_web.page(base)
    name = user_state(engine, scim.tenant_id, seed.disabled).user_name
    refused = text(partner_web.follow(partner_web.post(f"{base}/{seed.disabled}/restore")))
    assert f"{name} was not restored" in refused and "pause provisioning first" in refused
    refused = text(partner_web.follow(partner_web.post(f"{base}/{seed.disabled}/remove")))
    assert f"{name} was not removed" in refused
    paused = partner_web.post(f"/admin/tenants/{scim.tenant_id}/settings",
                              {"provisioning_paused": "true", "next": base})
    assert paused.location == base
    html = text(partner_web.follow(paused))
    assert "Provisioning is paused" in html and "Pause provisioning to edit" not in html
    assert f"/{seed.disabled}/restore" in partner_web.page(base)
    html = text(partner_web.follow(partner_web.post(f"{base}/{seed.disabled}/restore")))
    assert "is restored and active" in html and "1 deleted user" in html
    assert user_state(engine, scim.tenant_id, seed.disabled).active is True

    confirm = text(partner_web.page(f"{base}/{seed.deleted}/remove"))
    assert "can no longer be restored" in confirm
    html = text(partner_web.follow(partner_web.post(f"{base}/{seed.deleted}/remove")))
    assert "removed permanently" in html and "The deleted-users list is empty." in html
    assert partner_web.get(f"{base}/{seed.deleted}/remove").status_code == 404
    assert audit_actions(engine)[-2:] == ["user.restored", "user.purged"]


# -- groups and modules ------------------------------------------------------------------------


def test_group_modules_reach_the_members(partner_web: WebSession, scim: ScimClient,
                                         engine: Engine) -> None:
    seed = seed_directory(scim, users=4)
    base = f"/admin/tenants/{scim.tenant_id}"
    listing = text(partner_web.page(f"{base}/groups"))
    assert "2 groups" in listing and "Sales" in listing
    path = f"{base}/groups/{seed.groups['Sales']}"
    html = partner_web.page(path)
    assert "amira.devries@northwind.example" in html
    html = text(partner_web.follow(partner_web.post(path + "/modules", {"modules": "Engage"})))
    assert "Modules of Sales saved" in html
    member = seed.users["amira.devries@northwind.example"]
    assert user_state(engine, scim.tenant_id, member).modules == ["Engage", "Hybrid"]
    assert audit_actions(engine)[-1] == "group.modules"


def test_the_module_catalogue_grows(partner_web: WebSession, scim: ScimClient,
                                    engine: Engine) -> None:
    path = f"/admin/tenants/{scim.tenant_id}/modules"
    assert "Hybrid" in partner_web.page(path)
    html = text(partner_web.follow(partner_web.post(path, {"name": "Boost"})))
    assert "Module “Boost” added" in html
    html = text(partner_web.follow(partner_web.post(path, {"name": "boost"})))
    assert "already in the catalogue" in html
    assert audit_actions(engine)[-1] == "module.added"


# -- settings, tokens, tenants -------------------------------------------------------------------


def test_settings_change_and_the_paused_banner(partner_web: WebSession, scim: ScimClient,
                                               engine: Engine) -> None:
    base = f"/admin/tenants/{scim.tenant_id}"
    html = partner_web.page(f"{base}/settings")
    assert "Manage active status from the identity provider" in html
    assert "Manage active status from the connector" in html
    assert "never retroactive" in text(html)
    assert "Provisioning is paused" not in html
    html = partner_web.follow(partner_web.post(f"{base}/settings",
                                               {"provisioning_paused": "true"}))
    assert "Provisioning is paused:" in text(html)
    for page in ("users", "groups", "deleted-users", "modules", "audit", "settings"):
        assert 'id="paused-banner"' in partner_web.page(f"{base}/{page}"), page
    assert scim.post("/Users", {"schemas": [USER], "userName": "x@example.com"}).status_code == 503
    html = text(partner_web.follow(partner_web.post(f"{base}/settings", {
        "status_source": "connector"})))
    assert "managed from the connector" in html
    partner_web.post(f"{base}/settings", {"scim_default_status": "inactive"})
    partner_web.post(f"{base}/settings", {"provisioning_paused": "false"})
    tenant = tenant_of(engine, scim.tenant_id)
    assert (tenant.status_source, tenant.scim_default_status, tenant.provisioning_paused) == (
        "connector", "inactive", False)
    assert 'id="paused-banner"' not in partner_web.page(f"{base}/users")
    assert audit_actions(engine)[-4:] == ["tenant.settings"] * 4
    bad = partner_web.follow(partner_web.post(f"{base}/settings", {"status_source": "both"}))
    assert "status_source must be" in text(bad)
    audit = text(partner_web.page(f"{base}/audit"))
    assert "tenant.settings" in audit and "partner@example.com" in audit


def test_scim_token_rotation_asks_first_and_shows_the_new_token_once(
        partner_web: WebSession, scim: ScimClient, engine: Engine) -> None:
    base = f"/admin/tenants/{scim.tenant_id}"
    settings = partner_web.page(f"{base}/settings")
    assert "http://localhost/scim/v2" in settings
    assert f'href="{base}/scim-token"' in settings  # a link to the question, not a POST
    confirm = text(partner_web.page(f"{base}/scim-token"))
    assert "Rotate the SCIM token of" in confirm and "shown once" not in confirm
    assert audit_actions(engine).count("tenant.scim_token_rotated") == 0
    response = partner_web.post(f"{base}/scim-token")
    assert response.status_code == 303 and "scim_" not in response.location
    shown = partner_web.get(response.location)
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    html = shown.get_data(as_text=True)
    token = re.search(r'value="(scim_[^"]+)"', html).group(1)  # type: ignore[union-attr]
    assert "shown only this once" in text(html)
    # In words, what the token cache means: other processes may read on a few seconds.
    assert "refused from now on" in text(html) and "for up to 10 seconds" in text(html)
    assert token not in partner_web.client.get_cookie("connector_session").value  # type: ignore[union-attr]
    body = {"schemas": [USER], "userName": "new@example.com"}
    assert scim.post("/Users", body).status_code == 401
    fresh = ScimClient(scim.client, token, scim.tenant_id)
    assert fresh.post("/Users", body).status_code == 201
    reload = text(partner_web.page(response.location))  # the reload: no new token
    assert "This token was shown once and cannot be shown again" in reload
    assert token not in reload and "scim_" not in reload
    assert fresh.get("/Users").status_code == 200  # still the live token
    assert token not in partner_web.page(f"{base}/settings")
    assert audit_actions(engine).count("tenant.scim_token_rotated") == 1


def test_a_partner_creates_a_tenant_and_sees_its_first_token_once(
        partner_web: WebSession, engine: Engine) -> None:
    response = partner_web.post("/admin/tenants", {"name": "Contoso Health"})
    assert response.status_code == 303
    html = partner_web.page(response.location)
    assert "Contoso Health" in html
    assert re.search(r'value="scim_[^"]+"', html)
    reload = text(partner_web.page(response.location))
    assert "was shown once and cannot be shown again" in reload and "scim_" not in reload
    assert "Rotate the SCIM token" in reload
    assert partner_web.page("/admin/tenants").count(">Contoso Health</a>") == 1  # one tenant
    assert audit_actions(engine).count("tenant.created") == 1
    refused = partner_web.follow(partner_web.post("/admin/tenants", {"name": "x" * 201}))
    assert re.search(r'id="name-error"[^>]*>A tenant name needs 1 to 200 characters', refused)
    assert f'value="{"x" * 201}"' in refused


def test_personal_api_tokens(partner_web: WebSession, engine: Engine) -> None:
    response = partner_web.post("/admin/account/tokens", {"name": "nightly report"})
    html = partner_web.follow(response)
    token = re.search(r'value="(cadm_[^"]+)"', html).group(1)  # type: ignore[union-attr]
    reload = text(partner_web.page(response.location))
    assert "was shown once" in reload and "cadm_" not in reload
    assert audit_actions(engine).count("token.created") == 1
    api = partner_web.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200
    account = partner_web.page("/admin/account")
    assert "nightly report" in account and token not in account
    revoke = re.search(r"nightly report</th>.*?(/admin/account/tokens/[^/]+/revoke)", account,
                       re.DOTALL).group(1)  # type: ignore[union-attr]
    html = text(partner_web.follow(partner_web.post(revoke)))
    assert "Token “nightly report” revoked" in html
    api = partner_web.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 401
    assert audit_actions(engine)[-2:] == ["token.created", "token.revoked"]


def test_users_csv_export_link(partner_web: WebSession, scim: ScimClient,
                               engine: Engine) -> None:
    seed_directory(scim, users=3)
    html = partner_web.page(f"/admin/tenants/{scim.tenant_id}/users")
    link = unescape(re.search(r'href="([^"]+users\.csv)"', html).group(1))  # type: ignore[union-attr]
    response = partner_web.get(link)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:4] == ["first name", "last name", "e-mail", "username"]
    assert len(rows) == 1 + 4 and rows[1][:2] == ["Amira", "de Vries"]
    assert audit_actions(engine)[-1] == "users.exported"
    # PRODUCT.md: the same report as an Excel download, from the same page.
    xlsx = unescape(re.search(r'href="([^"]+users\.xlsx)"', html).group(1))  # type: ignore[union-attr]
    book = partner_web.client.get(xlsx)
    assert book.status_code == 200 and book.mimetype == XLSX_MIMETYPE
    sheet = openpyxl.load_workbook(io.BytesIO(book.get_data())).active
    assert [c.value for c in sheet[1]][:4] == rows[0][:4] and sheet.max_row == len(rows)
    book.close()


# -- who sees what ---------------------------------------------------------------------------------


def test_a_tenant_admin_sees_only_its_tenant(app: Flask, engine: Engine,
                                             scim: ScimClient) -> None:
    other_id, _ = make_tenant(engine, "Other Corp")
    other_user = entra_user(engine, other_id, "someone@other.example")
    web = signed_in(app, engine, "ta@example.com", "tenant", scim.tenant_id)
    assert web.get("/admin/").location == f"/admin/tenants/{scim.tenant_id}/users"
    assert web.get("/admin/tenants").location == f"/admin/tenants/{scim.tenant_id}/users"
    assert "Other Corp" not in web.page(f"/admin/tenants/{scim.tenant_id}/users")
    for path in ("users", f"users/{other_user}", "settings", "groups", "deleted-users",
                 "audit", "modules"):
        response = web.get(f"/admin/tenants/{other_id}/{path}")
        assert response.status_code == 404, path
        assert "Other Corp" not in response.get_data(as_text=True)
    response = web.post(f"/admin/tenants/{other_id}/settings", {"provisioning_paused": "true"})
    assert response.status_code == 404
    assert tenant_of(engine, other_id).provisioning_paused is False
    missing = web.get("/admin/tenants/no-such-tenant/users")
    assert missing.status_code == 404
    assert web.get("/admin/audit").status_code == 403
    assert web.post("/admin/tenants", {"name": "Mine"}).status_code == 403
    with make_sessionmaker(engine)() as s:
        assert s.scalar(select(Tenant.id).where(Tenant.name == "Mine")) is None


def test_everything_shown_is_escaped(partner_web: WebSession, scim: ScimClient) -> None:
    user = scim_user(scim, "<script>alert(1)</script>", "O'Brien & Co",
                     userName="x<img src=x onerror=alert(1)>@example.com")
    html = partner_web.page(f"/admin/tenants/{scim.tenant_id}/users/{user['id']}")
    assert "<script>alert(1)</script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in partner_web.page(f"/admin/tenants/{scim.tenant_id}/users")


def test_a_page_past_the_end_says_so_and_links_the_last(partner_web: WebSession,
                                                         scim: ScimClient) -> None:
    for n in range(3):
        scim.post("/Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                              "displayName": f"Group {n}"})
    page = text(partner_web.page(f"/admin/tenants/{scim.tenant_id}/groups?page=999"))
    assert "There is no page 999: the last page of groups is 1. Go to the last page" in page
    assert "Nothing on page 999" in page and "No groups" not in page
    assert "Page 999 of" not in page
    # Every list: not "Nothing recorded yet" nor "No users" over a list that has some,
    # nor "the the audit log fill 1 pages".
    audit = text(partner_web.page(f"/admin/tenants/{scim.tenant_id}/audit?page=999"))
    assert "There is no page 999: the last page of the audit log is 1." in audit
    assert "Nothing recorded yet" not in audit and "Nothing on page 999" in audit
    users = text(partner_web.page(f"/admin/tenants/{scim.tenant_id}/users?page=999"))
    assert "No users" not in users and "Nothing on page 999" in users
