"""`connector events archive` (issue 19, point 5; billing.archive): what it refuses, what
it moves to the file and deletes, that a stopped run resumes, and that closed months
still verify to their hashes afterwards."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, func, select

from billing import archive
from billing.calendar import Month
from billing.close import close_month
from billing.fold import USER_KINDS
from billing.planning import NotDue
from billing.reader import GROUP_KINDS, MEMBER_KINDS
from billing.verify import recompute_hash
from connector.config import BillingSettings
from connector.db import make_sessionmaker
from connector.models import BillingClose, Event, EventArchive, Tenant, User, WebhookEndpoint
from connector.status import Source
from tests.billing.history import History, at

SETTINGS = BillingSettings()  # adjustment_months = 2
NOW = at("2026-07-10T12:00:00")
FOLDED = {*USER_KINDS, *MEMBER_KINDS, *GROUP_KINDS}


class Crash(Exception):
    """Stands for the process dying mid-way (the progress callback is called between
    transactions, where a crash or Ctrl-C lands)."""


def _scenario(engine: Engine, close_through: int = 6) -> dict[str, str]:
    """A tenant since January 2026: `kept` (active, Hybrid, made an admin), `gone`
    (removed and purged in February) both in the group Sales (Engage); months January
    to `close_through` closed."""
    h = History(engine, "2026-01-01T00:00:00")
    h.billing("2026-01-01T01:00:00", prices=[{"unit": "Hybrid", "plan": "standard",
                                               "price": "5.00"}])
    kept = h.create("2026-01-02T10:00:00", "kept@x.io", modules=("Hybrid",))
    gone = h.create("2026-01-02T10:00:00", "gone@x.io", modules=("Hybrid",))
    group = h.group("2026-01-03T10:00:00", "Sales", modules=("Engage",), members=(kept, gone))
    h.update("2026-01-04T10:00:00", kept, admin=True)  # user.admin: no close reads it
    h.remove("2026-02-10T10:00:00", gone)
    with h.directory("2026-02-15T10:00:00", Source.ADMIN) as d:
        user = d.session.get(User, (h.tenant_id, gone))
        assert user is not None
        d.purge_user(user)
    h.set_active("2026-06-10T10:00:00", kept, False)
    h.set_active("2026-06-12T10:00:00", kept, True)
    for n in range(1, close_through + 1):
        month = Month(2026, n)
        close_month(h.maker, h.tenant_id, month, SETTINGS,
                    month.end("UTC") + dt.timedelta(hours=1))
    return {"tenant": h.tenant_id, "kept": kept, "gone": gone, "group": group}


def _hashes(engine: Engine, tenant_id: str) -> dict[str, str]:
    with make_sessionmaker(engine)() as s:
        return {c.month: c.content_hash for c in s.scalars(select(BillingClose).where(
            BillingClose.tenant_id == tenant_id, BillingClose.state == "closed"))}


def _events(engine: Engine) -> list[Event]:
    with make_sessionmaker(engine)() as s:
        return list(s.scalars(select(Event).order_by(Event.id)))


def _run(engine: Engine, out: Path, before: str = "2026-05", batch: int = 3,
         progress: archive.Progress | None = None) -> archive.Result:
    return archive.run(make_sessionmaker(engine), make_sessionmaker(engine, writes=True),
                       archive.boundary(before), out, SETTINGS, NOW, "test", batch, progress)


def test_archives_what_no_close_reads_and_purged_users_then_months_still_verify(
        engine: Engine, tmp_path: Path) -> None:
    ids = _scenario(engine)
    other = History(engine, "2026-03-01T00:00:00", name="Never closed")
    other_user = other.create("2026-03-02T10:00:00", "o@x.io")
    hashes = _hashes(engine, ids["tenant"])
    before_run = _events(engine)
    b = archive.boundary("2026-05")

    result = _run(engine, tmp_path)

    expected = [e for e in before_run if e.recorded_at < b and e.effective_at < b and (
        e.kind not in FOLDED or ids["gone"] in (e.subject_id, e.object_id))]
    assert expected and result.events == result.deleted == len(expected)
    assert result.tenants == 1  # only the first tenant had purged users
    lines = list(archive.read_file(Path(result.path)))
    assert [row["id"] for row in lines] == [e.id for e in sorted(
        expected, key=lambda e: (e.tenant_id, e.recorded_at, e.id))]
    assert set(lines[0]) == set(archive.COLUMNS)
    by_id = {e.id: e for e in expected}
    for row in lines:
        event = by_id[row["id"]]
        assert (row["kind"], row["subject_id"], row["new_value"], row["txid"]) == (
            event.kind, event.subject_id, event.new_value, event.txid)
        assert dt.datetime.fromisoformat(row["recorded_at"]) == event.recorded_at
    kinds = {row["kind"] for row in lines}
    assert {"tenant.created", "user.admin", "user.purged", "group.member_added",
            "user.created"} <= kinds
    # The folded kinds that went are all the purged user's; the other tenant's went
    # too where no close reads them, though it never closed a month.
    assert all(ids["gone"] in (row["subject_id"], row["object_id"]) for row in lines
               if row["kind"] in FOLDED)
    assert any(row["tenant_id"] == other.tenant_id for row in lines)
    assert archive.file_sha256(Path(result.path)) == result.sha256
    left = {e.id for e in _events(engine)}
    assert left == {e.id for e in before_run} - set(by_id)
    assert {e.subject_id for e in _events(engine) if e.kind == "user.created"} >= {
        ids["kept"], other_user}

    # Closed months from the boundary on fold again to their hashes, from the whole
    # log and from kept states; the ones before are reported, never mismatched.
    with make_sessionmaker(engine)() as s:
        for close in s.scalars(select(BillingClose).where(
                BillingClose.tenant_id == ids["tenant"], BillingClose.month >= "2026-05")):
            assert recompute_hash(s, close) == hashes[close.month]
            assert recompute_hash(s, close, carry=True) == hashes[close.month]
        assert archive.archived_before(s, ids["tenant"]) == b
        assert archive.archived_before(s, other.tenant_id) is None
    july = close_month(make_sessionmaker(engine, writes=True), ids["tenant"], Month(2026, 7),
                       SETTINGS, at("2026-08-01T01:00:00"))
    assert july.created and july.close.users_counted == 1
    with pytest.raises(NotDue, match="archived"):
        close_month(make_sessionmaker(engine, writes=True), ids["tenant"], Month(2026, 3),
                    SETTINGS, NOW, reissue_reason="audit")
    assert _hashes(engine, ids["tenant"]) == hashes | {"2026-07": july.close.content_hash}

    # Running it again finds nothing more to archive for that boundary.
    again = _run(engine, tmp_path)
    assert again.archive_id != result.archive_id and again.events == again.deleted == 0


def test_refused_while_a_month_before_the_boundary_may_still_be_folded(
        engine: Engine, tmp_path: Path) -> None:
    ids = _scenario(engine, close_through=3)  # April to June not closed yet
    events = len(_events(engine))
    with pytest.raises(archive.ArchiveRefused) as refused:
        _run(engine, tmp_path, "2026-05")
    # February and March are the next close's look-back; April is not closed.
    assert f"Tenant {ids['tenant']}" in str(refused.value)
    assert "2026-02 may still be folded" in str(refused.value)
    assert "archive before 2026-02 at the latest" in str(refused.value)
    assert len(_events(engine)) == events and not list(tmp_path.iterdir())
    with make_sessionmaker(engine)() as s:
        assert s.scalar(select(func.count()).select_from(EventArchive)) == 0
    # Before February: the purged user was removed and purged in February, so its
    # January stays (a user's history goes whole or not at all); the rest goes.
    done = _run(engine, tmp_path, "2026-02")
    assert done.deleted > 0 and done.tenants == 0
    assert ids["gone"] in {e.subject_id for e in _events(engine) if e.kind == "user.created"}
    with pytest.raises(archive.ArchiveRefused, match="has not begun"):
        _run(engine, tmp_path, "2026-08")


def test_refused_while_a_webhook_endpoint_has_not_delivered_them(
        engine: Engine, tmp_path: Path) -> None:
    ids = _scenario(engine)
    maker = make_sessionmaker(engine, writes=True)
    with maker() as s:
        s.add(WebhookEndpoint(id="ep-1", tenant_id=ids["tenant"], url="https://hooks.test/x",
                              event_types=[], secret_encrypted="sealed", enabled=False,
                              cursor_txid=0, cursor_id=0, next_attempt_at=NOW,
                              created_at=NOW, updated_at=NOW))
        s.commit()
    with pytest.raises(archive.ArchiveRefused, match="Webhook endpoint ep-1 .*disabled"):
        _run(engine, tmp_path)
    with maker() as s:  # delivered up to the tenant's newest event: nothing in the way
        txid, newest = s.execute(select(Event.txid, Event.id).where(
            Event.tenant_id == ids["tenant"]).order_by(Event.txid.desc(), Event.id.desc())
            .limit(1)).one()
        endpoint = s.get(WebhookEndpoint, "ep-1")
        assert endpoint is not None
        endpoint.cursor_txid, endpoint.cursor_id = txid, newest
        s.commit()
    assert _run(engine, tmp_path).deleted > 0


def test_a_run_stopped_while_writing_or_deleting_resumes_to_the_same_result(
        engine: Engine, tmp_path: Path) -> None:
    ids = _scenario(engine)
    hashes = _hashes(engine, ids["tenant"])
    total = len(_events(engine))

    def crash_at(phase: str, after: int) -> archive.Progress:
        def progress(seen: str, count: int) -> None:
            if seen == phase and count >= after:
                raise Crash
        return progress

    with pytest.raises(Crash):
        _run(engine, tmp_path, progress=crash_at("written", 3))
    assert len(_events(engine)) == total  # nothing deleted before the file is whole
    with pytest.raises(archive.ArchiveRefused, match="unfinished"):
        _run(engine, tmp_path, "2026-04")
    with pytest.raises(Crash):
        _run(engine, tmp_path, progress=crash_at("deleted", 3))
    with make_sessionmaker(engine)() as s:
        stopped = s.scalars(select(EventArchive)).one()
        assert stopped.state == "deleting" and stopped.deleted == 3
    assert len(_events(engine)) == total - 3
    # The file may not change under a deletion in progress.
    original = Path(stopped.path).read_bytes()
    Path(stopped.path).write_bytes(original[:-1])
    with pytest.raises(archive.ArchiveRefused, match="not the one written"):
        _run(engine, tmp_path)
    Path(stopped.path).write_bytes(original)

    result = _run(engine, tmp_path)
    assert result.archive_id == stopped.id and result.sha256 == stopped.sha256
    assert result.deleted == result.events == stopped.events
    assert len(_events(engine)) == total - result.events
    assert not list(tmp_path.glob("*.partial"))
    assert _hashes(engine, ids["tenant"]) == hashes
    with make_sessionmaker(engine)() as s:
        for close in s.scalars(select(BillingClose).where(BillingClose.month >= "2026-05")):
            assert recompute_hash(s, close) == hashes[close.month]


def test_the_same_events_make_the_same_file(engine: Engine, tmp_path: Path) -> None:
    _scenario(engine)
    first = _run(engine, tmp_path / "a")
    # Written again from the events it holds (a resumed run rewrites the file whole):
    # the bytes depend on the events only.
    rows = list(archive.read_file(Path(first.path)))
    again = tmp_path / "again.jsonl.gz"
    with open(again, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                 mtime=0) as out:
        out.write(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    assert archive.file_sha256(again) == first.sha256


def test_the_command_prints_the_count_and_checksum_and_verify_reports_archived_months(
        engine: Engine, database_url: str, tmp_path: Path) -> None:
    ids = _scenario(engine)
    env = {**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "none.toml"),
           "CONNECTOR_DATABASE__URL": database_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "connector.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    done = cli("events", "archive", "--before", "2026-05", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    with make_sessionmaker(engine)() as s:
        row = s.scalars(select(EventArchive)).one()
    assert row.state == "done" and row.events and row.sha256
    assert f"Archived {row.events:,} events from before 2026-05 to {row.path}" in done.stdout
    assert f"sha256 {row.sha256}" in done.stdout
    assert archive.file_sha256(Path(row.path)) == row.sha256
    assert sum(1 for _ in archive.read_file(Path(row.path))) == row.events
    verified = cli("billing", "verify", "--json")
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["verified"] == 2 and report["mismatches"] == []  # May and June
    assert sorted(a["month"] for a in report["archived"]) == [f"2026-0{n}" for n in range(1, 5)]
    assert all(a["tenant"] == ids["tenant"] for a in report["archived"])
    refused = cli("events", "archive", "--before", "2030-01")
    assert refused.returncode == 1 and "has not begun" in refused.stderr
    with make_sessionmaker(engine)() as s:
        assert s.get(Tenant, ids["tenant"]) is not None
