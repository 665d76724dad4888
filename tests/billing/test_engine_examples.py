"""Boundary examples for the pure billing engine (PRODUCT.md, "Billing", "Precise readings").

Each example pins one reading: the instant a month starts in awkward zones, which month an
event exactly at 00:00 belongs to, what "active at every instant" means around removals,
restores and re-creations, the trial, the frontline plan, modules through groups, and
activity that does not count. Where PRODUCT.md leaves room, the test says which reading
the engine takes.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest

from billing.calendar import Month, local_midnight
from billing.fold import Fact, fact_order, fold_month
from billing.invoice import count
from billing.policies import POLICIES, Decision, billing_starts, decide_user, is_frontline

US = dt.timedelta(microseconds=1)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


class History:
    """One user's facts, in the order they are added (that order is `seq`)."""

    def __init__(self) -> None:
        self.facts: list[Fact] = []

    def add(self, at: dt.datetime | str, kind: str, value: Any = None) -> History:
        when = utc(at) if isinstance(at, str) else at
        self.facts.append(Fact(when, len(self.facts), kind, value))
        return self

    def created(self, at: dt.datetime | str, *, name: str = "alice", active: bool = True,
                guest: bool = False, external: bool = False, modules: tuple[str, ...] = (),
                frontline: dict[str, Any] | None = None) -> History:
        return self.add(at, "user.created", {
            "userName": name, "active": active, "guest": guest,
            "external_company_guest": external, "modules": list(modules),
            "frontline": frontline or {}})


def decide(policy: str, history: History, month: str, tz: str = "UTC",
           trial: dt.date | None = None, groups: dict[str, frozenset[str]] | None = None,
           user_id: str = "u1") -> Decision | None:
    m = Month.parse(month)
    folded = fold_month(user_id, sorted(history.facts, key=fact_order), m.window(tz),
                        groups or {})
    return decide_user(POLICIES[policy], folded, m.first_day(), trial)


def billable(policy: str, history: History, month: str, **kw: Any) -> bool | None:
    decision = decide(policy, history, month, **kw)
    return None if decision is None else decision.billable


def a_user(since: str = "2025-06-15T09:00:00") -> History:
    return History().created(since, modules=("Hybrid",))


# -- month boundaries ---------------------------------------------------------------------


def test_utc_months_are_half_open_at_midnight() -> None:
    window = Month(2026, 3).window("UTC")
    assert (window.start, window.end, window.first_day_end) == (
        utc("2026-03-01T00:00:00"), utc("2026-04-01T00:00:00"), utc("2026-03-02T00:00:00"))
    assert Month.containing(utc("2026-03-01T00:00:00"), "UTC") == Month(2026, 3)
    assert Month.containing(utc("2026-03-01T00:00:00") - US, "UTC") == Month(2026, 2)


def test_asuncion_october_2023_starts_when_the_midnight_gap_ends() -> None:
    # Clocks jump from 00:00 to 01:00 (-04 to -03): local midnight never happens.
    assert Month(2023, 10).start("America/Asuncion") == utc("2023-10-01T04:00:00")
    assert Month(2023, 9).end("America/Asuncion") == utc("2023-10-01T04:00:00")
    assert Month(2023, 10).end("America/Asuncion") == utc("2023-11-01T03:00:00")
    assert Month.containing(utc("2023-10-01T04:00:00") - US, "America/Asuncion") == Month(
        2023, 9)
    assert Month.containing(utc("2023-10-01T04:00:00"), "America/Asuncion") == Month(2023, 10)


