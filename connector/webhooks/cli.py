"""`connector webhooks …`: the operator's view of webhook endpoints (as a partner admin:
every tenant's and the partner-wide ones), and the dispatcher in the foreground.

The webhook modules are imported by the commands that use them, not here: every
`connector` command builds this parser, and the dispatcher's outbound HTTP stack is
~0.1 s of CPU to import for a command that never sends a webhook."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from connector import admins, clock, db, migrate, tenants
from connector.actions import AdminCall
from connector.config import Settings

CLI = admins.Principal("", "cli", admins.PARTNER, None, "cli")


def add_commands(sub: Any) -> None:
    hooks = sub.add_parser("webhooks", help="webhook endpoints: list, create, ping, replay, "
                           "disable, enable; run the dispatcher")
    wsub = hooks.add_subparsers(metavar="ACTION", required=True)
    p = wsub.add_parser("list", help="list endpoints (every tenant's and the partner-wide)")
    p.add_argument("--tenant", metavar="TENANT_ID", help="only this tenant's")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_list)
    p = wsub.add_parser("create", help="create an endpoint and print its signing secret "
                        "(shown once)")
    p.add_argument("url")
    p.add_argument("--tenant", metavar="TENANT_ID",
                   help="the tenant whose events it receives (default: every tenant's)")
    p.add_argument("--type", action="append", default=[], metavar="EVENT_TYPE",
                   help="receive only this event type (repeatable; default: all)")
    p.add_argument("--description", default="")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_create)
    p = wsub.add_parser("ping", help="send a test message now and show the answer")
    p.add_argument("endpoint_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_ping)
    p = wsub.add_parser("replay", help="deliver again every event after a feed cursor")
    p.add_argument("endpoint_id")
    p.add_argument("--after", default="", metavar="CURSOR",
                   help="a feed cursor (GET …/events/cursor); default: the oldest event")
    p.set_defaults(handler=cmd_replay)
    for name, enabled in (("disable", False), ("enable", True)):
        p = wsub.add_parser(name, help=f"{name} an endpoint"
                            + (" (delivery resumes where it stopped)" if enabled else ""))
        p.add_argument("endpoint_id")
        p.set_defaults(handler=cmd_enable if enabled else cmd_disable)
    p = wsub.add_parser("run", help="deliver webhooks in the foreground (as `connector "
                        "worker` does beside its schedulers)")
    p.set_defaults(handler=cmd_run)


def _call(settings: Settings, work: Callable[[AdminCall], Any]) -> Any:
    engine = db.make_engine(settings.database)
    migrate.upgrade(engine)
    try:
        with db.make_sessionmaker(engine, writes=True)() as session:
            result = work(AdminCall(session, CLI, clock.now(), f"cli-{uuid.uuid4().hex[:12]}"))
            session.commit()
            return result
    finally:
        engine.dispose()


def _tenant_of(session: Session, endpoint_id: str) -> str | None:
    from connector.webhooks import service

    return service.get_endpoint(session, endpoint_id, any_tenant=True).tenant_id


def _show(endpoint: Any) -> str:
    from connector.webhooks import service

    body = service.endpoint_json(endpoint)
    scope = body["tenantId"] or "all tenants"
    state = "enabled" if body["enabled"] else f"disabled ({body['disabledReason']})"
    types = ", ".join(body["eventTypes"]) or "all types"
    return f"{body['id']}  {body['url']}  [{scope}; {types}; {state}]"


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    from connector.actions import webhooks as actions
    from connector.webhooks import service

    def work(call: AdminCall) -> list[dict[str, Any]]:
        if args.tenant:
            tenants.named_tenant(call.session, args.tenant)
            rows = actions.list_endpoints(call, args.tenant)
        else:
            rows = service.list_endpoints(call.session, None, every=True)
        return [service.endpoint_json(e) for e in rows]

    rows = _call(settings, work)
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print("No webhook endpoints. Create one with: connector webhooks create URL")
    for row in rows if not args.json else []:
        scope = row["tenantId"] or "all tenants"
        state = "enabled" if row["enabled"] else f"disabled ({row['disabledReason']})"
        print(f"{row['id']}  {row['url']}  [{scope}; "
              f"{', '.join(row['eventTypes']) or 'all types'}; {state}]")
    return 0


def cmd_create(settings: Settings, args: argparse.Namespace) -> int:
    from connector.actions import webhooks as actions
    from connector.webhooks import service

    def work(call: AdminCall) -> tuple[dict[str, Any], str]:
        if args.tenant:
            tenants.named_tenant(call.session, args.tenant)
        endpoint, secret = actions.create_endpoint(call, settings, args.tenant, args.url,
                                                   args.description, args.type)
        return service.endpoint_json(endpoint), secret

    shown, secret = _call(settings, work)
    if args.json:
        print(json.dumps({**shown, "secret": secret}))
    else:
        print(f"Created webhook endpoint {shown['id']} for {shown['url']}.")
        print(f"Signing secret (shown once; the receiver verifies with it): {secret}")
    return 0


def cmd_ping(settings: Settings, args: argparse.Namespace) -> int:
    from connector.actions import webhooks as actions
    from connector.webhooks import service

    def work(call: AdminCall) -> dict[str, Any]:
        tenant_id = _tenant_of(call.session, args.endpoint_id)
        return service.attempt_json(actions.ping(call, settings, tenant_id, args.endpoint_id))

    result = _call(settings, work)
    if args.json:
        print(json.dumps(result))
    elif result["succeeded"]:
        print(f"The receiver answered {result['status']} in {result['durationMs']} ms.")
    else:
        print(f"The ping failed: {result['error']}", file=sys.stderr)
    return 0 if result["succeeded"] else 1


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from connector.actions import webhooks as actions

    _call(settings, lambda call: actions.replay(
        call, _tenant_of(call.session, args.endpoint_id), args.endpoint_id, args.after))
    print(f"Endpoint {args.endpoint_id} receives again every event after "
          f"{args.after or 'the start of the feed'}, in order.")
    return 0


def _set_enabled(settings: Settings, endpoint_id: str, enabled: bool) -> str:
    from connector.actions import webhooks as actions

    return _call(settings, lambda call: _show(actions.set_enabled(
        call, _tenant_of(call.session, endpoint_id), endpoint_id, enabled)))


def cmd_disable(settings: Settings, args: argparse.Namespace) -> int:
    print(_set_enabled(settings, args.endpoint_id, False))
    return 0


def cmd_enable(settings: Settings, args: argparse.Namespace) -> int:
    print(_set_enabled(settings, args.endpoint_id, True))
    return 0


def cmd_run(settings: Settings, _args: argparse.Namespace) -> int:
    from connector.webhooks import runner

    engine = db.make_engine(settings.database)
    migrate.upgrade(engine)
    running = runner.start(db.make_sessionmaker(engine, writes=True), settings)
    if running is None:
        print("webhooks.enabled is off: nothing to run.", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("Delivering webhooks. Ctrl-C stops.", flush=True)
    stop.wait()
    running.stop()
    engine.dispose()
    return 0
