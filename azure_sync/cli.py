"""`connector sync …`: register a tenant's Entra app, run a round, show the rounds.

Wired into the `connector` command by `connector.cli` (the one place that joins the
packages' commands). The sync's own modules are imported by the commands that use them,
not here: every `connector` command builds this parser, and msal and cryptography are
slow to import for a command that never talks to Entra.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector import clock, db, migrate, sync_status, tenants
from connector.config import ConfigError, Settings
from connector.errors import InvalidFields
from connector.models import EntraRegistration, SyncRun, SyncState

if TYPE_CHECKING:
    from azure_sync.service import SyncService


def add_commands(sub: Any) -> None:
    sync = sub.add_parser("sync", help="Entra ID sync: register an app, run a round, status")
    ssub = sync.add_subparsers(metavar="ACTION")
    p = ssub.add_parser("register", help="set a tenant's Entra app registration")
    p.add_argument("--tenant", required=True, metavar="TENANT_ID")
    p.add_argument("--directory-id", required=True, help="the Entra tenant id (or domain)")
    p.add_argument("--client-id", required=True, help="the app registration's client id")
    cred = p.add_mutually_exclusive_group()
    cred.add_argument("--secret-stdin", action="store_true",
                      help="read the client secret from standard input")
    cred.add_argument("--certificate", metavar="PEM_FILE",
                      help="private key and certificate in one PEM file")
    p.add_argument("--authority-host", help="e.g. https://login.microsoftonline.us")
    p.add_argument("--graph-base-url", help="e.g. https://graph.microsoft.us")
    p.add_argument("--interval-minutes", type=int)
    p.add_argument("--scope-domain", action="append", metavar="DOMAIN",
                   help="sync only users of this domain (repeat for several)")
    p.add_argument("--scope-group", action="append", metavar="GROUP_OBJECT_ID",
                   help="sync only members of this Entra group (repeat for several)")
    p.add_argument("--scope-group-mode", choices=("direct", "transitive"),
                   help="count direct members only (default), or members of nested groups too")
    p.add_argument("--soft-delete", choices=("disable", "remove"),
                   help="a user deleted in Entra ID turns inactive (default, as Entra's own "
                   "provisioning) or is removed at once")
    p.add_argument("--matching-attribute", choices=("userPrincipalName", "mail", "employeeId"),
                   help="how a new Entra user finds an existing account to take over "
                   "(default userPrincipalName)")
    p.set_defaults(handler=cmd_register)
    p = ssub.add_parser("run", help="run (or resume) one round now, showing progress")
    p.add_argument("--tenant", required=True, metavar="TENANT_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_run)
    p = ssub.add_parser("restart", help="restart provisioning: forget the cursors and run "
                        "a full round now, showing progress")
    p.add_argument("--tenant", required=True, metavar="TENANT_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_restart)
    p = ssub.add_parser("status", help="registrations, last rounds, quarantine")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)


def make_service(settings: Settings) -> SyncService:
    """The process's sync service on a migrated database (for `run`, the worker and the
    scheduler inside `connector serve`)."""
    from azure_sync.service import SyncService

    engine = db.make_engine(settings.database)
    migrate.upgrade(engine)
    return SyncService(settings.azure_sync, db.make_sessionmaker(engine),
                       db.make_sessionmaker(engine, writes=True))


@contextlib.contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    """A session on a migrated database; its engine's connections close with it."""
    engine = db.make_engine(settings.database)
    try:
        migrate.upgrade(engine)
        with db.make_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()


def cmd_register(settings: Settings, args: argparse.Namespace) -> int:
    from azure_sync import service as sync_service
    from connector.events import WriteContext
    from connector.status import Source

    secret = sys.stdin.readline().strip() if args.secret_stdin else None
    if args.secret_stdin and not secret:
        raise ConfigError("No client secret on standard input.")
    pem = _read_certificate(args.certificate) if args.certificate else None
    with _session(settings) as session:
        tenants.named_tenant(session, args.tenant)
        ctx = WriteContext(args.tenant, Source.ADMIN, "cli", "cli", clock.now())
        try:
            registration = sync_service.register(
                session, settings.azure_sync, ctx, directory_id=args.directory_id,
                client_id=args.client_id, secret=secret, certificate_pem=pem,
                authority_host=args.authority_host, graph_base_url=args.graph_base_url,
                interval_minutes=args.interval_minutes, scope_domains=args.scope_domain,
                scope_groups=args.scope_group, scope_group_mode=args.scope_group_mode,
                soft_delete=args.soft_delete, matching_attribute=args.matching_attribute)
        except InvalidFields as refused:  # in the form's words: name the options too
            raise ConfigError(" ".join(f"{REGISTER_OPTIONS.get(field, field)}: {message}"
                                       for field, message in refused.errors.items())
                              ) from None
        session.commit()
        print(f"Tenant {args.tenant} syncs from Entra tenant {registration.directory_id} "
              f"with app {registration.client_id} every {registration.interval_minutes} min.")
    print(f"Run a first round now with: connector sync run --tenant {args.tenant}")
    return 0


