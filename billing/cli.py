"""`connector billing …`: close, reissue, preview and show months from a terminal.

Wired into the `connector` command by `connector.cli` (the one place that joins the
packages' commands). A close shows its progress, and every message says what happened
and what to do next. Billing's own modules are imported by the commands that use them,
not here: every `connector` command builds this parser, and closing, catching up and
previewing months import the invoice, mail and export machinery (~0.25 s of CPU a
command that never bills).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from billing.calendar import InvalidMonth, Month
from connector import clock, db, migrate
from connector.actions import users as user_actions
from connector.admins import PARTNER, Principal
from connector.config import ConfigError, Settings
from connector.models import BillingAdjustment, BillingClose, Tenant


def add_commands(sub: Any) -> None:
    billing = sub.add_parser("billing", help="close months, preview, show invoices")
    bsub = billing.add_subparsers(metavar="ACTION")
    p = bsub.add_parser("close", help="close a tenant's month (does nothing if closed)")
    p.add_argument("--tenant", required=True, metavar="TENANT_ID")
    p.add_argument("--month", required=True, metavar="YYYY-MM")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_close)
    p = bsub.add_parser("close-due", help="close every month that is due, for every tenant "
                        "(what the scheduler does; catches up after downtime)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_close_due)
    p = bsub.add_parser("reissue", help="recompute a closed month as a new version")
    p.add_argument("--tenant", required=True, metavar="TENANT_ID")
    p.add_argument("--month", required=True, metavar="YYYY-MM")
    p.add_argument("--reason", required=True, help="why: kept with the new version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_reissue)
    p = bsub.add_parser("preview", help="the running month so far (not stored)")
    p.add_argument("--tenant", required=True, metavar="TENANT_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_preview)
    p = bsub.add_parser(
        "correct", help="record a back-dated correction of a user (billed back at the "
        "next close)",
        description="Record what held for a user from a past instant on, with a reason. "
        "Closed months stay as they are: the next close reverses and corrects them within "
        "billing.adjustment_months, and lists older ones in its report.")
    p.add_argument("--tenant", required=True, metavar="TENANT_ID")
    p.add_argument("--user", required=True, metavar="USER_ID")
    p.add_argument("--kind", required=True, choices=list(user_actions.CORRECTION_KINDS))
    p.add_argument("--value", help="status: active|inactive; guest, externalCompanyGuest: "
                   "true|false; modules: comma-separated names ('' for none); frontline: a "
                   "JSON object; deletion: none")
    p.add_argument("--effective", required=True, metavar="INSTANT",
                   help="when it took effect, ISO 8601 with a zone (2026-10-28T00:00:00Z)")
    p.add_argument("--reason", required=True, help="why: kept with the events and the "
                   "audit line, quoted on the adjustment lines")
    p.add_argument("--by", default="cli", metavar="NAME",
                   help="who records it, for the audit log (default: cli)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_correct)
    p = bsub.add_parser("trial", help="give a tenant a trial (30 days), by its start or "
                        "its last free day, or end it")
    p.add_argument("--tenant", required=True, metavar="TENANT_ID")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--starts-on", metavar="YYYY-MM-DD",
                      help="the trial's first day: it ends 29 days later")
    when.add_argument("--ends-on", metavar="YYYY-MM-DD", help="the trial's last free day")
    when.add_argument("--none", action="store_true", help="no trial")
    p.add_argument("--by", default="cli", metavar="NAME",
                   help="who changes it, for the audit log (default: cli)")
    p.set_defaults(handler=cmd_trial)
    reporting = sub.add_parser("reporting", help="provisioning keys of the reporting API")
    rsub = reporting.add_subparsers(metavar="ACTION")
    p = rsub.add_parser("create-key", help="make a provisioning key (shown once)")
    p.add_argument("name", help="who or what uses it, e.g. 'Power BI'")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_create_key)
    p = rsub.add_parser("list-keys", help="list provisioning keys (never the keys)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_list_keys)
    p = rsub.add_parser("revoke-key", help="revoke a provisioning key")
    p.add_argument("key_id")
    p.set_defaults(handler=cmd_revoke_key)
    p = bsub.add_parser("show", help="a closed month: totals, invoice, adjustments")
    p.add_argument("--tenant", required=True, metavar="TENANT_ID")
    p.add_argument("--month", required=True, metavar="YYYY-MM")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_show)
    p = bsub.add_parser("verify", help="fold closed months again from the event log and "
                        "check their hashes (after a restore, a migration, an audit)")
    p.add_argument("--tenant", metavar="TENANT_ID", help="one tenant (default: all)")
    p.add_argument("--month", metavar="YYYY-MM", help="one month (default: all closed)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_verify)
    # The event log's archival lives here: billing is what decides which events the
    # log must keep (billing.archive).
    events = sub.add_parser("events", help="the event log: archive old events to a file")
    esub = events.add_subparsers(metavar="ACTION", required=True)
    p = esub.add_parser(
        "archive", help="move events before a month that nothing still needs into a "
        "compressed JSON-lines file, then delete them (resumable)",
        description="Archive the events recorded and effective before --before (UTC) that "
        "no month close reads (sync rounds, IdP reports, settings, closes, admin flags) and "
        "every event of users purged before it. Refused while a webhook endpoint has not "
        "delivered them, or while a month a close may still fold starts before it. Run it "
        "again to resume a run that stopped (docs/operations.md, 'Growth and archival').")
    p.add_argument("--before", required=True, metavar="YYYY-MM",
                   help="archive events before this month's start (UTC)")
    p.add_argument("--out", default="var/archive", metavar="DIR",
                   help="where the file goes (default: var/archive)")
    p.add_argument("--batch", type=int, default=5000,
                   help="events read and deleted per transaction (default: 5000)")
    p.add_argument("--by", default="cli", metavar="NAME", help="who runs it (default: cli)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_events_archive)


def _makers(settings: Settings) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
    engine = db.make_engine(settings.database)
    migrate.upgrade(engine)
    return db.make_sessionmaker(engine), db.make_sessionmaker(engine, writes=True)


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except InvalidMonth as exc:
        raise ConfigError(str(exc)) from None


class _Progress:
    """Users folded so far, on one terminal line (nothing when output is JSON)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        rate = done / max(time.monotonic() - self.started, 1e-6)
        print(f"\r  {done:,} of {total:,} users folded ({rate:,.0f}/s)", end="",
              file=sys.stderr, flush=True)

    def end(self) -> None:
        if not self.quiet:
            print(file=sys.stderr)


