"""Issue 17, item 12: a billing clerk's back-dated corrections, on both databases.

A correction is audited, shows in the user's history where it took effect (with its
reason), never changes a closed month, and the next close reverses and corrects each
closed month within the look-back; older months are listed in its report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from billing.calendar import Month
from connector import browse
from connector.actions import AdminCall
from connector.actions import users as actions
from connector.admins import Principal
from connector.commands import UserFields
from connector.errors import InvalidSetting, StateConflict, StatusChangeRefused
from connector.models import AuditEntry, BillingAdjustment, BillingClose, User
from connector.status import Source
from tests.billing.history import History, at
from tests.billing.test_catch_up import connector
from tests.billing.test_close import DEC, NOV, close, lines

CLERK = Principal("clerk-id", "clerk@partner.example", "partner", None, "session")
REASON = "left on the 28th; the IdP sync was down"


def correct(h: History, now: str, user_id: str, kind: str, value: Any, effective: str,
            reason: str = REASON) -> bool:
    """The admin action, as the API, the page and the CLI call it, at `now`."""
    with h.maker() as s:
        call = AdminCall(s, CLERK, at(now), f"corr-{now}")
        correction = actions.correction_of(kind, value, effective, reason)
        _user, changed = actions.correct_user(call, h.tenant_id, user_id, correction)
        s.commit()
        return changed


def admin_made(h: History, when: str, name: str, **fields: Any) -> str:
    """A user an admin created: its status is the admins' to change (no IdP feeds it)."""
    with h.directory(when, Source.ADMIN) as d:
        return d.create_user(UserFields(user_name=name, **fields)).id


def adjustments(h: History) -> list[tuple[str, int, str, str]]:
    with h.maker() as s:
        return [(r.month, r.sign, r.amount, r.reason) for r in s.scalars(
            select(BillingAdjustment).order_by(BillingAdjustment.id))]


def test_a_status_correction_reverses_the_closed_month_at_the_next_close(
        engine: Engine) -> None:
    h = History(engine)
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"}])
    a = admin_made(h, "2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
    nov = close(h, NOV)
    billed = {(x.user_name, x.billable) for x in lines(h, nov.close.id).values()}
    assert correct(h, "2026-12-10T09:00:00", a, "status", "inactive",
                   "2026-11-28T00:00:00Z") is True
    with h.maker() as s:  # the current state follows: nothing later says otherwise
        user = s.get(User, (h.tenant_id, a))
        assert user is not None and user.active is False
        history = browse.user_history(s, h.tenant_id, a)
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "user.corrected")).one()
    newest = history[0]
    assert (newest["kind"], newest["old"], newest["new"], newest["reason"]) == (
        "user.status", True, False, REASON)
    assert at(newest["effectiveAt"]) == at("2026-11-28T00:00:00")
    assert at(newest["recordedAt"]) == at("2026-12-10T09:00:00")
    assert audit.detail["reason"] == REASON and audit.actor == "admin:clerk@partner.example"
    # November stays as closed; December's close reverses it and says why
    assert {(x.user_name, x.billable) for x in lines(h, nov.close.id).values()} == billed
    dec = close(h, DEC)
    got = adjustments(h)
    assert [(m, sign, amount) for m, sign, amount, _ in got] == [("2026-11", -1, "-5.00")]
    assert got[0][3].endswith(f"; correction: {REASON}")
    assert dec.close.invoice["adjustmentsTotal"] == "-5.00"
    assert lines(h, dec.close.id)["a@x.io"].reason == "inactive_at_end"
    with h.maker() as s:
        assert s.get(BillingClose, nov.close.id).content_hash == nov.close.content_hash


def test_a_correction_older_than_the_lookback_is_listed_not_billed_back(
        engine: Engine) -> None:
    h = History(engine)
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"}])
    a = admin_made(h, "2026-08-05T10:00:00", "a@x.io", modules=("Hybrid",))
    for month in (Month(2026, 9), Month(2026, 10), NOV):
        close(h, month)
    assert correct(h, "2026-12-10T00:00:00", a, "deletion", None, "2026-09-20T00:00:00Z")
    with h.maker() as s:
        user = s.get(User, (h.tenant_id, a))
        assert user is not None and user.removed_at == at("2026-09-20T00:00:00")
    dec = close(h, DEC)
    assert sorted(m for m, *_ in adjustments(h)) == ["2026-10", "2026-11"]
    report = dec.close.report
    assert report["lateUnadjustedUsers"] == 1
    assert report["lateUnadjusted"][0] == {"month": "2026-09", "userId": a,
                                           "kinds": ["user.removed"], "reasons": [REASON]}