# The registration's fields (as the service and the form name them) → this command's options.
REGISTER_OPTIONS = {
    "directory_id": "--directory-id", "client_id": "--client-id",
    "client_secret": "--secret-stdin or --certificate", "authority_host": "--authority-host",
    "graph_base_url": "--graph-base-url", "interval_minutes": "--interval-minutes",
    "scope_domains": "--scope-domain", "scope_groups": "--scope-group",
    "scope_group_mode": "--scope-group-mode", "soft_delete": "--soft-delete",
    "matching_attribute": "--matching-attribute"}


def _read_certificate(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}.") from None


def cmd_restart(settings: Settings, args: argparse.Namespace) -> int:
    service = make_service(settings)
    try:
        return _restart(service, settings, args)
    finally:
        _dispose(service)


def _dispose(service: SyncService) -> None:
    """Close the command's connections (a test runs commands in its own process)."""
    bind = service.maker.kw.get("bind")
    if bind is not None:
        bind.dispose()


def _restart(service: SyncService, settings: Settings, args: argparse.Namespace) -> int:
    from azure_sync import decisions

    with service.maker() as s:
        tenant = tenants.named_tenant(s, args.tenant, lock=True)
        if s.get(EntraRegistration, args.tenant) is None:
            raise ConfigError(f"Tenant {args.tenant} has no Entra app registration; register "
                              "one first (connector sync register).")
        if tenant.provisioning_paused:
            raise ConfigError("Provisioning is paused, so Entra ID sync does not run: resume "
                              "provisioning, then restart.")
        decisions.restart(s, args.tenant, clock.now())
        s.commit()
    if not args.json:
        print(f"Provisioning restarted for tenant {args.tenant}: the cursors are dropped and a "
              "full round reads every user and group again.")
    return _run_round(settings, service, args, "restart")


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    service = make_service(settings)
    try:
        with service.maker() as s:
            tenants.named_tenant(s, args.tenant)
        return _run_round(settings, service, args, "manual")
    finally:
        _dispose(service)


def _run_round(settings: Settings, service: SyncService, args: argparse.Namespace,
               trigger: str) -> int:
    from azure_sync import rounds

    started = time.monotonic()

    def progress(pages: int, phase: str) -> None:
        if not args.json:
            print(f"\r  {phase}: {pages} pages read ({time.monotonic() - started:.0f} s)",
                  end="", flush=True)

    options = rounds.RoundOptions(
        lease_seconds=settings.azure_sync.lease_seconds,
        max_pages=settings.azure_sync.max_pages_per_round,
        quarantine_after=settings.azure_sync.quarantine_after_failures, after_page=progress,
        read_ahead=settings.azure_sync.read_ahead,
        pipeline=settings.azure_sync.pipeline)
    result = service.run(args.tenant, trigger, options)
    kept = _kept_items(service, args.tenant)
    failed = _failed_items(service, args.tenant, result.run_id)
    still_kept = {item["objectId"] for item in kept}
    for entry in failed:  # a page's failure the round's end then applied (a swap…)
        entry["appliedLater"] = bool(entry["objectId"]) and entry["objectId"] not in still_kept
    run = _run_facts(service, args.tenant, result.run_id)
    if args.json:
        print(json.dumps({"run_id": result.run_id, "status": result.status,
                          "pages": result.pages, "counts": result.counts,
                          "error": result.error, "kept": kept, "failed": failed, **run}))
    else:
        print()
        kind = f" ({run['kind']})" if run.get("kind") else ""
        print(f"Round {result.run_id}{kind}: {result.status} after {result.pages} pages "
              f"in {time.monotonic() - started:.1f} s.")
        if replaced := run.get("replaced"):
            print(f"  Graph no longer had the delta state, so run {replaced['run_id']} "
                  "started over as this full round (every user and group read again): "
                  f"{replaced['reason']}")
        if result.counts:
            print("  " + ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items())))
        if result.error:
            print(f"  {result.error}")
        if failed:
            later = sum(1 for entry in failed if entry["appliedLater"])
            print(f"{len(failed)} item(s) failed in this round (provisioning log)"
                  + (f"; {later} of them applied at the round's end" if later else "") + ":")
            for entry in failed[:KEPT_PRINTED]:
                name = f" {entry['name']}" if entry["name"] else ""
                print(f"  {entry['operation']} {entry['objectId'] or entry['userId'] or '-'}"
                      f"{name}: {entry['reason']} [{entry['code']}]"
                      + (" (applied at the round's end)" if entry["appliedLater"] else ""))
            if len(failed) > KEPT_PRINTED:
                print(f"  … and {len(failed) - KEPT_PRINTED} more (--json lists them all).")
        if kept:
            print(f"{len(kept)} object(s) could not be applied and are kept; every round "
                  "tries them again (none is treated as deleted):")
            for item in kept[:KEPT_PRINTED]:
                name = f" {item['userName']}" if item["userName"] else ""
                print(f"  {item['kind']} {item['objectId']}{name}: {item['reason']} "
                      f"[{item['code']}]")
            if len(kept) > KEPT_PRINTED:
                print(f"  … and {len(kept) - KEPT_PRINTED} more (--json lists them all).")
        if result.status == "awaiting_approval":
            print("  The round is held: approve or reject it in the admin UI (Entra ID sync "
                  "tab) or the API (POST …/entra/runs/{id}/approve).")
    return 0 if result.status in ("succeeded", "awaiting_approval") else 1


