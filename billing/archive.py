"""Archive old events: move what no reader of the log still needs into a file.

    refusals(before) ──> why not (webhook endpoints behind, months a close may still fold)
    start / resume ───> event_archives row (writing)
    write_file ───────> events-before-YYYY-MM-N.jsonl.gz, its line count and SHA-256
                        (deleting)
    delete_archived ──> the same events deleted, a batch per transaction (done)

Which events may go, before a month's start `before` (UTC), recorded and effective
before it:

- events of kinds no month close reads (billing.fold's user kinds, memberships and
  groups' own changes are what it reads): the sync rounds' ends, the IdP's reports,
  tenant settings, tokens, closes, admin flags. Nothing folds them;
- every event of a user purged before `before` with nothing of it recorded since: a
  purged user never exists again (no SCIM write, sync or correction reaches it), so
  folding any month from `before` on gives it no line, with or without its history.
  A month before `before` that a close may still fold (not closed yet, or within the
  next close's look-back, `[billing] adjustment_months`) would lose that user's lines:
  the archive is refused until those months are closed and out of the look-back.
  Verifying or reissuing a month that started before `before` is refused for those
  tenants afterwards (`archived_before`): the file, or a backup taken before, holds it.

Every other event stays: a close folds a user from its whole history when something
late is learned about it, and a correction or an adjustment may come for any living
user (docs/operations.md, "Growth and archival", says why that is not the look-back).

Every event must also have been delivered to every webhook endpoint that serves its
tenant (enabled or not: a disabled one resumes from its position).

The file is gzip-compressed JSON, one event per line with the table's columns, tenant
by tenant in log order; written with a fixed header, so the same events give the same
bytes and the same SHA-256. The deletion then removes exactly those events (the same
selection, bounded by the file's largest id) in batches of short transactions. A run
stopped at any point (a crash, Ctrl-C) is resumed by running the command again: an
unfinished file is written again from the start, a deletion goes on where it stopped,
after checking that the file is still the one written.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    literal,
    not_,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from billing.calendar import Month
from billing.fold import USER_KINDS
from billing.reader import GROUP_KINDS, MEMBER_KINDS
from connector.config import BillingSettings
from connector.errors import DomainError
from connector.models import BillingClose, Event, EventArchive, Tenant, User, WebhookEndpoint

FOLDED_KINDS = (*USER_KINDS, *MEMBER_KINDS, *GROUP_KINDS)  # what a month close reads
COLUMNS = ("id", "tenant_id", "subject_type", "subject_id", "kind", "old_value",
           "new_value", "effective_at", "recorded_at", "source", "actor", "correlation_id",
           "object_id", "reason", "txid")
Progress = Callable[[str, int], None]  # (phase, events so far)


class ArchiveRefused(DomainError):
    """The archive cannot run now: the message lists why."""


@dataclass(frozen=True)
class Result:
    archive_id: int
    path: str
    events: int
    sha256: str
    deleted: int
    tenants: int  # tenants whose purged users' events went


def boundary(month: str) -> dt.datetime:
    """The instant an archive `--before YYYY-MM` stops at: that month's start, UTC."""
    return Month.parse(month).start("UTC")


# -- what may go ---------------------------------------------------------------------------


def _purged_users(tenant_id: str, before: dt.datetime) -> Any:
    """The tenant's users purged before `before` with nothing recorded about them since
    (nor effective since)."""
    since = exists().where(Event.tenant_id == tenant_id,
                           or_(Event.subject_id == User.id, Event.object_id == User.id),
                           or_(Event.recorded_at >= before, Event.effective_at >= before))
    return select(User.id).where(User.tenant_id == tenant_id, User.purged_at < before,
                                 not_(since))


def _archivable(tenant_id: str, before: dt.datetime, max_id: int | None = None
                ) -> list[ColumnElement[bool]]:
    purged = _purged_users(tenant_id, before)
    conditions = [
        Event.tenant_id == tenant_id, Event.recorded_at < before, Event.effective_at < before,
        or_(Event.kind.not_in(FOLDED_KINDS),
            and_(Event.subject_type == "user", Event.subject_id.in_(purged)),
            and_(Event.kind.in_(tuple(MEMBER_KINDS)), Event.object_id.in_(purged)))]
    if max_id is not None:
        conditions.append(Event.id <= max_id)
    return conditions