def test_havana_november_2026_starts_at_the_earlier_of_two_midnights() -> None:
    # Clocks fall back from 01:00 to 00:00 (-04 to -05): midnight happens twice.
    assert Month(2026, 11).start("America/Havana") == utc("2026-11-01T04:00:00")
    assert Month(2026, 10).end("America/Havana") == utc("2026-11-01T04:00:00")
    assert Month(2026, 11).end("America/Havana") == utc("2026-12-01T05:00:00")
    # 00:30 local, first time round (04:30Z) and second time round (05:30Z): November.
    for instant in ("2026-11-01T04:30:00", "2026-11-01T05:30:00"):
        assert Month.containing(utc(instant), "America/Havana") == Month(2026, 11)
    assert Month.containing(utc("2026-11-01T04:00:00") - US, "America/Havana") == Month(
        2026, 10)


@pytest.mark.parametrize(("tz", "month", "start"), [
    ("America/Asuncion", "2023-10", "2023-10-01T04:00:00"),
    ("America/Havana", "2026-11", "2026-11-01T04:00:00"),
])
def test_a_deactivation_at_the_awkward_start_belongs_to_the_new_month(
        tz: str, month: str, start: str) -> None:
    history = a_user("2020-01-01T00:00:00").add(start, "user.status", False)
    previous = str(Month.parse(month).previous())
    assert billable("whole_month", history, previous, tz=tz) is True
    assert billable("whole_month", history, month, tz=tz) is False
    earlier = a_user("2020-01-01T00:00:00").add(utc(start) - US, "user.status", False)
    assert billable("whole_month", earlier, previous, tz=tz) is False
    # A user created at that instant has an account in the new month only.
    created = History().created(start)
    assert decide("whole_month", created, previous, tz=tz) is None
    assert billable("whole_month", created, month, tz=tz) is False
    assert billable("whole_month", created, str(Month.parse(month).next()), tz=tz) is True


def test_local_midnight_on_ordinary_days_and_gaps() -> None:
    assert local_midnight(dt.date(2026, 3, 1), "Europe/Amsterdam") == utc(
        "2026-02-28T23:00:00")
    assert local_midnight(dt.date(2026, 4, 1), "Europe/Amsterdam") == utc(
        "2026-03-31T22:00:00")
    # Asuncion 2022-10-02 (the first day of October ends in a gap).
    assert Month(2022, 10).window("America/Asuncion").first_day_end == utc(
        "2022-10-02T04:00:00")


# -- an event exactly at 00:00 on the 1st -------------------------------------------------


def test_created_exactly_at_midnight_is_created_during_that_month() -> None:
    history = History().created("2026-03-01T00:00:00")
    assert decide("whole_month", history, "2026-02") is None  # no account in February
    assert decide("whole_month", history, "2026-03") == Decision(
        "u1", False, "not_active_whole_month", "standard", "regular", (), ())
    assert billable("whole_month", history, "2026-04") is True


def test_deactivated_exactly_at_midnight_was_active_all_of_the_previous_month() -> None:
    history = a_user().add("2026-03-01T00:00:00", "user.status", False)
    assert billable("whole_month", history, "2026-02") is True
    assert billable("whole_month", history, "2026-03") is False
    assert billable("active_with_module", history, "2026-02") is True
    assert billable("active_with_module", history, "2026-03") is False
    one_microsecond_earlier = a_user().add(utc("2026-03-01T00:00:00") - US, "user.status",
                                           False)
    assert billable("whole_month", one_microsecond_earlier, "2026-02") is False
    assert billable("active_with_module", one_microsecond_earlier, "2026-02") is False


def test_removed_exactly_at_midnight_has_no_account_in_the_new_month() -> None:
    history = a_user().add("2026-03-01T00:00:00", "user.removed", {"userName": "alice"})
    assert billable("whole_month", history, "2026-02") is True
    for policy in POLICIES:
        assert decide(policy, history, "2026-03") is None


def test_activity_exactly_at_midnight_counts_for_the_new_month() -> None:
    history = a_user().add("2026-03-01T00:00:00", "activity", "sign_in")
    assert billable("monthly_active", history, "2026-02") is False
    assert billable("monthly_active", history, "2026-03") is True
    last = a_user().add(utc("2026-03-01T00:00:00") - US, "activity", "visit")
    assert billable("monthly_active", last, "2026-02") is True
    assert billable("monthly_active", last, "2026-03") is False