def test_a_correction_something_later_overrides_changes_only_the_history(
        engine: Engine) -> None:
    h = History(engine)
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"}])
    a = h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
    close(h, NOV)
    h.set_active("2026-12-02T00:00:00", a, False)
    h.set_active("2026-12-03T00:00:00", a, True)  # the IdP's later word: active
    assert correct(h, "2026-12-10T00:00:00", a, "status", "inactive",
                   "2026-11-28T00:00:00Z") is False
    with h.maker() as s:
        user = s.get(User, (h.tenant_id, a))
        assert user is not None and user.active is True
    close(h, DEC)
    assert [(m, sign) for m, sign, *_ in adjustments(h)] == [("2026-11", -1)]


@pytest.mark.parametrize(("kind", "value", "column", "expected"), [
    ("modules", [], None, None),
    ("guest", True, "guest", True),
    ("externalCompanyGuest", True, "external_company_guest", True),
    ("frontline", {"paidHourly": True, "frontlineRole": "medical"}, "frontline",
     {"paidHourly": True, "frontlineRole": "medical"}),
])
def test_every_billed_attribute_can_be_corrected(engine: Engine, kind: str, value: Any,
                                                 column: str | None, expected: Any) -> None:
    h = History(engine)
    h.billing(prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"},
                      {"unit": "Hybrid", "plan": "frontline", "price": "2.00"}])
    a = h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
    nov = close(h, NOV)
    before = lines(h, nov.close.id)["a@x.io"]
    assert (before.audience, before.plan) == ("regular", "standard")
    assert correct(h, "2026-12-10T00:00:00", a, kind, value, "2026-11-15T00:00:00Z")
    with h.maker() as s:
        user = s.get(User, (h.tenant_id, a))
        assert user is not None
        if column:
            assert getattr(user, column) == expected
        else:
            assert browse.user_detail(s, h.tenant_id, a)["ownModules"] == []
    close(h, DEC)
    got = [(m, sign, amount) for m, sign, amount, _ in adjustments(h)]
    corrected = {"modules": [], "guest": [("2026-11", 1, "5.00")],  # as a guest
                 "externalCompanyGuest": [], "frontline": [("2026-11", 1, "2.00")]}[kind]
    assert got == [("2026-11", -1, "-5.00"), *corrected]


@pytest.mark.parametrize(("now", "effective", "field", "says"), [
    ("2026-12-10T00:00:00", "2026-12-11T00:00:00Z", "effectiveAt", "not in the past"),
    ("2026-12-10T00:00:00", "2026-10-01T00:00:00Z", "effectiveAt", "before the user"),
    ("2026-12-10T00:00:00", "2026-11-28T00:00:00", "effectiveAt", "with its zone"),
])
def test_effective_time_must_fall_in_the_users_past(engine: Engine, now: str, effective: str,
                                                    field: str, says: str) -> None:
    h = History(engine)
    a = h.create("2026-10-05T10:00:00", "a@x.io")
    with pytest.raises(InvalidSetting) as refused:
        correct(h, now, a, "status", "inactive", effective)
    assert refused.value.field == field and says in refused.value.message
    with h.maker() as s:
        assert s.scalars(select(AuditEntry)).all() == []


def test_nothing_to_correct_and_bad_input_are_refused_by_name(engine: Engine) -> None:
    h = History(engine)
    a = h.create("2026-10-05T10:00:00", "a@x.io")
    with pytest.raises(StateConflict, match="already says active"):
        correct(h, "2026-12-10T00:00:00", a, "status", "active", "2026-11-01T00:00:00Z")
    for kind, value, reason, field in (("colour", None, REASON, "kind"),
                                       ("status", "gone", REASON, "value"),
                                       ("guest", "yes", REASON, "value"),
                                       ("frontline", {"desklessPercent": 101}, REASON,
                                        "desklessPercent"),
                                       ("status", "inactive", "  ", "reason")):
        with pytest.raises(InvalidSetting) as refused:
            correct(h, "2026-12-10T00:00:00", a, kind, value, "2026-11-01T00:00:00Z", reason)
        assert refused.value.field == field