def _batches(maker: sessionmaker[Session], tenant_id: str, before: dt.datetime, size: int,
             max_id: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """The tenant's archivable events in log order (recorded time, id), `size` at a
    time through the index on (tenant, recorded time), each batch read in a short
    transaction of its own (nothing held between batches: no lock, no old snapshot)."""
    after: tuple[dt.datetime, int] | None = None
    columns = [getattr(Event, c) for c in COLUMNS]
    while True:
        query = select(*columns).where(*_archivable(tenant_id, before, max_id))
        if after is not None:
            query = query.where(tuple_(Event.recorded_at, Event.id) > tuple_(*after))
        with maker() as s:
            rows = [dict(zip(COLUMNS, row, strict=True)) for row in s.execute(
                query.order_by(Event.recorded_at, Event.id).limit(size))]
        if not rows:
            return
        yield rows
        after = (rows[-1]["recorded_at"], rows[-1]["id"])


def _has_purged(session: Session, tenant_id: str, before: dt.datetime) -> bool:
    """Whether the tenant has purged users' events to archive."""
    purged = _purged_users(tenant_id, before)
    return session.scalar(select(exists().where(
        Event.tenant_id == tenant_id, Event.recorded_at < before, Event.effective_at < before,
        or_(and_(Event.subject_type == "user", Event.subject_id.in_(purged)),
            and_(Event.kind.in_(tuple(MEMBER_KINDS)), Event.object_id.in_(purged)))))) or False


# -- what forbids it -------------------------------------------------------------------------


def months_needed_from(session: Session, tenant: Tenant, settings: BillingSettings,
                       now: dt.datetime) -> tuple[dt.datetime, Month]:
    """The start of the earliest month a close may still fold for the tenant, and that
    month: the earliest not closed yet (from the tenant's first month to the current
    one), or the earliest of the `adjustment_months` latest closed months (the next
    close's look-back), whichever is earlier."""
    tz = tenant.time_zone
    closed = set(session.scalars(select(BillingClose.month).where(
        BillingClose.tenant_id == tenant.id, BillingClose.state == "closed")))
    month, current = Month.containing(tenant.created_at, tz), Month.containing(now, tz)
    earliest: Month | None = None
    while str(month) <= str(current):
        if str(month) not in closed:
            earliest = month
            break
        month = month.next()
    look_back = sorted(closed, reverse=True)[:settings.adjustment_months]
    candidates = [m for m in [earliest, *(Month.parse(m) for m in look_back)] if m]
    first = min(candidates, key=str) if candidates else current
    return first.start(tz), first


def refusals(session: Session, before: dt.datetime, settings: BillingSettings,
             now: dt.datetime) -> list[str]:
    """Why events before `before` cannot be archived now (empty: they can)."""
    if before > now:
        return [f"{before:%Y-%m} has not begun: archive only events before a past month."]
    reasons = []
    for endpoint in session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)):
        position = tuple_(literal(endpoint.cursor_txid), literal(endpoint.cursor_id))
        tenant_ids = ([endpoint.tenant_id] if endpoint.tenant_id is not None
                      else list(session.scalars(select(Tenant.id).order_by(Tenant.id))))
        for tenant_id in tenant_ids:
            if session.scalar(select(exists().where(
                    *_archivable(tenant_id, before),
                    tuple_(Event.txid, Event.id) > position))):
                state = "enabled" if endpoint.enabled else "disabled"
                reasons.append(
                    f"Webhook endpoint {endpoint.id} ({endpoint.url}, {state}) has not "
                    f"delivered events of tenant {tenant_id} from before {before:%Y-%m}: "
                    "let it catch up, or delete it if it is abandoned.")
                break
    for tenant in session.scalars(select(Tenant).order_by(Tenant.id)):
        if not _has_purged(session, tenant.id, before):
            continue
        needed, month = months_needed_from(session, tenant, settings, now)
        if needed < before:
            reasons.append(
                f"Tenant {tenant.id} ({tenant.name}): {month} may still be folded (not "
                f"closed yet, or within the next close's look-back of "
                f"{settings.adjustment_months} months) and it starts before "
                f"{before:%Y-%m}: archive before {month} at the latest, or close the "
                "months first.")
    return reasons


def archived_before(session: Session, tenant_id: str) -> dt.datetime | None:
    """The latest boundary before which the tenant's purged users' events were
    archived (or are being deleted): its months that started earlier cannot be folded
    again from the log. None: none were."""
    latest = None
    for before, tenants in session.execute(select(EventArchive.before, EventArchive.tenants)
                                           .where(EventArchive.state != "writing")):
        if tenant_id in tenants and (latest is None or before > latest):
            latest = before
    return latest


# -- the run -------------------------------------------------------------------------------


def start_or_resume(maker: sessionmaker[Session], before: dt.datetime, out_dir: Path,
                    settings: BillingSettings, now: dt.datetime, actor: str
                    ) -> EventArchive:
    """The unfinished archive of the same boundary, or a new one; ArchiveRefused if
    another boundary's is unfinished or the archive is refused now."""
    with maker() as s:
        unfinished = s.scalar(select(EventArchive).where(EventArchive.state != "done")
                              .order_by(EventArchive.id).limit(1))
        if unfinished is not None and unfinished.before != before:
            raise ArchiveRefused(
                f"Archive {unfinished.id} (before {unfinished.before:%Y-%m}, "
                f"{unfinished.state}) is unfinished: run it to its end first "
                f"(`connector events archive --before {unfinished.before:%Y-%m}`).")
        reasons = refusals(s, before, settings, now)
        if reasons:
            raise ArchiveRefused("Nothing archived:\n  " + "\n  ".join(reasons))
        if unfinished is not None:
            return unfinished
        archive = EventArchive(before=before, path="", state="writing", started_at=now,
                               started_by=actor, deleted=0, tenants=[])
        s.add(archive)
        s.flush()
        archive.path = str((out_dir / f"events-before-{before:%Y-%m}-{archive.id}.jsonl.gz")
                           .resolve())
        s.commit()
        s.refresh(archive)
        s.expunge(archive)
        return archive


