"""Admin sign-in on the web UI (issue 17): one-time passwords that work once and expire,
the common-password check, TOTP two-factor sign-in with recovery codes, sessions ended
server-side, throttling the guesser rather than the owner, and partner admins managing
admin accounts. Every form POST is answered with a redirect, and reloading the page it
leads to repeats nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from flask import Flask
from sqlalchemy import Engine, select
from sqlalchemy import text as sql

from connector import admins, clock, sealed
from connector.config import AzureSyncSettings
from connector.db import make_sessionmaker
from connector.models import AdminAccount, AdminSession, AuditEntry
from connector.web import admin_accounts
from tests.support.clients import PASSWORD, make_tenant
from tests.web.conftest import WebSession, audit_actions, make_web_admin, signed_in

NEW = "plum orbit canvas 42 lantern"


def text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def account(engine: Engine, email: str) -> AdminAccount:
    with make_sessionmaker(engine)() as s:
        found = admins.find_admin(s, email)
        assert found is not None
        return found


def browser(app: Flask, addr: str = "127.0.0.1") -> WebSession:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = addr
    return WebSession(client)


def require_two_factor(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.config["SETTINGS"] = dataclasses.replace(settings, admin=dataclasses.replace(
        settings.admin, require_two_factor_for_partner_admins=True))


def invite(engine: Engine, email: str, role: str = "partner") -> str:
    with make_sessionmaker(engine)() as s:
        _, one_time = admins.create_admin(s, email, role, None, dt.datetime.now(dt.UTC))
        s.commit()
    assert one_time
    return one_time


# -- item 9: one-time passwords ---------------------------------------------------------------


def test_a_one_time_password_works_once_and_then_asks_for_a_new_password(
        app: Flask, engine: Engine) -> None:
    one_time = invite(engine, "new@example.com")
    web = browser(app)
    assert web.sign_in("new@example.com", one_time).location == "/admin/account/password"
    page = web.page("/admin/account/password")
    assert "works no more" in text(page) and 'name="current_password"' not in page
    assert web.get("/admin/tenants").location == "/admin/account/password"
    # A second sign-in with it, even from another browser, is refused with the reason.
    other = browser(app)
    response = other.sign_in("new@example.com", one_time)
    assert response.status_code == 422
    assert "was used already" in text(response.get_data(as_text=True))
    # Common passwords are refused, with why.
    response = web.post("/admin/account/password", {
        "new_password": "password1234", "new_password_again": "password1234"})
    assert "too easy to guess" in text(web.follow(response))
    response = web.post("/admin/account/password", {
        "new_password": "new@example.com!!", "new_password_again": "new@example.com!!"})
    assert "may not be (or contain) your e-mail address" in text(web.follow(response))
    response = web.post("/admin/account/password", {"new_password": NEW,
                                                     "new_password_again": NEW})
    assert response.location == "/admin/"
    assert "Tenants" in web.page("/admin/tenants")
    assert browser(app).sign_in("new@example.com", NEW).location == "/admin/"
    assert account(engine, "new@example.com").one_time_used_at is None


def test_a_one_time_password_expires(app: Flask, engine: Engine,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    one_time = invite(engine, "late@example.com")
    expires = account(engine, "late@example.com").one_time_expires_at
    assert expires is not None
    assert dt.timedelta(hours=23) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=24)
    monkeypatch.setattr(clock, "now", lambda: expires + dt.timedelta(seconds=1))
    response = browser(app).sign_in("late@example.com", one_time)
    assert response.status_code == 422
    assert "has expired" in text(response.get_data(as_text=True))


# -- item 9: two-factor sign-in ------------------------------------------------------------------


def enrol(web: WebSession, engine: Engine, email: str) -> tuple[pyotp.TOTP, list[str]]:
    """Set up two-factor sign-in on the account page; returns the app and recovery codes."""
    response = web.post("/admin/account/two-factor/start")
    page = web.follow(response)
    assert "data:image/svg+xml" in page and "otpauth://totp/" in unescape(page)
    uri = re.search(r"otpauth://totp/[^\"'<\s]+", unescape(page))
    assert uri is not None
    secret = parse_qs(urlsplit(uri.group(0)).query)["secret"][0]
    assert f'id="totp-key" type="text" value="{secret}"' in page  # the key to type in
    stored = account(engine, email).totp_pending_secret
    assert stored and secret not in stored  # sealed, pending or not
    totp = pyotp.TOTP(secret)
    wrong = web.post("/admin/account/two-factor/confirm", {"code": "000000"
                                                            if totp.now() != "000000"
                                                            else "111111"})
    assert "not right" in text(web.follow(wrong))
    response = web.post("/admin/account/two-factor/confirm", {"code": totp.now()})
    assert response.status_code == 303 and response.location == "/admin/account/shown"
    shown = web.page("/admin/account/shown")
    codes = re.findall(r"<li><code>([0-9a-f]{5}-[0-9a-f]{5})</code></li>", shown)
    assert len(codes) == 10
    # Reloading shows them no more.
    again = web.get("/admin/account/shown")
    assert again.status_code == 302
    assert "shown once" in text(web.page(again.location))
    return totp, codes


def test_two_factor_sign_in_with_codes_and_recovery_codes(
        app: Flask, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    web = signed_in(app, engine, "p@example.com")
    totp, codes = enrol(web, engine, "p@example.com")
    assert "two_factor.enabled" in audit_actions(engine)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    monkeypatch.setattr(clock, "now", lambda: later)
    other = browser(app)
    response = other.sign_in("p@example.com")
    assert response.location == "/admin/sign-in/code"
    # The password alone opens nothing.
    assert other.get("/admin/tenants").location.startswith("/admin/sign-in")
    assert "authenticator app" in text(other.page("/admin/sign-in/code"))
    response = other.post("/admin/sign-in/code", {"code": "12345"})
    assert response.location == "/admin/sign-in/code"
    assert "not right" in text(other.page(response.location))
    code = totp.at(later)
    response = other.post("/admin/sign-in/code", {"code": code})
    assert response.location == "/admin/", text(other.page(response.location))
    assert "Tenants" in other.page("/admin/tenants")
    # The same code does not sign in a second time.
    third = browser(app)
    third.sign_in("p@example.com")
    response = third.post("/admin/sign-in/code", {"code": code})
    assert response.location == "/admin/sign-in/code"
    # A recovery code works once.
    response = third.post("/admin/sign-in/code", {"code": codes[0].upper()})
    assert response.location == "/admin/"
    fourth = browser(app)
    fourth.sign_in("p@example.com")
    assert fourth.post("/admin/sign-in/code",
                       {"code": codes[0]}).location == "/admin/sign-in/code"
    assert len(account(engine, "p@example.com").recovery_codes) == 9
    with make_sessionmaker(engine)() as s:
        details = list(s.scalars(select(AuditEntry.detail).where(
            AuditEntry.action == "login.failed")))
    assert details.count({"step": "code"}) == 3


def test_partner_admins_are_led_to_enrol_when_it_is_required(app: Flask,
                                                             engine: Engine) -> None:
    require_two_factor(app)
    one_time = invite(engine, "boss@example.com")
    web = browser(app)
    assert web.sign_in("boss@example.com", one_time).location == "/admin/account/password"
    response = web.post("/admin/account/password", {"new_password": NEW,
                                                    "new_password_again": NEW})
    assert web.get("/admin/tenants").location == "/admin/account/two-factor"
    page = web.page("/admin/account/two-factor")
    assert "must sign in with two factors" in text(page)
    assert 'aria-label="Main"' not in page  # nothing else to go to yet
    totp, _ = enrol(web, engine, "boss@example.com")
    assert response.status_code == 303
    assert "Tenants" in web.page("/admin/tenants")
    # A tenant admin is not required to.
    make_web_admin(engine, "ta@example.com", "tenant", make_tenant(engine, "T")[0])
    tenant_web = browser(app)
    assert tenant_web.sign_in("ta@example.com").location == "/admin/"


# -- two-factor secrets sealed at rest ------------------------------------------------------------


def stored_secrets(engine: Engine, email: str) -> tuple[str | None, str | None]:
    """An account's two-factor secret columns, as a dump of the database holds them."""
    with engine.connect() as c:
        row = c.execute(sql("SELECT totp_secret, totp_pending_secret FROM admin_accounts "
                             "WHERE email_norm = :email"), {"email": email}).one()
    return row[0], row[1]