def test_removed_at_midnight_then_restored_had_no_account_on_the_first_day() -> None:
    history = (a_user().add("2026-03-01T00:00:00", "user.removed", {"userName": "alice"})
               .add("2026-03-02T10:00:00", "user.restored", {"modules": ["Hybrid"]})
               .add("2026-03-03T10:00:00", "activity", "chat"))
    decision = decide("monthly_active", history, "2026-03")
    assert decision is not None
    assert (decision.billable, decision.reason) == (False, "no_account_on_first_day")
    assert billable("monthly_active", history.add("2026-04-03T10:00:00", "activity", "chat"),
                    "2026-04") is True


@pytest.mark.parametrize(("created", "on_first_day"), [
    ("2026-03-01T23:59:59.999999", True), ("2026-03-02T00:00:00", False)])
def test_monthly_active_needs_an_account_on_the_first_local_day(created: str,
                                                                 on_first_day: bool) -> None:
    history = History().created(created).add("2026-03-20T12:00:00", "activity", "sign_in")
    assert billable("monthly_active", history, "2026-03") is on_first_day


# -- one instant, several facts ------------------------------------------------------------


def test_activity_at_the_instant_of_a_creation_counts_and_of_a_removal_does_not() -> None:
    # Logged before the creation (lower seq): log events still apply first.
    born = History().add("2026-03-01T08:00:00", "activity", "sign_in").created(
        "2026-03-01T08:00:00")
    assert billable("monthly_active", born, "2026-03") is True
    gone = a_user().add("2026-03-10T08:00:00", "activity", "sign_in").add(
        "2026-03-10T08:00:00", "user.removed", {"userName": "alice"})
    assert billable("monthly_active", gone, "2026-03") is False


def test_events_at_one_instant_apply_in_log_order() -> None:
    off_then_on = (a_user().add("2026-03-31T12:00:00", "user.invited", True)
                   .add("2026-03-31T12:00:00", "user.status", False)
                   .add("2026-03-31T12:00:00", "user.status", True))
    on_then_off = (a_user().add("2026-03-31T12:00:00", "user.invited", True)
                   .add("2026-03-31T12:00:00", "user.status", True)
                   .add("2026-03-31T12:00:00", "user.status", False))
    assert billable("invited", off_then_on, "2026-03") is True
    assert billable("invited", on_then_off, "2026-03") is False


def test_a_change_undone_at_the_same_instant_leaves_no_instant_changed() -> None:
    # PRODUCT.md does not say; the engine reads "every instant" literally: a status that
    # is off and on again at one instant was never off at any instant.
    blink = (a_user().add("2026-03-10T08:00:00", "user.status", False)
             .add("2026-03-10T08:00:00", "user.status", True))
    assert billable("whole_month", blink, "2026-03") is True
    # Likewise an account created and removed at one instant never existed.
    never = History().created("2026-03-10T08:00:00").add(
        "2026-03-10T08:00:00", "user.removed", {"userName": "alice"})
    for policy in POLICIES:
        assert decide(policy, never, "2026-03") is None


# -- DST -----------------------------------------------------------------------------------


def test_amsterdam_march_ends_at_local_midnight_in_summer_time() -> None:
    window = Month(2026, 3).window("Europe/Amsterdam")
    assert (window.start, window.end) == (utc("2026-02-28T23:00:00"),
                                          utc("2026-03-31T22:00:00"))
    # 00:00 CEST on 1 April is April; 23:59:59 CEST on 31 March is March.
    april = a_user().add("2026-03-31T22:00:00", "user.status", False)
    assert billable("whole_month", april, "2026-03", tz="Europe/Amsterdam") is True
    march = a_user().add("2026-03-31T21:59:59", "user.status", False)
    assert billable("whole_month", march, "2026-03", tz="Europe/Amsterdam") is False
    # The same instants in UTC both fall in March.
    assert billable("whole_month", april, "2026-03") is False
    # The DST change itself (02:00 -> 03:00 on 29 March) is just an instant of March.
    changed = a_user().add("2026-03-29T01:00:00", "user.status", False)
    assert billable("whole_month", changed, "2026-03", tz="Europe/Amsterdam") is False
    assert billable("whole_month", changed, "2026-02", tz="Europe/Amsterdam") is True


