"""What other packages may read of a tenant's sync (connector.sync_status), on both
databases: only a successful incremental or full round that started at or after the
boundary counts, the first one by start; quarantine is read as stored."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from connector import sync_status, tenants
from connector.models import SyncRun, SyncState

BOUNDARY = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def minutes(n: int) -> dt.datetime:
    return BOUNDARY + dt.timedelta(minutes=n)


@pytest.fixture
def tenant_ids(session: Session) -> tuple[str, str]:
    one, _ = tenants.create_tenant(session, "Synced", minutes(-60 * 24 * 30))
    other, _ = tenants.create_tenant(session, "Other", minutes(-60 * 24 * 30))
    session.commit()
    return one.id, other.id


def add_run(session: Session, tenant_id: str, kind: str, status: str, started: int,
            finished: int | None) -> None:
    session.add(SyncRun(tenant_id=tenant_id, kind=kind, status=status, trigger="schedule",
                        started_at=minutes(started),
                        finished_at=minutes(finished) if finished is not None else None,
                        pages=1, counts={}))


def test_no_round_since_the_boundary_is_none(session: Session,
                                             tenant_ids: tuple[str, str]) -> None:
    tenant_id, other = tenant_ids
    assert sync_status.first_round_completed_since(session, tenant_id, BOUNDARY) is None
    add_run(session, tenant_id, "incremental", "succeeded", -5, 5)  # started before
    add_run(session, tenant_id, "incremental", "failed", 1, 2)
    add_run(session, tenant_id, "incremental", "running", 3, None)
    add_run(session, tenant_id, "preview", "succeeded", 4, 6)  # reads no changes in
    add_run(session, tenant_id, "single", "succeeded", 7, 8)
    add_run(session, other, "full", "succeeded", 9, 10)  # another tenant's
    session.commit()
    assert sync_status.first_round_completed_since(session, tenant_id, BOUNDARY) is None
    assert sync_status.first_round_completed_since(session, other, BOUNDARY) == minutes(10)


def test_the_first_round_started_since_the_boundary_gives_its_finish(
        session: Session, tenant_ids: tuple[str, str]) -> None:
    tenant_id, _ = tenant_ids
    add_run(session, tenant_id, "incremental", "succeeded", 30, 35)
    add_run(session, tenant_id, "full", "succeeded", 10, 50)  # started first, ended last
    add_run(session, tenant_id, "incremental", "failed", 5, 6)
    session.commit()
    assert sync_status.first_round_completed_since(session, tenant_id, BOUNDARY) == minutes(50)
    add_run(session, tenant_id, "incremental", "succeeded", 0, 2)  # at the boundary counts
    session.commit()
    assert sync_status.first_round_completed_since(session, tenant_id, BOUNDARY) == minutes(2)


def test_quarantine_is_read_as_stored(session: Session, tenant_ids: tuple[str, str]) -> None:
    tenant_id, other = tenant_ids
    assert sync_status.quarantined_until(session, tenant_id) is None  # never synced
    session.add(SyncState(tenant_id=tenant_id, quarantined_until=minutes(60 * 24),
                          failures=7, full_round=False))
    session.add(SyncState(tenant_id=other, failures=0, full_round=False))
    session.commit()
    until = sync_status.quarantined_until(session, tenant_id)
    assert until == minutes(60 * 24) and until.tzinfo is not None
    assert sync_status.quarantined_until(session, other) is None


RAW_REFUSED = ("HTTPSConnectionPool(host='login.microsoftonline.com', port=443): Max retries "
               "exceeded with url: /t/oauth2/v2.0/token (Caused by NewConnectionError('<urllib3"
               ".connection.HTTPSConnection object at 0x7f3a2c1d05d0>: Failed to establish a "
               "new connection: [Errno 111] Connection refused'))")
RAW_DNS = ("HTTPSConnectionPool(host='graph.microsoft.com', port=443): Max retries exceeded "
           "with url: /v1.0/users/delta (Caused by NameResolutionError(\"<urllib3.connection."
           "HTTPSConnection object at 0x7f>: Failed to resolve 'graph.microsoft.com' ([Errno -2]"
           " Name or service not known)\"))")


@pytest.mark.parametrize(("stored", "plain"), [
    (RAW_REFUSED, "Entra ID could not be reached: connection refused by "
                  "login.microsoftonline.com."),
    (RAW_DNS, "Entra ID could not be reached: the name graph.microsoft.com does not resolve."),
    ("ReadTimeout(ReadTimeoutError(\"HTTPSConnectionPool(host='graph.microsoft.com', "
     "port=443): Read timed out. (read timeout=30)\"))",
     "Entra ID could not be reached: graph.microsoft.com did not answer in time."),
    ("KeyError('value')", "The round stopped on an unexpected error. Run it again; if it "
                          "fails again, ask your partner admin to look at the detail on the "
                          "round's page."),
])
def test_old_raw_errors_are_put_in_plain_words_with_the_raw_text_as_detail(
        stored: str, plain: str) -> None:
    assert sync_status.plain_error(stored) == (plain, stored)


def test_plain_errors_and_marked_details_stay_as_they_are() -> None:
    words = "Graph refused the request (403): the app lacks User.Read.All."
    assert sync_status.plain_error(words) == (words, None)
    assert sync_status.plain_error(words + sync_status.DETAIL_MARK + "raw") == (words, "raw")
    assert sync_status.plain_error(None) == (None, None)


def test_health_gives_an_old_raw_error_in_plain_words(
        session: Session, tenant_ids: tuple[str, str]) -> None:
    one, _ = tenant_ids
    session.add(SyncRun(tenant_id=one, kind="incremental", status="failed", trigger="schedule",
                        started_at=minutes(1), finished_at=minutes(2), pages=0, counts={},
                        error=RAW_REFUSED))
    session.commit()
    assert sync_status.health(session, one).last_error == (
        "Entra ID could not be reached: connection refused by login.microsoftonline.com.")