def cmd_close(settings: Settings, args: argparse.Namespace) -> int:
    from billing import close as closing
    from billing.planning import NotDue

    _, writer = _makers(settings)
    month = _month(args.month)
    progress = _Progress(args.json)
    try:
        outcome = closing.close_month(writer, args.tenant, month, settings.billing, clock.now(),
                                      actor="cli", progress=progress)
    except NotDue as exc:
        progress.end()
        print(f"Not closed: {exc}", file=sys.stderr)
        return 3
    except LookupError as exc:
        raise ConfigError(f"{exc} See `connector tenant list`.") from None
    progress.end()
    return _report(outcome.close, outcome.created, outcome.adjustments, args.json)


def cmd_reissue(settings: Settings, args: argparse.Namespace) -> int:
    from billing import close as closing
    from billing.planning import NotDue

    _, writer = _makers(settings)
    if not args.reason.strip():
        raise ConfigError("--reason must say why the month is reissued.")
    progress = _Progress(args.json)
    try:
        outcome = closing.close_month(writer, args.tenant, _month(args.month),
                                      settings.billing, clock.now(), actor="cli",
                                      reissue_reason=args.reason.strip(), progress=progress)
    except NotDue as exc:
        progress.end()
        print(f"Not reissued: {exc}", file=sys.stderr)
        return 3
    progress.end()
    return _report(outcome.close, outcome.created, outcome.adjustments, args.json)


