"""The poller's pure parts: Retry-After, backoff, delta item mapping."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azure_sync import mapping
from azure_sync.retry import RetryBudget, backoff_seconds, retry_after_seconds

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("header", "seconds"), [
    ("3", 3.0), ("0.5", 0.5), (" 12 ", 12.0), ("-4", 0.0), ("999999", 3600.0),
    ("Sun, 29 Nov 2026 12:00:30 GMT", 30.0), ("Sun, 29 Nov 2026 11:00:00 GMT", 0.0),
    (None, None), ("", None), ("soon", None), ("nan", None), ("inf", None),
])
def test_retry_after_reads_seconds_and_http_dates(header: str | None,
                                                  seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


@given(attempt=st.integers(0, 60), r=st.floats(0, 1))
def test_backoff_is_bounded_by_the_cap_and_grows(attempt: int, r: float) -> None:
    wait = backoff_seconds(attempt, 1.0, 60.0, lambda: r)
    assert 0 <= wait <= min(60.0, 2.0 ** attempt)


def test_budget_runs_out() -> None:
    budget = RetryBudget(2)
    assert budget.spend() and budget.spend() and not budget.spend()


def test_absent_keys_are_unchanged_and_nulls_clear() -> None:
    stored = mapping.StoredProfile(
        "ann@contoso.com", "Ann", {"name": {"givenName": "Ann", "familyName": "Lee"},
                                   "emails": [{"value": "ann@contoso.com", "type": "work",
                                               "primary": True}]},
        guest=False, admin=True)
    fields = mapping.user_fields("oid-1", stored, {"surname": None, "userType": "Guest"})
    assert fields is not None
    assert fields.data["name"] == {"givenName": "Ann"}
    assert fields.data["emails"][0]["value"] == "ann@contoso.com"  # absent: kept
    assert (fields.guest, fields.admin, fields.active) == (True, True, None)
    assert fields.external_id == "oid-1" and fields.display_name == "Ann"
    cleared = mapping.user_fields("oid-1", stored, {"mail": None, "displayName": None})
    assert cleared is not None and "emails" not in cleared.data
    assert cleared.display_name is None and cleared.values == ()


def test_a_new_user_needs_a_user_principal_name() -> None:
    assert mapping.user_fields("oid", None, {"displayName": "x"}) is None
    made = mapping.user_fields("oid", None, {
        "userPrincipalName": "b@contoso.com", "accountEnabled": False, "mail": "b@c.com",
        "givenName": "B", "employeeId": "E7"})
    assert made is not None and made.active is False and made.user_name == "b@contoso.com"
    assert made.data[mapping.ENTERPRISE] == {"employeeNumber": "E7"}
    assert [v.value for v in made.values] == ["b@c.com"]


def test_delta_items_parse_removed_and_member_changes() -> None:
    assert mapping.parse_user({"id": "x", "@removed": {"reason": "changed"}}).removed == "changed"
    assert mapping.parse_user({"id": "x", "@removed": {"reason": "deleted"}}).removed == "deleted"
    assert mapping.parse_user({"id": "x", "mail": None, "extra": 1}).changes == {"mail": None}
    group = mapping.parse_group({"id": "g", "displayName": "Sales", "members@delta": [
        {"@odata.type": "#microsoft.graph.user", "id": "u1"},
        {"@odata.type": "#microsoft.graph.group", "id": "g2"},
        {"@odata.type": "#microsoft.graph.user", "id": "u3", "@removed": {"reason": "deleted"}},
        "junk", {"id": 5}]})
    assert group.added == (("u1", "User"), ("g2", "Group"))
    assert group.removed_members == ("u3",) and group.display_name == "Sales"
    for bad in ({}, {"id": ""}, {"id": 7}, [], "x", {"id": "x" * 600}):
        with pytest.raises(mapping.MalformedItem):
            mapping.parse_user(bad)


@pytest.mark.parametrize(("staged", "synced", "held"), [
    (0, 0, False), (2, 2, False), (9, 10, False),  # a handful never trips the percentage
    (10, 40, True), (10, 50, False), (501, 1_000_000, True), (500, 1_000_000, False),
])
def test_deletion_threshold(staged: int, synced: int, held: bool) -> None:
    from azure_sync.staging import is_over_threshold

    assert is_over_threshold(staged, synced, 500, 20) is held