def test_amsterdam_october_ends_at_local_midnight_in_winter_time() -> None:
    window = Month(2026, 10).window("Europe/Amsterdam")
    assert (window.start, window.end) == (utc("2026-09-30T22:00:00"),
                                          utc("2026-10-31T23:00:00"))
    # 23:30 CET on 31 October (after the clocks went back on the 25th) is October.
    late = a_user().add("2026-10-31T22:30:00", "activity", "visit")
    assert billable("monthly_active", late, "2026-10", tz="Europe/Amsterdam") is True
    assert billable("monthly_active", late, "2026-11", tz="Europe/Amsterdam") is False
    # 00:30 CEST on 1 October is October, 23:30 CEST on 30 September is not.
    early = a_user().add("2026-09-30T22:30:00", "user.status", False)
    assert billable("whole_month", early, "2026-09", tz="Europe/Amsterdam") is True
    assert billable("whole_month", early, "2026-10", tz="Europe/Amsterdam") is False


# -- 29 February ---------------------------------------------------------------------------


def test_29_february_2028_is_the_last_day_of_february() -> None:
    window = Month(2028, 2).window("UTC")
    assert window.end == utc("2028-03-01T00:00:00")
    assert Month(2028, 2).end("Europe/Amsterdam") == utc("2028-02-29T23:00:00")
    last_instant = a_user().add(utc("2028-03-01T00:00:00") - US, "user.status", False)
    assert billable("whole_month", last_instant, "2028-01") is True
    assert billable("whole_month", last_instant, "2028-02") is False
    on_the_29th = a_user().add("2028-02-29T12:00:00", "activity", "sign_in")
    assert billable("monthly_active", on_the_29th, "2028-02") is True
    assert billable("monthly_active", on_the_29th, "2028-03") is False
    created = History().created("2028-02-29T00:00:00")
    assert billable("whole_month", created, "2028-02") is False
    assert billable("whole_month", created, "2028-03") is True
    assert billing_starts(dt.date(2028, 2, 29)) == dt.date(2028, 3, 1)


# -- status changes, removals, re-creations --------------------------------------------------


def test_reactivated_mid_month_is_not_billable_under_whole_month() -> None:
    history = (a_user().add("2026-03-10T08:00:00", "user.status", False)
               .add("2026-03-12T08:00:00", "user.status", True))
    assert billable("whole_month", history, "2026-02") is True
    assert billable("whole_month", history, "2026-03") is False
    assert billable("whole_month", history, "2026-04") is True
    assert billable("active_with_module", history, "2026-03") is True


def test_deleted_and_recreated_with_the_same_user_name_is_a_new_account() -> None:
    old = a_user().add("2026-03-10T08:00:00", "user.removed", {"userName": "alice"}).add(
        "2026-03-11T08:00:00", "activity", "sign_in")  # reported against the old id: ignored
    new = History().created("2026-03-10T08:00:00", name="alice", modules=("Hybrid",)).add(
        "2026-03-11T08:00:00", "activity", "sign_in")
    assert billable("whole_month", old, "2026-02") is True
    assert billable("whole_month", old, "2026-03", user_id="old") is False
    assert billable("whole_month", new, "2026-03", user_id="new") is False
    assert decide("whole_month", old, "2026-04", user_id="old") is None
    assert billable("whole_month", new, "2026-04", user_id="new") is True
    # monthly_active: the old account had no activity while it existed; the new one had
    # no account on the 1st. Neither is billed in March.
    assert billable("monthly_active", old, "2026-03", user_id="old") is False
    assert billable("monthly_active", new, "2026-03", user_id="new") is False
    # At the end of March only the new account is there.
    assert billable("active_with_module", old, "2026-03", user_id="old") is False
    assert billable("active_with_module", new, "2026-03", user_id="new") is True