def _report(close: BillingClose, created: bool, adjustments: int, as_json: bool) -> int:
    from billing.overview import close_json

    if as_json:
        print(json.dumps({**close_json(close), "created": created}))
        return 0
    invoice = close.invoice or {}
    verb = "Closed" if created else "Already closed"
    print(f"{verb} {close.month} (version {close.version}) for tenant {close.tenant_id}: "
          f"{close.users_counted:,} users, {close.users_billable:,} billable, "
          f"USD {invoice.get('total', '0.00')}.")
    print(f"  hash {close.content_hash}")
    if adjustments:
        print(f"  {adjustments} adjustment line(s) for earlier months are on this invoice.")
    for note in (close.report or {}).get("notes", []):
        print(f"  note: {note}")
    if not created:
        print(f"  To correct it, reissue it: connector billing reissue --tenant "
              f"{close.tenant_id} --month {close.month} --reason '…'")
    print(f"  Details: connector billing show --tenant {close.tenant_id} --month {close.month}")
    return 0


class _PassProgress:
    """A close pass on one terminal line: tenants done of all, tenants/s, and the users
    of the tenant being folded when they close one at a time (nothing when output is
    JSON or not a terminal)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not sys.stderr.isatty()
        self.started = time.monotonic()
        self.tenants = self.users = ""
        self.shown, self.last = False, 0.0

    def tenant_done(self, done: int, total: int) -> None:
        rate = done / max(time.monotonic() - self.started, 1e-6)
        self.tenants, self.users = f"{done:,} of {total:,} tenants ({rate:,.1f}/s)", ""
        self._show(done == total)

    def user_done(self, tenant_id: str, month: str, done: int, total: int) -> None:
        self.users = f"; {tenant_id} {month}: {done:,} of {total:,} users"
        self._show(False)

    def _show(self, last: bool) -> None:
        if not self.quiet and (last or time.monotonic() - self.last >= 0.2):
            self.last = time.monotonic()
            print(f"\r\033[K  {self.tenants}{self.users}", end="", file=sys.stderr,
                  flush=True)
            self.shown = True

    def end(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def cmd_close_due(settings: Settings, args: argparse.Namespace) -> int:
    from billing import catch_up

    _, writer = _makers(settings)
    shown = _PassProgress(args.json)
    result = catch_up.close_due(writer, settings.billing, clock.now(), actor="cli",
                                progress=shown.user_done, tenants_progress=shown.tenant_done)
    shown.end()
    if args.json:
        print(json.dumps({
            "closed": [{"tenantId": t, "month": m, "created": o.created,
                        "hash": o.close.content_hash} for t, m, o in result.closed],
            "waiting": [{"tenantId": t, "month": m, "reason": r} for t, m, r in result.waiting],
            "failed": [{"tenantId": t, "month": m, "error": e} for t, m, e in result.failed]}))
    else:
        for tenant_id, month, outcome in result.closed:
            print(f"Closed {month} for {tenant_id}: {outcome.close.users_billable:,} billable,"
                  f" USD {outcome.close.invoice.get('total', '0.00')}.")
        for tenant_id, month, reason in result.waiting:
            print(f"Waiting: {month} for {tenant_id}: {reason}")
        for tenant_id, month, error in result.failed:
            print(f"FAILED: {month} for {tenant_id}: {error}", file=sys.stderr)
        if not (result.closed or result.waiting or result.failed):
            print("Nothing is due: every month whose collection window is over is closed.")
    return 1 if result.failed else 0


def cmd_preview(settings: Settings, args: argparse.Namespace) -> int:
    from billing.preview import preview

    reader, _ = _makers(settings)
    with reader() as s:
        tenant = s.get(Tenant, args.tenant)
        if tenant is None:
            raise ConfigError(f"No tenant {args.tenant}. See `connector tenant list`.")
        result = preview(s, tenant, clock.now())
    if args.json:
        print(json.dumps(result))
        return 0
    print("\n".join(preview_text(result)))
    return 0


def preview_text(result: dict[str, Any]) -> list[str]:
    """The running month as `connector billing preview` prints it. Units without a price
    are said to have none, as the billing page says, never estimated at USD 0.00."""
    lines = result["invoice"]["lines"]
    unpriced = sum(line["quantity"] for line in lines if not line["priced"])
    if unpriced and all(not line["priced"] for line in lines):
        estimate = (f"no prices set: {unpriced:,} billable unit(s) have no price, so there "
                    "is no amount to estimate (a partner admin sets the prices in the "
                    "billing info)")
    else:
        estimate = f"USD {result['invoice']['total']} estimated" + (
            f", not counting {unpriced:,} unit(s) without a price" if unpriced else "")
    return [f"{result['month']} so far (as of {result['asOf']}, policy {result['policy']}): "
            f"{result['usersCounted']:,} users, {result['usersBillable']:,} billable, "
            f"{estimate}. Not stored: the month closes after its end.",
            *(_line_text(line) for line in lines)]


def _line_text(line: dict[str, Any]) -> str:
    if not line.get("priced", True):
        return f"  {line['description']}: {line['quantity']} × no price set"
    return f"  {line['description']}: {line['quantity']} × {line['unitPrice']} = {line['amount']}"


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    from billing.overview import adjustment_json, close_json

    reader, _ = _makers(settings)
    month = _month(args.month)
    with reader() as s:
        versions = list(s.scalars(select(BillingClose).where(
            BillingClose.tenant_id == args.tenant, BillingClose.month == str(month),
            BillingClose.state != "building").order_by(BillingClose.version)))
        if not versions:
            print(f"{month} is not closed for tenant {args.tenant}. Close it with: connector "
                  f"billing close --tenant {args.tenant} --month {month}", file=sys.stderr)
            return 3
        current = versions[-1]
        adjustments = list(s.scalars(select(BillingAdjustment).where(
            BillingAdjustment.close_id == current.id).order_by(BillingAdjustment.id)))
    data = {**close_json(current),
            "versions": [{"version": v.version, "state": v.state, "hash": v.content_hash,
                          "closedAt": v.closed_at.isoformat() if v.closed_at else None,
                          "reason": v.reason} for v in versions],
            "adjustments": [adjustment_json(a) for a in adjustments]}
    if args.json:
        print(json.dumps(data))
        return 0
    invoice = current.invoice
    print(f"{current.month} for tenant {current.tenant_id}, version {current.version} "
          f"closed {data['closedAt']} by {current.closed_by}; hash {current.content_hash}")
    print(f"  {current.users_counted:,} users, {current.users_billable:,} billable "
          f"(policy {current.inputs.get('policy')}, time zone {current.inputs.get('timeZone')})")
    for line in invoice.get("lines", []) + invoice.get("adjustments", []):
        print(_line_text(line))
    print(f"  total USD {invoice.get('total')} (excl. tax)"
          + ("; may be paid by invoice" if invoice.get("invoicePaymentEligible") else ""))
    return 0


def cmd_create_key(settings: Settings, args: argparse.Namespace) -> int:
    from billing import reporting

    _, writer = _makers(settings)
    with writer() as s:
        try:
            row, key = reporting.create_key(s, args.name, "cli", clock.now())
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        s.commit()
        data = {**reporting.key_json(row), "key": key}
    if args.json:
        print(json.dumps(data))
        return 0
    print(f"Provisioning key {data['id']} ({data['name']}) made. The key, shown this once:")
    print(f"  {key}")
    print("Use it as 'Authorization: Bearer <key>' on /reporting/v1/… (e.g. "
          "GET /reporting/v1/months). To rotate it, make a new one, switch the BI tool "
          "over, then: connector reporting revoke-key " + data["id"])
    return 0


def cmd_list_keys(settings: Settings, args: argparse.Namespace) -> int:
    from billing import reporting
    from connector.models import ReportingKey

    reader, _ = _makers(settings)
    with reader() as s:
        rows = [reporting.key_json(r) for r in s.scalars(
            select(ReportingKey).order_by(ReportingKey.created_at))]
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print("No provisioning key yet: connector reporting create-key NAME")
    for row in [] if args.json else rows:
        state = f"revoked {row['revokedAt']}" if row["revokedAt"] else "active"
        print(f"{row['id']}  {row['name']}  {row['hint']}  made {row['createdAt']}  {state}")
    return 0


def cmd_revoke_key(settings: Settings, args: argparse.Namespace) -> int:
    from billing import reporting

    _, writer = _makers(settings)
    with writer() as s:
        row = reporting.revoke_key(s, args.key_id, clock.now())
        if row is None:
            raise ConfigError(f"No provisioning key {args.key_id}: see connector reporting "
                              "list-keys.")
        s.commit()
    print(f"Provisioning key {args.key_id} is revoked: requests with it now get 401.")
    return 0


def _cli_value(kind: str, text: str | None) -> Any:
    """`--value` as the correction's kind reads it."""
    if kind in ("guest", "externalCompanyGuest"):
        return {"true": True, "false": False}.get((text or "").strip().lower(), text)
    if kind == "modules":
        return [m.strip() for m in (text or "").split(",") if m.strip()]
    if kind == "frontline":
        try:
            return json.loads(text or "{}")
        except ValueError:
            raise ConfigError("--value for frontline must be a JSON object, e.g. "
                              "'{\"paidHourly\": true, \"frontlineRole\": \"medical\"}'."
                              ) from None
    return text