KEPT_PRINTED = 20


def _run_facts(service: SyncService, tenant_id: str, run_id: int | None) -> dict[str, Any]:
    """The run's kind and trigger; for a round Graph's resync started over, the run it
    replaced and why (`replaced`)."""
    if run_id is None:
        return {}
    with service.maker() as s:
        run = s.get(SyncRun, run_id)
        if run is None:
            return {}
        facts: dict[str, Any] = {"kind": run.kind, "trigger": run.trigger}
        if run.trigger == "resync":
            before = s.scalar(select(SyncRun).where(
                SyncRun.tenant_id == tenant_id, SyncRun.id < run_id)
                .order_by(SyncRun.id.desc()).limit(1))
            if before is not None and before.status == "replaced":
                facts["replaced"] = {"run_id": before.id,
                                     "reason": sync_status.plain_error(before.error)[0]}
        return facts


def _failed_items(service: SyncService, tenant_id: str, run_id: int | None
                  ) -> list[dict[str, Any]]:
    """The run's failed items, from the provisioning log (by the run's id)."""
    from connector import provlog

    if run_id is None:
        return []
    with service.maker() as s:
        return [provlog.entry_json(e) for e in provlog.run_failures(s, tenant_id, run_id)]


def _kept_items(service: SyncService, tenant_id: str) -> list[dict[str, Any]]:
    """What the tenant's rounds could not apply, oldest first, as the API lists them."""
    from azure_sync import pending

    with service.maker() as s:
        return [pending.kept_json(row) for row in pending.kept(s, tenant_id)]


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    with _session(settings) as session:
        rows = _status_rows(session)
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print("No tenant syncs from Entra ID yet: connector sync register --help")
    for row in [] if args.json else rows:
        last = row["last_run"]
        print(f"{row['tenant_id']}  app {row['client_id']}  every {row['interval_minutes']} min"
              + (f"  last round {last['id']} {last['status']}" if last else "  never ran")
              + (f"  QUARANTINED until {row['quarantined_until']}"
                 if row["quarantined_until"] else ""))
        if last and last["error"]:
            print(f"  {last['error']}")
    return 0


def _status_rows(session: Session) -> list[dict[str, Any]]:
    """Each registration with its last round and its quarantine, as `--json` prints them."""
    rows = []
    for reg in session.scalars(select(EntraRegistration)):
        state = session.get(SyncState, reg.tenant_id)
        last = session.scalar(select(SyncRun).where(SyncRun.tenant_id == reg.tenant_id)
                              .order_by(SyncRun.id.desc()).limit(1))
        rows.append({
            "tenant_id": reg.tenant_id, "directory_id": reg.directory_id,
            "client_id": reg.client_id, "interval_minutes": reg.interval_minutes,
            "last_run": None if last is None else {
                "id": last.id, "status": last.status, "kind": last.kind,
                "started": last.started_at.isoformat(), "counts": last.counts,
                # In plain words (an older round's raw exception too); the raw text apart.
                "error": sync_status.plain_error(last.error)[0],
                "error_detail": sync_status.plain_error(last.error)[1]},
            "quarantined_until": state.quarantined_until.isoformat()
            if state and state.quarantined_until else None})
    return rows