@pytest.mark.parametrize(("kind", "value"), [("status", "inactive"), ("deletion", None)])
def test_a_correction_that_changes_an_idp_users_state_follows_the_status_rules(
        engine: Engine, kind: str, value: Any) -> None:
    h = History(engine)
    a = h.create("2026-10-05T10:00:00", "a@x.io")  # through SCIM, provisioning running
    with pytest.raises(StatusChangeRefused, match="pause provisioning"):
        correct(h, "2026-12-10T00:00:00", a, kind, value, "2026-11-28T00:00:00Z")
    with h.maker() as s:
        user = s.get(User, (h.tenant_id, a))
        assert user is not None and user.active and user.removed_at is None
        assert s.scalars(select(AuditEntry)).all() == []


@pytest.mark.slow  # the command in a new interpreter
def test_the_correct_command(engine: Engine, database_url: str, tmp_path: Path) -> None:
    h = History(engine)
    a = h.create("2026-10-05T10:00:00", "a@x.io", modules=("Hybrid",))
    args = ["billing", "correct", "--tenant", h.tenant_id, "--user", a, "--effective",
            "2026-11-28T00:00:00Z", "--reason", REASON, "--by", "clerk@partner.example"]
    done = connector(database_url, *args, "--kind", "modules", "--value", "Hybrid, Engage",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "modules of a@x.io corrected from 2026-11-28T00:00:00+00:00" in done.stdout
    assert "changed too" in done.stdout
    done = connector(database_url, *args, "--kind", "frontline", "--value",
                     '{"paidHourly": true}', "--json", cwd=tmp_path)
    assert json.loads(done.stdout)["events"][0]["new"] == {"paidHourly": True}
    refused = connector(database_url, *args, "--kind", "guest", "--value", "maybe",
                        cwd=tmp_path)
    assert refused.returncode == 1 and "true or false" in refused.stderr
    with h.maker() as s:
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "user.corrected")
                          .order_by(AuditEntry.id)).all()
        assert [e.actor for e in audit] == ["admin:clerk@partner.example"] * 2
        assert browse.user_detail(s, h.tenant_id, a)["ownModules"] == ["Engage", "Hybrid"]


def test_a_trial_started_on_the_3rd_of_october_is_free_through_november(
        engine: Engine) -> None:
    """Issue 17, item 13: 30 days from 3 October end on 1 November (the last free day),
    so November is free and billing starts in December."""
    h = History(engine)
    h.billing(trial_starts_on="2026-10-03",
              prices=[{"unit": "Hybrid", "plan": "standard", "price": "5.00"}])
    h.create("2026-10-03T10:00:00", "a@x.io", modules=("Hybrid",))
    assert lines(h, close(h, NOV).close.id)["a@x.io"].reason == "trial"
    assert lines(h, close(h, DEC).close.id)["a@x.io"].billable is True


@pytest.mark.slow  # the command in a new interpreter
def test_the_trial_command(engine: Engine, database_url: str, tmp_path: Path) -> None:
    h = History(engine)
    given = connector(database_url, "billing", "trial", "--tenant", h.tenant_id,
                      "--starts-on", "2026-10-03", cwd=tmp_path)
    assert given.returncode == 0, given.stderr
    assert "trial ends on 2026-11-01" in given.stdout
    ended = connector(database_url, "billing", "trial", "--tenant", h.tenant_id, "--none",
                      cwd=tmp_path)
    assert ended.returncode == 0 and "has no trial" in ended.stdout
    bad = connector(database_url, "billing", "trial", "--tenant", h.tenant_id,
                    "--starts-on", "3 Oct", cwd=tmp_path)
    assert bad.returncode == 1 and "The trial's start must be a date" in bad.stderr


def test_the_month_page_lists_what_was_not_billed_back(engine: Engine, app: Any,
                                                        client: Any) -> None:
    from tests.web.conftest import WebSession, make_web_admin

    h = History(engine)
    a = admin_made(h, "2026-08-05T10:00:00", "a@x.io", modules=("Hybrid",))
    for month in (Month(2026, 9), Month(2026, 10), NOV):
        close(h, month)
    correct(h, "2026-12-10T00:00:00", a, "deletion", None, "2026-09-20T00:00:00Z")
    close(h, DEC)
    make_web_admin(engine, "clerk@partner.example")
    web = WebSession(client)
    web.sign_in("clerk@partner.example")
    html = web.get(f"/admin/tenants/{h.tenant_id}/billing/months/2026-12").get_data(
        as_text=True)
    assert 'id="late-unadjusted"' in html and "2026-09" in html and REASON in html