def test_restored_is_the_same_account() -> None:
    history = (a_user().add("2026-03-10T08:00:00", "user.removed",
                            {"userName": "alice", "modules": ["Hybrid"]})
               .add("2026-03-12T08:00:00", "user.restored", {"modules": ["Hybrid"]})
               .add("2026-03-20T08:00:00", "activity", "sign_in"))
    assert billable("whole_month", history, "2026-03") is False
    assert billable("whole_month", history, "2026-04") is True  # no new first whole month
    assert billable("monthly_active", history, "2026-03") is True  # the account of the 1st
    decision = decide("active_with_module", history, "2026-03")
    assert decision is not None and decision.units == ("Hybrid",)


# -- trial ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_trial_ending_18_october_bills_from_november(policy: str) -> None:
    history = (a_user().add("2026-05-01T00:00:00", "user.invited", True)
               .add("2026-10-20T08:00:00", "activity", "sign_in")
               .add("2026-11-20T08:00:00", "activity", "sign_in"))
    trial = dt.date(2026, 10, 18)
    october = decide(policy, history, "2026-10", trial=trial)
    assert october is not None and (october.billable, october.reason) == (False, "trial")
    assert billable(policy, history, "2026-11", trial=trial) is True


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_trial_ending_1_november_bills_from_december(policy: str) -> None:
    history = (a_user().add("2026-05-01T00:00:00", "user.invited", True)
               .add("2026-11-20T08:00:00", "activity", "sign_in")
               .add("2026-12-20T08:00:00", "activity", "sign_in"))
    trial = dt.date(2026, 11, 1)
    assert billing_starts(trial) == dt.date(2026, 12, 1)
    november = decide(policy, history, "2026-11", trial=trial)
    assert november is not None and (november.billable, november.reason) == (False, "trial")
    assert billable(policy, history, "2026-12", trial=trial) is True


def test_trial_ending_31_december_bills_from_january() -> None:
    assert billing_starts(dt.date(2026, 12, 31)) == dt.date(2027, 1, 1)
    assert billable("whole_month", a_user(), "2026-12", trial=dt.date(2026, 12, 31)) is False
    assert billable("whole_month", a_user(), "2027-01", trial=dt.date(2026, 12, 31)) is True


# -- plan, audience, modules -----------------------------------------------------------------


@pytest.mark.parametrize(("attributes", "frontline"), [
    ({"desklessPercent": 50, "frontlineRole": "medical"}, True),
    ({"desklessPercent": 50.0, "frontlineRole": "customerFacing"}, True),
    ({"desklessPercent": 49.9, "frontlineRole": "medical"}, False),
    ({"desklessPercent": 100, "frontlineRole": "office"}, False),
    ({"paidHourly": True, "frontlineRole": "backstage"}, True),
    ({"hasEmail": False, "frontlineRole": "publicService"}, True),
    ({"hasEmail": True, "paidHourly": False, "frontlineRole": "publicService"}, False),
    ({"desklessPercent": 80}, False),
    ({}, False),
])
def test_frontline_plan(attributes: dict[str, Any], frontline: bool) -> None:
    assert is_frontline(attributes) is frontline