def write_file(reader: sessionmaker[Session], writer: sessionmaker[Session],
               archive: EventArchive, batch: int, progress: Progress | None = None
               ) -> EventArchive:
    """Write the archivable events to the archive's file (again from the start when a
    run stopped while writing), then record its line count and SHA-256."""
    path = Path(archive.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    written, max_id, tenants = 0, 0, []
    with reader() as s:
        tenant_ids = list(s.scalars(select(Tenant.id).order_by(Tenant.id)))
    with open(partial, "wb") as raw:
        # mtime 0 and no name in the header: the same events make the same bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
            for tenant_id in tenant_ids:
                with reader() as s:
                    if _has_purged(s, tenant_id, archive.before):
                        tenants.append(tenant_id)
                for rows in _batches(reader, tenant_id, archive.before, batch):
                    out.write(b"".join(_line(row) for row in rows))
                    written += len(rows)
                    max_id = max(max_id, *(r["id"] for r in rows))
                    if progress:
                        progress("written", written)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, path)
    digest = file_sha256(path)
    with writer() as s:
        s.execute(update(EventArchive).where(EventArchive.id == archive.id).values(
            state="deleting", events=written, sha256=digest, max_event_id=max_id,
            tenants=tenants))
        s.commit()
    return _stored(writer, archive.id)


def _stored(maker: sessionmaker[Session], archive_id: int) -> EventArchive:
    with maker() as s:
        stored = s.get(EventArchive, archive_id)
        assert stored is not None
        s.expunge(stored)
        return stored


def _line(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row | {"effective_at": row["effective_at"].isoformat(),
                               "recorded_at": row["recorded_at"].isoformat()}) + b"\n"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def delete_archived(reader: sessionmaker[Session], writer: sessionmaker[Session],
                    archive: EventArchive, batch: int, now: dt.datetime,
                    progress: Progress | None = None) -> EventArchive:
    """Delete the archived events, `batch` per transaction, counting them on the
    archive's row in the same transaction; then mark it done. Refused if the file is
    not the one written."""
    path = Path(archive.path)
    if not path.exists() or file_sha256(path) != archive.sha256:
        raise ArchiveRefused(
            f"The archive file {path} is missing or is not the one written (SHA-256 "
            f"{archive.sha256}): no event deleted. Put the file back, or delete the "
            f"archive's row (event_archives id {archive.id}) to start over.")
    assert archive.max_event_id is not None
    deleted = archive.deleted
    with reader() as s:
        tenant_ids = list(s.scalars(select(Tenant.id).order_by(Tenant.id)))
    for tenant_id in tenant_ids:
        for rows in _batches(reader, tenant_id, archive.before, batch, archive.max_event_id):
            with writer() as s:
                done: Any = s.execute(delete(Event).where(
                    Event.id.in_([r["id"] for r in rows])))
                gone = int(done.rowcount or 0)
                s.execute(update(EventArchive).where(EventArchive.id == archive.id)
                          .values(deleted=EventArchive.deleted + gone))
                s.commit()
            deleted += gone
            if progress:
                progress("deleted", deleted)
    with writer() as s:
        s.execute(update(EventArchive).where(EventArchive.id == archive.id)
                  .values(state="done", finished_at=now))
        s.commit()
    return _stored(writer, archive.id)


def run(reader: sessionmaker[Session], writer: sessionmaker[Session], before: dt.datetime,
        out_dir: Path, settings: BillingSettings, now: dt.datetime, actor: str,
        batch: int = 5000, progress: Progress | None = None) -> Result:
    """Archive (or finish archiving) the events before `before`: file, then deletion."""
    archive = start_or_resume(writer, before, out_dir, settings, now, actor)
    if archive.state == "writing":
        archive = write_file(reader, writer, archive, batch, progress)
    if archive.state == "deleting":
        archive = delete_archived(reader, writer, archive, batch, now, progress)
    assert archive.events is not None and archive.sha256 is not None
    return Result(archive.id, archive.path, archive.events, archive.sha256, archive.deleted,
                  len(archive.tenants))


def read_file(path: Path) -> Iterator[dict[str, Any]]:
    """The events an archive file holds, as written (for checks and restores)."""
    with gzip.open(path, "rb") as f:
        for line in f:
            yield orjson.loads(line)
