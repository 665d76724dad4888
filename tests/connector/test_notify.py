"""Notifications against a real SMTP server on loopback (aiosmtpd), on both databases:
each condition e-mails its admins once until it clears, reminds daily, respects opt-outs,
escapes what it quotes, and a mail server that is down never fails the job that raised
the condition: the e-mail waits in the outbox and is retried."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from azure_sync import decisions
from connector import notify, scim_health
from connector.config import BillingSettings, NotifySettings, ServerSettings, Settings
from connector.db import make_sessionmaker
from connector.models import AdminAccount, NotifyOutbox, SyncRun, SyncState, Tenant
from tests.fakes.smtp import Inbox, free_port, smtp_server
from tests.fakes.tls import LOOPBACK
from tests.support.clients import make_admin, make_tenant

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
ONE_MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    with smtp_server(box) as port:
        yield box, port


def settings_for(port: int, **notify: Any) -> Settings:
    return Settings(
        server=ServerSettings(public_base_url="https://connector.example"),
        billing=BillingSettings(mail_host=LOOPBACK, mail_port=port, mail_security="none",
                                mail_from="connector@partner.example",
                                mail_timeout_seconds=5),
        notify=NotifySettings(**{"scim_min_requests": 10, **notify}))


@pytest.fixture
def world(engine: Engine) -> dict[str, str]:
    """Two tenants; a partner admin, two admins of Acme, one of Other."""
    acme, _ = make_tenant(engine, "Acme <Corp> & Co")
    other, _ = make_tenant(engine, "Other Corp")
    ids = {"acme": acme, "other": other}
    ids["partner"], _ = make_admin(engine, "partner@example.com")
    ids["alice"], _ = make_admin(engine, "alice@acme.example", "tenant", acme)
    ids["bob"], _ = make_admin(engine, "bob@acme.example", "tenant", acme)
    ids["olga"], _ = make_admin(engine, "olga@other.example", "tenant", other)
    return ids


@pytest.fixture
def maker(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine, writes=True)


def send(maker: sessionmaker[Session], settings: Settings, at: dt.datetime
         ) -> notify.SendResult:
    return notify.send_due(maker, settings, at)


def addresses(box: Inbox) -> list[str]:
    return sorted(a for rcpt in box.recipients for a in rcpt)


ACME_ADMINS = ["alice@acme.example", "bob@acme.example", "partner@example.com"]


# -- each condition, raised where it happens -------------------------------------------------


def hold_round(maker: sessionmaker[Session], tenant_id: str) -> int:
    with maker() as s:
        run = SyncRun(tenant_id=tenant_id, kind="incremental", status="awaiting_approval",
                      trigger="schedule", started_at=T0, pages=1, counts={},
                      error="over the deletion threshold")
        s.add(run)
        s.commit()
        return run.id


def fail_rounds(maker: sessionmaker[Session], tenant_id: str, failures: int,
                quarantined: bool = False) -> None:
    with maker() as s:
        state = s.get(SyncState, tenant_id) or SyncState(tenant_id=tenant_id)
        state.failures = failures
        state.quarantined_until = T0 + dt.timedelta(days=1) if quarantined else None
        s.merge(state)
        if failures:
            s.add(SyncRun(tenant_id=tenant_id, kind="incremental", status="failed",
                          trigger="schedule", started_at=T0, pages=0, counts={},
                          error="token endpoint said invalid_client"))
        s.commit()


def test_a_held_round_mails_the_tenant_admins_and_partners_once(
        maker: sessionmaker[Session], world: dict[str, str], inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    settings = settings_for(port)
    run_id = hold_round(maker, world["acme"])
    notify.sync_round_ended(maker, world["acme"], 3, T0)
    notify.sync_round_ended(maker, world["acme"], 3, T0 + ONE_MINUTE)  # still held: nothing
    result = send(maker, settings, T0 + ONE_MINUTE)
    assert len(result.sent) == 3 and addresses(box) == ACME_ADMINS  # not Other's admin
    message = box.messages[0]
    assert message["Subject"] == \
        "Entra ID sync round held for approval for Acme <Corp> & Co"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert (f"https://connector.example/admin/tenants/{world['acme']}/entra/runs/{run_id}"
            in text)
    assert "approve or reject" in text
    notify.run_pass(maker, settings, lambda: T0 + dt.timedelta(minutes=2))
    assert len(box.messages) == 3


def test_approving_or_rejecting_clears_and_a_new_hold_mails_again(
        maker: sessionmaker[Session], world: dict[str, str], inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    settings = settings_for(port)
    run_id = hold_round(maker, world["acme"])
    notify.sync_round_ended(maker, world["acme"], 3, T0)
    with maker() as s:
        decisions.reject_held(s, world["acme"], run_id, T0 + ONE_MINUTE)
        s.commit()
        assert notify.standing(s, [world["acme"]], T0)[0].cleared_at is not None
    second = hold_round(maker, world["acme"])
    notify.sync_round_ended(maker, world["acme"], 3, T0 + 2 * ONE_MINUTE)
    send(maker, settings, T0 + 2 * ONE_MINUTE)
    # The first hold's e-mails were dropped (cleared before sending); the second's go.
    assert addresses(box) == ACME_ADMINS
    assert f"/runs/{second}" in box.messages[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_failing_rounds_then_quarantine_raise_and_a_success_clears(
        maker: sessionmaker[Session], world: dict[str, str], inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    settings = settings_for(port)
    fail_rounds(maker, world["acme"], 2)
    notify.sync_round_ended(maker, world["acme"], 3, T0)
    assert send(maker, settings, T0).sent == []  # two failures: not yet
    fail_rounds(maker, world["acme"], 3)
    notify.sync_round_ended(maker, world["acme"], 3, T0)
    send(maker, settings, T0)
    assert {m["Subject"] for m in box.messages} == {
        "Entra ID sync rounds failing for Acme <Corp> & Co"}
    fail_rounds(maker, world["acme"], 5, quarantined=True)
    notify.sync_round_ended(maker, world["acme"], 3, T0 + ONE_MINUTE)
    send(maker, settings, T0 + ONE_MINUTE)
    assert len(box.messages) == 6  # quarantine: three more; "failing" stands, no repeat
    assert "invalid_client" in box.messages[-1].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    fail_rounds(maker, world["acme"], 0)  # a round succeeded
    notify.sync_round_ended(maker, world["acme"], 3, T0 + 2 * ONE_MINUTE)
    with maker() as s:
        assert all(c.cleared_at for c in notify.standing(s, None, T0))
    fail_rounds(maker, world["acme"], 3)  # failing again: a new e-mail
    notify.sync_round_ended(maker, world["acme"], 3, T0 + 3 * ONE_MINUTE)
    send(maker, settings, T0 + 3 * ONE_MINUTE)
    assert len(box.messages) == 9


def test_a_failed_month_close_raises_until_the_month_closes(
        maker: sessionmaker[Session], world: dict[str, str], inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    settings = settings_for(port)
    failed = [(world["acme"], "2026-11", "billing profile has no price for Hybrid")]
    notify.month_closes_ended(maker, [], failed, T0)
    notify.month_closes_ended(maker, [], failed, T0 + ONE_MINUTE)
    send(maker, settings, T0 + ONE_MINUTE)
    assert addresses(box) == ACME_ADMINS
    assert box.messages[0]["Subject"] == \
        "Billing month close failed (2026-11) for Acme <Corp> & Co"
    notify.month_closes_ended(maker, [(world["acme"], "2026-11")], [], T0 + 2 * ONE_MINUTE)
    with maker() as s:
        [condition] = notify.standing(s, [world["acme"]], T0)
        assert condition.cleared_at == T0 + 2 * ONE_MINUTE


def test_the_scim_error_share_raises_above_the_setting_with_enough_requests(
        maker: sessionmaker[Session], world: dict[str, str], inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    settings = settings_for(port, scim_error_percent=20.0, scim_min_requests=10)
    clock = [T0.timestamp()]
    counts = scim_health.ScimCounts(maker, clock=lambda: clock[0])
    for _ in range(3):  # 3 errors of 4 requests: too few to judge
        counts.record(world["other"], 500)
    counts.record(world["other"], 200)
    for status in [200] * 7 + [401, 400, 503] + [404, 409, 412] * 3:
        counts.record(world["acme"], status)  # 3 errors of 19: 404/409/412 are routine
    counts.flush()
    notify.run_pass(maker, settings, lambda: T0 + ONE_MINUTE)
    assert box.messages == []  # 15 % for Acme, 4 requests for Other
    for status in [500] * 5:
        counts.record(world["acme"], status)  # 8 errors of 24: 33 %
    counts.flush()
    notify.run_pass(maker, settings, lambda: T0 + ONE_MINUTE)
    assert addresses(box) == ACME_ADMINS
    assert box.messages[0]["Subject"] == "SCIM requests failing for Acme <Corp> & Co"
    assert "8 of 24 SCIM requests" in box.messages[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # Fifteen minutes on, the window holds nothing more: the condition clears.
    notify.run_pass(maker, settings, lambda: T0 + dt.timedelta(minutes=16))
    with maker() as s:
        [condition] = notify.standing(s, None, T0)
        assert condition.kind == "scim_errors" and condition.cleared_at is not None


def test_counts_reach_the_table_at_the_first_request_of_a_new_minute(
        maker: sessionmaker[Session], world: dict[str, str]) -> None:
    clock = [T0.timestamp()]
    counts = scim_health.ScimCounts(maker, clock=lambda: clock[0])
    counts.record(world["acme"], 500)
    counts.record(world["acme"], 201)
    clock[0] += 60
    counts.record(world["acme"], 200)  # hands the first minute to a writer thread
    for _ in range(100):
        with maker() as s:
            found = scim_health.window_counts(s, T0, T0 + ONE_MINUTE)
        if found:
            break
        import time

        time.sleep(0.02)
    assert found == {world["acme"]: (2, 1)}


# -- once, reminders, opt-out, escaping, SMTP down ----------------------------------------------


def raise_held(maker: sessionmaker[Session], tenant_id: str, at: dt.datetime) -> bool:
    with maker() as s:
        raised = notify.raise_condition(s, tenant_id, "month_close_failed", "close failed",
                                        at, "2026-11")
        s.commit()
        return raised


def test_raising_again_sends_nothing_more_and_clearing_then_raising_sends_again(
        maker: sessionmaker[Session], world: dict[str, str], inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    settings = settings_for(port)
    assert raise_held(maker, world["acme"], T0)
    assert not raise_held(maker, world["acme"], T0 + ONE_MINUTE)
    send(maker, settings, T0 + ONE_MINUTE)
    assert len(box.messages) == 3
    with maker() as s:
        assert notify.clear_condition(s, world["acme"], "month_close_failed",
                                      T0 + 2 * ONE_MINUTE, "2026-11") == 1
        s.commit()
    assert raise_held(maker, world["acme"], T0 + 3 * ONE_MINUTE)
    send(maker, settings, T0 + 3 * ONE_MINUTE)
    assert len(box.messages) == 6


def test_a_condition_still_raised_is_reminded_daily(
        maker: sessionmaker[Session], world: dict[str, str], inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    settings = settings_for(port)
    raise_held(maker, world["acme"], T0)
    notify.run_pass(maker, settings, lambda: T0)
    notify.run_pass(maker, settings, lambda: T0 + dt.timedelta(hours=23))
    assert len(box.messages) == 3
    notify.run_pass(maker, settings, lambda: T0 + dt.timedelta(hours=24))
    assert len(box.messages) == 6
    assert box.messages[-1]["Subject"].startswith("Reminder: Billing month close failed")
    assert "is still raised" in box.messages[-1].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    notify.run_pass(maker, settings, lambda: T0 + dt.timedelta(hours=30))
    assert len(box.messages) == 6  # the next one is due a day after the reminder


def test_an_admin_who_opted_out_is_not_mailed(
        maker: sessionmaker[Session], world: dict[str, str], inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    settings = settings_for(port)
    with maker() as s:
        notify.set_opt_outs(s, world["alice"], ["month_close_failed"])
        notify.set_opt_outs(s, world["partner"], [notify.ALL])
        notify.set_opt_outs(s, world["bob"], ["round_held"])  # another kind: still mailed
        s.execute(update(AdminAccount).where(AdminAccount.id == world["olga"])
                  .values(disabled_at=T0))
        s.commit()
    raise_held(maker, world["acme"], T0)
    send(maker, settings, T0)
    assert addresses(box) == ["bob@acme.example"]


def test_unknown_opt_out_kinds_are_refused(maker: sessionmaker[Session],
                                           world: dict[str, str]) -> None:
    from connector.errors import InvalidSetting

    with maker() as s, pytest.raises(InvalidSetting, match="Unknown notification kind"):
        notify.set_opt_outs(s, world["alice"], ["everything"])


def test_the_html_part_escapes_what_it_quotes(
        maker: sessionmaker[Session], world: dict[str, str], inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    with maker() as s:
        notify.raise_condition(s, world["acme"], "month_close_failed",
                               'Closing failed: <img src=x onerror="alert(1)">', T0, "2026-11")
        s.commit()
    send(maker, settings_for(port), T0)
    html = box.messages[0].get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Acme &lt;Corp&gt; &amp; Co" in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "<img" not in html


def test_smtp_down_never_fails_the_job_and_the_message_is_retried(
        maker: sessionmaker[Session], world: dict[str, str]) -> None:
    port = free_port()  # nothing listens there yet
    settings = settings_for(port, retry_minutes=5)
    notify.month_closes_ended(maker, [], [(world["acme"], "2026-11", "boom")], T0)
    notify.run_pass(maker, settings, lambda: T0)  # completes; the sends fail
    with maker() as s:
        rows = list(s.scalars(select(NotifyOutbox)))
        assert [r.state for r in rows] == ["pending"] * 3
        assert all(r.attempts == 1 and "Connection refused" in (r.last_error or "")
                   for r in rows)
        assert all(r.next_attempt_at == T0 + dt.timedelta(minutes=5) for r in rows)
    box = Inbox(refuse=1)
    from aiosmtpd.controller import Controller

    controller = Controller(box, hostname=LOOPBACK, port=port)
    controller.start()
    try:
        result = send(maker, settings, T0 + dt.timedelta(minutes=4))
        assert result.sent == []  # not due yet
        result = send(maker, settings, T0 + dt.timedelta(minutes=5))
        assert len(result.sent) == 2 and len(result.retrying) == 1  # 451 once
        result = send(maker, settings, T0 + dt.timedelta(minutes=15))
        assert len(result.sent) == 1
    finally:
        controller.stop()
    assert addresses(box) == ACME_ADMINS


def test_without_an_smtp_server_the_queued_mails_are_dropped_and_notices_stay(
        maker: sessionmaker[Session], world: dict[str, str]) -> None:
    settings = replace(settings_for(1), billing=BillingSettings())
    raise_held(maker, world["acme"], T0)
    result = send(maker, settings, T0)
    assert len(result.dropped) == 3
    with maker() as s:
        assert [c.kind for c in notify.standing(s, [world["acme"]], T0)] == \
            ["month_close_failed"]
        assert s.get(Tenant, world["acme"]) is not None


def test_notifications_off_drop_the_queued_mails(
        maker: sessionmaker[Session], world: dict[str, str], inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    raise_held(maker, world["acme"], T0)
    notify.run_pass(maker, settings_for(port, enabled=False), lambda: T0)
    assert box.messages == []
    with maker() as s:
        assert {r.state for r in s.scalars(select(NotifyOutbox))} == {"dropped"}


def test_old_mails_and_long_cleared_conditions_are_pruned(
        maker: sessionmaker[Session], world: dict[str, str], inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    settings = settings_for(port)
    raise_held(maker, world["acme"], T0)
    notify.run_pass(maker, settings, lambda: T0)
    with maker() as s:
        notify.clear_condition(s, world["acme"], "month_close_failed", T0, "2026-11")
        s.commit()
    notify.run_pass(maker, settings, lambda: T0 + dt.timedelta(days=89))
    with maker() as s:
        assert len(list(s.scalars(select(NotifyOutbox)))) == 3
    notify.run_pass(maker, settings, lambda: T0 + dt.timedelta(days=91))
    with maker() as s:
        assert list(s.scalars(select(NotifyOutbox))) == []
        assert notify.standing(s, None, T0 - dt.timedelta(days=1)) == []