def test_frontline_plan_is_read_at_the_months_end() -> None:
    history = (History().created("2026-01-05T00:00:00",
                                 frontline={"desklessPercent": 10, "frontlineRole": "medical"})
               .add("2026-03-31T23:59:59.999999", "user.frontline",
                    {"desklessPercent": 50, "frontlineRole": "medical"}))
    decision = decide("whole_month", history, "2026-03")
    assert decision is not None and (decision.billable, decision.plan) == (True, "frontline")
    assert count([decision]) == Counter({("user", "regular", "frontline"): 1})
    february = decide("whole_month", history, "2026-02")
    assert february is not None and february.plan == "standard"


def test_modules_via_two_groups_are_counted_once_per_module() -> None:
    groups = {"g1": frozenset({"Hybrid", "Engage"}), "g2": frozenset({"Engage"}),
              "g3": frozenset({"Unify"})}
    history = (a_user().add("2026-02-01T00:00:00", "member.added", "g1")
               .add("2026-02-01T00:00:00", "member.added", "g2")
               .add("2026-02-01T00:00:00", "member.added", "g3")
               .add("2026-03-31T23:59:59", "member.removed", "g3"))
    decision = decide("active_with_module", history, "2026-03", groups=groups)
    assert decision is not None
    assert decision.modules == decision.units == ("Engage", "Hybrid")
    assert count([decision]) == Counter({("Engage", "regular", "standard"): 1,
                                         ("Hybrid", "regular", "standard"): 1})
    # The other policies bill the user once, modules or not.
    assert decide("whole_month", history, "2026-03", groups=groups).units == ("user",)


def test_users_without_modules_are_billed_except_under_active_with_module() -> None:
    history = (History().created("2026-01-05T00:00:00")
               .add("2026-02-01T00:00:00", "user.invited", True)
               .add("2026-03-05T00:00:00", "activity", "chat"))
    for policy in ("whole_month", "invited", "monthly_active"):
        assert billable(policy, history, "2026-03") is True
    no_module = decide("active_with_module", history, "2026-03")
    assert no_module is not None and no_module.reason == "no_module"


def test_guest_and_external_company_guest_are_read_at_the_months_end() -> None:
    guest = a_user().add("2026-03-31T12:00:00", "user.guest", True)
    decision = decide("whole_month", guest, "2026-03")
    assert decision is not None and (decision.billable, decision.audience) == (True, "guest")
    external = a_user().add("2026-03-31T12:00:00", "user.external_guest", True)
    for policy in POLICIES:
        result = decide(policy, external.add("2026-03-20T00:00:00", "activity", "sign_in"),
                        "2026-03")
        assert result is not None and result.reason == "external_company_guest"
    assert billable("whole_month", external, "2026-02") is True


# -- policies' own questions ---------------------------------------------------------------


def test_notification_activity_never_counts() -> None:
    history = a_user().add("2026-03-05T08:00:00", "activity", "notification")
    decision = decide("monthly_active", history, "2026-03")
    assert decision is not None and (decision.billable, decision.reason) == (False,
                                                                             "no_activity")
    for kind in ("sign_in", "visit", "chat"):
        assert billable("monthly_active", a_user().add("2026-03-05T08:00:00", "activity",
                                                       kind), "2026-03") is True


def test_invited_by_the_months_end_and_active_then() -> None:
    last = a_user().add(utc("2026-04-01T00:00:00") - US, "user.invited", True)
    assert billable("invited", last, "2026-03") is True
    at_the_end = a_user().add("2026-04-01T00:00:00", "user.invited", True)
    assert billable("invited", at_the_end, "2026-03") is False
    assert billable("invited", at_the_end, "2026-04") is True
    claimed = decide("invited", a_user().add("2026-03-05T00:00:00", "user.claimed", True),
                     "2026-03")
    assert claimed is not None and (claimed.billable, claimed.reason) == (True, "claimed")
    inactive = a_user().add("2026-03-05T00:00:00", "user.invited", True).add(
        "2026-03-30T00:00:00", "user.status", False)
    assert billable("invited", inactive, "2026-03") is False
    assert billable("invited", History().created("2026-01-01T00:00:00"), "2026-03") is False