def test_a_two_factor_secret_is_stored_sealed_and_signs_in(
        app: Flask, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the database alone does not give anyone an admin's codes: the secret is
    sealed with the instance key (as Entra and webhook secrets are), and signs in."""
    web = signed_in(app, engine, "p@example.com")
    totp, _ = enrol(web, engine, "p@example.com")
    stored, pending = stored_secrets(engine, "p@example.com")
    assert pending is None and stored is not None and totp.secret not in stored
    keys = app.config["SETTINGS"].azure_sync
    assert sealed.unseal(keys, stored, "secret", "") == totp.secret
    with pytest.raises(sealed.KeyMissing):  # another instance's key opens nothing
        sealed.unseal(AzureSyncSettings(encryption_key=sealed.new_key()), stored, "secret", "")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    monkeypatch.setattr(clock, "now", lambda: later)
    other = browser(app)
    assert other.sign_in("p@example.com").location == "/admin/sign-in/code"
    assert other.post("/admin/sign-in/code", {"code": totp.at(later)}).location == "/admin/"


def test_a_secret_stored_in_clear_before_still_signs_in_and_is_sealed_then(
        app: Flask, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows from before secrets were sealed hold the base32 secret in clear: they keep
    working, and the sign-in that uses one seals it."""
    make_web_admin(engine, "old@example.com")
    secret = pyotp.random_base32()
    with engine.begin() as c:  # as revision 0028 left it
        c.execute(sql("UPDATE admin_accounts SET totp_secret = :secret, "
                       "totp_enabled_at = :at WHERE email_norm = 'old@example.com'"),
                  {"secret": secret, "at": dt.datetime.now(dt.UTC)})
    web = browser(app)
    assert web.sign_in("old@example.com").location == "/admin/sign-in/code"
    wrong = "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"
    assert web.post("/admin/sign-in/code", {"code": wrong}).location == "/admin/sign-in/code"
    assert stored_secrets(engine, "old@example.com")[0] == secret  # a failure changes nothing
    assert web.post("/admin/sign-in/code",
                    {"code": pyotp.TOTP(secret).now()}).location == "/admin/"
    stored, _ = stored_secrets(engine, "old@example.com")
    assert stored is not None and secret not in stored
    assert sealed.unseal(app.config["SETTINGS"].azure_sync, stored, "secret", "") == secret
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    monkeypatch.setattr(clock, "now", lambda: later)
    again = browser(app)
    again.sign_in("old@example.com")
    assert again.post("/admin/sign-in/code",
                      {"code": pyotp.TOTP(secret).at(later)}).location == "/admin/"


def test_secrets_left_in_clear_are_sealed_all_at_once_when_there_is_a_key(
        app: Flask, engine: Engine) -> None:
    """What `connector migrate` and `connector serve` run after migrating: every secret
    still in clear (confirmed or pending) sealed; without a key, nothing changed and
    KeyMissing says how to get one."""
    make_web_admin(engine, "a@example.com")
    make_web_admin(engine, "b@example.com")
    on, pending = pyotp.random_base32(), pyotp.random_base32()
    with engine.begin() as c:
        c.execute(sql("UPDATE admin_accounts SET totp_secret = :s WHERE email_norm = "
                       "'a@example.com'"), {"s": on})
        c.execute(sql("UPDATE admin_accounts SET totp_pending_secret = :s WHERE email_norm "
                       "= 'b@example.com'"), {"s": pending})
    keys = app.config["SETTINGS"].azure_sync
    with make_sessionmaker(engine)() as s:
        with pytest.raises(sealed.KeyMissing, match="encryption_key"):
            admins.seal_clear_totp_secrets(s, AzureSyncSettings(encryption_key_file=""))
        s.rollback()
        assert admins.seal_clear_totp_secrets(s, keys) == 2
        s.commit()
        assert admins.seal_clear_totp_secrets(s, keys) == 0
    a, _ = stored_secrets(engine, "a@example.com")
    _, b = stored_secrets(engine, "b@example.com")
    assert a and b and on not in a and pending not in b
    assert sealed.unseal(keys, a, "", "") == on and sealed.unseal(keys, b, "", "") == pending


# -- item 19: signing out ends the session server-side -------------------------------------------


def test_a_copied_cookie_is_worthless_after_sign_out(app: Flask, engine: Engine) -> None:
    web = signed_in(app, engine, "p@example.com")
    cookie = web.client.get_cookie("connector_session")
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie("connector_session", cookie.value)
    assert thief.get("/api/v1/me").status_code == 200
    assert thief.get("/admin/tenants").status_code == 200
    assert web.post("/admin/sign-out").location == "/admin/sign-in"
    assert thief.get("/api/v1/me").status_code == 401
    assert thief.get("/admin/tenants").location.startswith("/admin/sign-in")
    with make_sessionmaker(engine)() as s:
        assert s.scalar(select(AdminSession.ended_at)) is not None


def test_disabling_and_resetting_end_sessions(app: Flask, engine: Engine) -> None:
    partner = signed_in(app, engine, "p@example.com")
    other = signed_in(app, engine, "o@example.com")
    other_id = account(engine, "o@example.com").id
    assert other.get("/admin/tenants").status_code == 200
    assert partner.post(f"/admin/admins/{other_id}/disable").status_code == 303
    assert other.get("/admin/tenants").location.startswith("/admin/sign-in")
    assert browser(app).sign_in("o@example.com").status_code == 422
    partner.post(f"/admin/admins/{other_id}/enable")
    other = browser(app)
    assert other.sign_in("o@example.com").location == "/admin/"
    partner.get("/admin/admins")
    assert partner.post(f"/admin/admins/{other_id}/reset-password").status_code == 303
    assert other.get("/admin/tenants").location.startswith("/admin/sign-in")


# -- item 20: the guesser is throttled, not the owner ----------------------------------------------


def test_a_guesser_does_not_lock_the_owner_out(app: Flask, engine: Engine) -> None:
    make_web_admin(engine, "p@example.com")
    guesser = browser(app, "203.0.113.7")
    for _ in range(5):
        assert guesser.sign_in("p@example.com", "not the password").status_code == 422
    response = guesser.sign_in("p@example.com", PASSWORD)
    assert response.status_code == 429
    assert re.search(r"Wait 1[45] minutes, then try again",
                     text(response.get_data(as_text=True)))
    # The owner, elsewhere, with the right password, gets in.
    assert browser(app, "198.51.100.4").sign_in("p@example.com").location == "/admin/"


def test_each_further_failure_doubles_the_wait(app: Flask, engine: Engine,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    make_web_admin(engine, "p@example.com")
    guesser = browser(app, "203.0.113.7")
    for _ in range(5):
        guesser.sign_in("p@example.com", "wrong wrong wrong")
    start = dt.datetime.now(dt.UTC)
    monkeypatch.setattr(clock, "now", lambda: start + dt.timedelta(minutes=16))
    assert guesser.sign_in("p@example.com", "wrong again wrong").status_code == 422
    response = guesser.sign_in("p@example.com", PASSWORD)
    assert response.status_code == 429
    assert 29 * 60 <= int(response.headers["Retry-After"]) <= 30 * 60


def test_the_account_ceiling_holds_a_spread_out_guess(app: Flask, engine: Engine) -> None:
    settings = app.config["SETTINGS"]
    app.config["SETTINGS"] = dataclasses.replace(settings, admin=dataclasses.replace(
        settings.admin, login_account_ceiling=6))
    make_web_admin(engine, "p@example.com")
    for n in range(6):
        browser(app, f"203.0.113.{n}").sign_in("p@example.com", "wrong wrong wrong")
    response = browser(app, "198.51.100.4").sign_in("p@example.com")
    assert response.status_code == 429
    assert "from many addresses" in text(response.get_data(as_text=True))


def test_a_good_sign_in_starts_the_count_again(app: Flask, engine: Engine) -> None:
    make_web_admin(engine, "p@example.com")
    owner = browser(app, "203.0.113.7")
    for _ in range(4):
        owner.sign_in("p@example.com", "typo typo typo")
    assert owner.sign_in("p@example.com").location == "/admin/"
    other = browser(app, "203.0.113.7")
    for _ in range(4):
        assert other.sign_in("p@example.com", "typo typo typo").status_code == 422
    assert other.sign_in("p@example.com").location == "/admin/"


def test_the_address_ceiling_holds_spraying(app: Flask, engine: Engine) -> None:
    settings = app.config["SETTINGS"]
    app.config["SETTINGS"] = dataclasses.replace(settings, admin=dataclasses.replace(
        settings.admin, login_address_ceiling=3))
    for n in range(3):
        make_web_admin(engine, f"a{n}@example.com")
        browser(app, "203.0.113.9").sign_in(f"a{n}@example.com", "Winter2026!!")
    response = browser(app, "203.0.113.9").sign_in("a0@example.com")
    assert response.status_code == 429
    assert "from your address" in text(response.get_data(as_text=True))
    assert browser(app, "198.51.100.4").sign_in("a0@example.com").location == "/admin/"


@pytest.mark.parametrize(("address", "network"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:a:b:c:d", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),
    ("fe80::1%eth0", "fe80::/64"),
    ("not an address", "not an address"),
    (None, None),
])
def test_throttling_counts_ipv4_per_address_and_ipv6_per_64(address: str | None,
                                                            network: str | None) -> None:
    assert admins.client_network(address) == network


def test_a_guesser_rotating_through_its_ipv6_64_is_throttled(app: Flask,
                                                              engine: Engine) -> None:
    """Counted per /128, a guesser with a /64 took a fresh address for every try and was
    never held back. Its whole /64 now waits; the owner in another /64 does not."""
    make_web_admin(engine, "p@example.com")
    for n in range(5):
        guesser = browser(app, f"2001:db8:1:2::{n + 1:x}")
        assert guesser.sign_in("p@example.com", "not the password").status_code == 422
    response = browser(app, "2001:db8:1:2:dead:beef:0:1").sign_in("p@example.com")
    assert response.status_code == 429
    assert "Wait" in text(response.get_data(as_text=True))
    assert browser(app, "2001:db8:1:3::1").sign_in("p@example.com").location == "/admin/"
    with make_sessionmaker(engine)() as s:  # the audit log keeps each full address
        kept = set(s.scalars(select(AuditEntry.remote_addr).where(
            AuditEntry.action == admins.LOGIN_FAILED)))
    assert kept == {f"2001:db8:1:2::{n + 1:x}" for n in range(5)}


def test_ipv4_stays_per_address_and_a_mapped_ipv6_address_is_its_ipv4_one(
        app: Flask, engine: Engine) -> None:
    make_web_admin(engine, "p@example.com")
    for _ in range(5):
        browser(app, "::ffff:203.0.113.7").sign_in("p@example.com", "not the password")
    assert browser(app, "203.0.113.7").sign_in("p@example.com").status_code == 429
    assert browser(app, "203.0.113.8").sign_in("p@example.com").location == "/admin/"


def test_the_address_ceiling_holds_spraying_from_one_ipv6_64(app: Flask,
                                                              engine: Engine) -> None:
    settings = app.config["SETTINGS"]
    app.config["SETTINGS"] = dataclasses.replace(settings, admin=dataclasses.replace(
        settings.admin, login_address_ceiling=3))
    for n in range(3):
        make_web_admin(engine, f"a{n}@example.com")
        browser(app, f"2001:db8:9:9::{n + 1}").sign_in(f"a{n}@example.com", "Winter2026!!")
    response = browser(app, "2001:db8:9:9::99").sign_in("a0@example.com")
    assert response.status_code == 429
    assert "from your address" in text(response.get_data(as_text=True))
    assert browser(app, "2001:db8:9:a::1").sign_in("a0@example.com").location == "/admin/"


def test_wrong_current_passwords_are_throttled_then_the_session_ends(
        app: Flask, engine: Engine) -> None:
    web = signed_in(app, engine, "p@example.com")
    for _ in range(4):
        response = web.post("/admin/account/password", {
            "current_password": "not it at all", "new_password": NEW,
            "new_password_again": NEW})
        assert "current password is not right" in text(web.follow(response))
    response = web.post("/admin/account/password", {
        "current_password": "not it at all", "new_password": NEW, "new_password_again": NEW})
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert "signed out" in text(response.get_data(as_text=True))
    assert web.get("/admin/tenants").location.startswith("/admin/sign-in")
    assert audit_actions(engine).count("password.failed") == 5


# -- item 9: partner admins manage admin accounts ---------------------------------------------


def test_partner_admins_invite_and_manage_accounts(app: Flask, engine: Engine) -> None:
    tenant_id, _ = make_tenant(engine, "Northwind")
    web = signed_in(app, engine, "p@example.com")
    page = web.page("/admin/admins")
    assert "p@example.com (you)" in text(page)
    response = web.post("/admin/admins", {"email": "ta@example.com", "role": "tenant",
                                          "tenant_id": tenant_id})
    assert response.location == "/admin/account/shown"
    shown = web.page(response.location)
    one_time = re.search(r'id="secret" type="text" value="([^"]+)"', shown)
    assert one_time and "ta@example.com" in shown
    # Reloading makes no second account and shows the password no more.
    assert web.get("/admin/account/shown").status_code == 302
    with make_sessionmaker(engine)() as s:
        assert len(admins.list_admins(s)) == 2
    listed = text(web.page("/admin/admins"))
    assert "tenant Northwind" in listed and "invited" in listed
    again = web.post("/admin/admins", {"email": "ta@example.com", "role": "tenant",
                                       "tenant_id": tenant_id})
    assert "already exists" in text(web.follow(again))
    bad = web.post("/admin/admins", {"email": "x@example.com", "role": "tenant"})
    assert "needs the id of its tenant" in text(web.follow(bad))
    invited = browser(app)
    assert invited.sign_in("ta@example.com", one_time.group(1)).location == \
        "/admin/account/password"
    ta_id = account(engine, "ta@example.com").id
    own = account(engine, "p@example.com").id
    refused = web.post(f"/admin/admins/{own}/disable")
    assert "cannot disable your own" in text(web.follow(refused))
    response = web.post(f"/admin/admins/{ta_id}/disable")
    assert "is disabled" in text(web.follow(response))
    response = web.post(f"/admin/admins/{ta_id}/enable")
    assert "is enabled" in text(web.follow(response))
    nothing = web.post(f"/admin/admins/{ta_id}/reset-two-factor")
    assert "no two-factor sign-in to reset" in text(web.follow(nothing))
    actions = audit_actions(engine)
    assert actions.index("admin.created") < actions.index("admin.disabled") < \
        actions.index("admin.enabled")
    # A tenant admin may not.
    ta = signed_in(app, engine, "ta2@example.com", "tenant", tenant_id)
    assert ta.get("/admin/admins").status_code == 403
    ta.get("/admin/account")
    assert ta.post(f"/admin/admins/{own}/disable").status_code == 403
    assert account(engine, "p@example.com").disabled_at is None


def test_with_many_tenants_the_invitation_takes_a_typed_tenant(
        app: Flask, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond TENANT_CHOICES tenants the form asks for the tenant's name or id instead of
    offering a list of thousands; a name that fits no tenant, or several, is refused next
    to the field and nothing is made."""
    monkeypatch.setattr(admin_accounts, "TENANT_CHOICES", 2)
    northwind, _ = make_tenant(engine, "Ärzte Nord")
    make_tenant(engine, "Globex")
    make_tenant(engine, "Globex")
    web = signed_in(app, engine, "p@example.com")
    page = web.page("/admin/admins")
    assert 'name="tenant"' in page and "<option value=\"" + northwind not in page
    response = web.post("/admin/admins", {"email": "ta@example.com", "role": "tenant",
                                          "tenant": "arzte nord"})
    assert response.location == "/admin/account/shown"
    assert account(engine, "ta@example.com").tenant_id == northwind
    assert "tenant Ärzte Nord" in text(web.page("/admin/admins"))
    for typed, said in (("Initech", "No tenant is called “Initech”"),
                        ("globex", "2 tenants are called “globex”")):
        refused = web.follow(web.post("/admin/admins", {
            "email": "tb@example.com", "role": "tenant", "tenant": typed}))
        assert said in text(refused) and 'aria-invalid="true"' in refused, refused
        assert f'value="{typed}"' in refused  # as typed
    by_id = web.post("/admin/admins", {"email": "tb@example.com", "role": "tenant",
                                       "tenant": northwind})
    assert by_id.location == "/admin/account/shown"
    with make_sessionmaker(engine)() as s:
        assert sorted(a.email for a in admins.list_admins(s)) == [
            "p@example.com", "ta@example.com", "tb@example.com"]


def test_the_accounts_page_searches_pages_and_shows_one_tenants_admins(
        app: Flask, engine: Engine) -> None:
    northwind, _ = make_tenant(engine, "Northwind")
    globex, _ = make_tenant(engine, "Globex")
    web = signed_in(app, engine, "p@example.com")
    for n in range(3):
        make_web_admin(engine, f"north{n}@example.com", "tenant", northwind)
    make_web_admin(engine, "globex@example.com", "tenant", globex)
    assert "5 admin accounts" in text(web.page("/admin/admins"))
    html = web.page("/admin/admins?per_page=2&page=3")
    assert "Page 3 of 3" in text(html) and "p@example.com" in html
    html = web.page("/admin/admins?q=NORTH")
    assert "3 admin accounts match" in text(html) and "globex@example.com" not in html
    html = web.page(f"/admin/admins?tenant_id={globex}")
    assert "Showing the admins of Globex only." in text(html)
    assert "1 admin account matches" in text(html) and "north0@example.com" not in html
    assert f'<option value="{globex}" selected>' in html  # the invitation is for Globex
    settings = web.page(f"/admin/tenants/{globex}/settings")
    assert f'href="/admin/admins?tenant_id={globex}"' in settings
    assert web.get("/admin/admins?role=owner").status_code == 400


def test_a_partner_resets_a_lost_second_factor(app: Flask, engine: Engine) -> None:
    web = signed_in(app, engine, "p@example.com")
    other = signed_in(app, engine, "o@example.com")
    enrol(other, engine, "o@example.com")
    other_id = account(engine, "o@example.com").id
    web.get("/admin/admins")
    response = web.post(f"/admin/admins/{other_id}/reset-two-factor")
    assert "is off" in text(web.follow(response))
    assert other.get("/admin/tenants").location.startswith("/admin/sign-in")
    assert browser(app).sign_in("o@example.com").location == "/admin/"
    response = web.post(f"/admin/admins/{other_id}/reset-password")
    shown = web.page(response.location)
    assert "One-time password" in shown
    assert "admin.two_factor_reset" in audit_actions(engine)
    assert "admin.password_reset" in audit_actions(engine)


def test_a_recovery_code_of_decimal_digits_only_still_signs_in() -> None:
    """Recovery codes are ten hex digits: about one in a hundred has no letter, and was
    taken for a (wrong) authenticator code."""
    now = dt.datetime.now(dt.UTC)
    account = AdminAccount(totp_secret=pyotp.random_base32(), totp_last_step=None,
                           recovery_codes=[admins._digest("1234567890")])
    keys = AzureSyncSettings()  # none: a recovery code needs no key
    with pytest.raises(admins.BadCredentials):
        admins.check_second_factor(account, "12345-67891", now, keys)
    assert admins.check_second_factor(account, "12345-67890", now, keys) == "recovery"
    assert account.recovery_codes == []
    with pytest.raises(admins.BadCredentials):  # used up
        admins.check_second_factor(account, "1234567890", now, keys)


def test_an_unknown_e_mail_is_checked_at_the_cost_of_a_password() -> None:
    """A sign-in with an unknown e-mail checks the password against a written-out hash
    (not one made at import): it must cost what a real account's check costs, so its
    method and parameters are those new hashes get, and no password matches it."""
    from werkzeug.security import generate_password_hash

    method = generate_password_hash("a password").split("$")[0]
    assert method.startswith("scrypt:")
    assert admins._DUMMY_HASH.split("$")[0] == method
    assert not admins._password_matches(admins._DUMMY_HASH, "a password")


# -- the session cookie: its flags, and no fixation ---------------------------------------------


def _cookie_flags(app: Flask, engine: Engine, email: str, scheme: str) -> set[str]:
    """The session cookie's attributes as the sign-in's answer sets them."""
    make_web_admin(engine, email)
    web = browser(app)
    web.get("/admin/sign-in", base_url=f"{scheme}://localhost")
    response = web.post("/admin/sign-in", {"email": email, "password": PASSWORD},
                        base_url=f"{scheme}://localhost")
    assert response.status_code == 303
    [cookie] = [c for c in response.headers.getlist("Set-Cookie")
                if c.startswith("connector_session=")]
    return {part.strip().split("=")[0].casefold() + ("=" + part.split("=")[1].strip()
                                                     if part.strip().startswith("SameSite")
                                                     else "")
            for part in cookie.split(";")[1:]}


@pytest.mark.parametrize(("mode", "base", "scheme", "secure"), [
    ("auto", "http://connector.example", "http", False),
    ("auto", "https://connector.example", "http", True),  # TLS ends at a proxy
    ("auto", "http://connector.example", "https", True),
    ("always", "http://connector.example", "http", True),
    ("never", "https://connector.example", "https", False),
])
def test_the_session_cookie_is_httponly_lax_and_secure_as_set_with_hsts(
        app: Flask, engine: Engine, mode: str, base: str, scheme: str, secure: bool) -> None:
    settings = app.config["SETTINGS"]
    app.config["SETTINGS"] = dataclasses.replace(
        settings, admin=dataclasses.replace(settings.admin, secure_cookies=mode),
        server=dataclasses.replace(settings.server, public_base_url=base))
    flags = _cookie_flags(app, engine, "p@example.com", scheme)
    assert {"httponly", "samesite=Lax"} <= flags
    assert ("secure" in flags) is secure
    # Where the cookie is Secure, the pages are HTTPS only (HSTS): a network attacker
    # cannot serve the sign-in page over plain HTTP to a browser that has been here.
    page = app.test_client().get("/admin/sign-in", base_url=f"{scheme}://localhost")
    assert page.headers.get("Strict-Transport-Security") == (
        "max-age=31536000" if secure else None)


def test_a_cookie_from_before_sign_in_is_not_the_signed_in_session(
        app: Flask, engine: Engine) -> None:
    """Session fixation: a cookie planted in the victim's browser before it signs in (or
    copied from the sign-in page) is worth nothing once it has signed in."""
    make_web_admin(engine, "p@example.com")
    victim = browser(app)
    victim.get("/admin/sign-in")
    planted = victim.client.get_cookie("connector_session")
    assert planted is not None
    assert victim.sign_in("p@example.com").location == "/admin/"
    assert victim.client.get_cookie("connector_session").value != planted.value  # type: ignore[union-attr]
    attacker = app.test_client()
    attacker.set_cookie("connector_session", planted.value)
    assert attacker.get("/api/v1/me").status_code == 401
    assert attacker.get("/admin/tenants").location.startswith("/admin/sign-in")