def cmd_correct(settings: Settings, args: argparse.Namespace) -> int:
    from connector import browse
    from connector.actions import AdminCall

    _, writer = _makers(settings)
    correction = user_actions.correction_of(args.kind, _cli_value(args.kind, args.value),
                                            args.effective, args.reason)
    principal = Principal("", args.by, PARTNER, None, "cli")
    with writer() as s:
        call = AdminCall(s, principal, clock.now(), f"cli-{uuid.uuid4()}")
        user, changed = user_actions.correct_user(call, args.tenant, args.user, correction)
        recorded = browse.user_history(s, args.tenant, args.user,
                                       correlation_id=call.correlation_id)
        name = user.user_name
        s.commit()
    if args.json:
        print(json.dumps({"userId": args.user, "currentStateChanged": changed,
                          "events": recorded}))
        return 0
    when = correction.effective_at.isoformat()
    print(f"Recorded: {args.kind} of {name} corrected from {when} "
          f"({len(recorded)} event(s)); its current state "
          f"{'changed too' if changed else 'stays (something later has the last word)'}.")
    print("  The next close bills it back; see it with connector billing show --tenant "
          f"{args.tenant} --month YYYY-MM once that month is closed.")
    return 0


def cmd_trial(settings: Settings, args: argparse.Namespace) -> int:
    from billing import actions as billing_actions
    from connector.actions import AdminCall

    _, writer = _makers(settings)
    changes = ({"trial_starts_on": args.starts_on} if args.starts_on else
               {"trial_ends_on": "" if args.none else args.ends_on})
    with writer() as s:
        call = AdminCall(s, Principal("", args.by, PARTNER, None, "cli"), clock.now(),
                         f"cli-{uuid.uuid4()}")
        profile = billing_actions.update_billing(call, args.tenant, changes)
        ends_on = profile.trial_ends_on
        s.commit()
    if ends_on is None:
        print(f"Tenant {args.tenant} has no trial: every month is billed as its policy says.")
    else:
        print(f"Tenant {args.tenant}'s trial ends on {ends_on.isoformat()} (its last free "
              "day); billing starts on the 1st of the month after. Closed months keep what "
              "they were closed with.")
    return 0


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Every closed month (every version) folded again from the event log: its hash must
    be the one it was closed with. Exit 0 when all match, 4 when one does not."""
    from billing import archive
    from billing.verify import recompute_hash

    reader, _ = _makers(settings)
    month = _month(args.month) if args.month else None
    with reader() as s:
        query = select(BillingClose.id).where(BillingClose.state != "building")
        if args.tenant:
            query = query.where(BillingClose.tenant_id == args.tenant)
        if month is not None:
            query = query.where(BillingClose.month == str(month))
        ids = list(s.scalars(query.order_by(BillingClose.tenant_id, BillingClose.month,
                                            BillingClose.version)))
    results, archived = [], []
    started = time.monotonic()
    for done, close_id in enumerate(ids, 1):
        with reader() as s:
            close = s.get(BillingClose, close_id)
            assert close is not None
            through = archive.archived_before(s, close.tenant_id)
            if through is not None and close.window_start < through:
                archived.append({"tenant": close.tenant_id, "month": close.month,
                                 "version": close.version})
                continue
            again = recompute_hash(s, close)
            results.append({"tenant": close.tenant_id, "month": close.month,
                            "version": close.version, "hash": close.content_hash,
                            "recomputed": again, "ok": again == close.content_hash})
        if not args.json and (done == len(ids) or time.monotonic() - started > 2):
            print(f"  verified {done:,} of {len(ids):,} closed months", file=sys.stderr)
            started = time.monotonic()
    bad = [r for r in results if not r["ok"]]
    if args.json:
        print(json.dumps({"verified": len(results), "mismatches": bad,
                          "archived": archived}))
        return 4 if bad else 0
    if archived:
        print(f"{len(archived):,} closed months began before their tenant's events were "
              "archived (`connector events archive`): not verified from the log; the "
              "archive file, or a backup taken before it, holds what they were folded from.")
    if not results:
        print("No closed month to verify.")
    else:
        for r in bad:
            print(f"MISMATCH {r['month']} v{r['version']} of tenant {r['tenant']}: closed "
                  f"with {r['hash']}, folds to {r['recomputed']} now. The event log or the "
                  "close's inputs changed since it was closed: restore them from a backup.")
        print(f"{len(results) - len(bad):,} of {len(results):,} closed months verify "
              "(the same hash folded again from the event log).")
    return 4 if bad else 0


def cmd_events_archive(settings: Settings, args: argparse.Namespace) -> int:
    """Archive (or resume archiving) the events before a month: exit 0 when done, 1
    when refused (the reasons on stderr)."""
    from billing import archive

    if args.batch < 1:
        raise ConfigError("--batch must be 1 or more.")
    before = archive.boundary(str(_month(args.before)))
    reader, writer = _makers(settings)
    shown = {"at": 0.0}

    def progress(phase: str, count: int) -> None:
        if not args.json and time.monotonic() - shown["at"] > 2:
            print(f"  {count:,} events {phase}", file=sys.stderr)
            shown["at"] = time.monotonic()

    result = archive.run(reader, writer, before, Path(args.out), settings.billing,
                         clock.now(), args.by, args.batch, progress)
    if args.json:
        print(json.dumps({"archive": result.archive_id, "file": result.path,
                          "events": result.events, "sha256": result.sha256,
                          "deleted": result.deleted, "tenantsWithPurgedUsers": result.tenants}))
        return 0
    print(f"Archived {result.events:,} events from before {before:%Y-%m} to {result.path}\n"
          f"  sha256 {result.sha256}\n"
          f"  deleted from the log: {result.deleted:,}")
    if result.deleted != result.events:
        print(f"  note: {result.events - result.deleted:,} of the file's events were no longer "
              "in the log when deleted (a tenant purged meanwhile?).")
    if result.tenants:
        print(f"  {result.tenants:,} tenants' purged users went: their months before "
              f"{before:%Y-%m} are no longer verified or reissued from the log.")
    return 0
