"""The `connector` command: migrate, serve, bootstrap, tenants, sync, billing."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from connector import (
    admins,
    browse,
    clock,
    db,
    logs,
    metrics,
    migrate,
    provlog,
    serving,
    tenants,
    urls,
)
from connector.config import ConfigError, Settings, load_settings
from connector.errors import DomainError, NotFound
from connector.events import WriteContext
from connector.models import AdminAccount, Tenant
from connector.status import Source


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):  # `connector`, or a group without its action
        if hasattr(args, "help_of"):
            args.help_of.print_help(sys.stderr)
        else:
            parser.print_help()
        return 2
    _note_missing_settings_file(args)
    try:
        settings = load_settings(args.config)
        provlog.configure(settings.provisioning_log)
        # What a command logs (a sync round's kept items, a month close) goes to stderr
        # as in `serve`, so it is seen and stdout stays the command's answer (--json);
        # unless the process set up logging itself (a test runner, an embedding app).
        if not logging.getLogger().handlers:
            logs.setup(settings.logging)
        return int(args.handler(settings, args) or 0)
    except (ConfigError, DomainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader left early (`connector sync status --json | head`): nothing is lost
        # and nothing to say, where Python printed a traceback (and another one when it
        # flushed stdout at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OperationalError as exc:
        if "unsupported startup parameter" in str(exc):
            print(f"error: the database refused the connection's startup options "
                  f"({exc.orig}). Is the URL a PgBouncer? Set pgbouncer = true in [database] "
                  "(CONNECTOR_DATABASE__PGBOUNCER=true).", file=sys.stderr)
            return 1
        # Unreachable, refused, no such database or user: the operator's to fix, in words.
        shown = db.database_url(settings.database).render_as_string(hide_password=True)
        print(f"error: cannot use the database {shown}: {str(exc.orig or exc).strip()}\n"
              "Check [database] url (CONNECTOR_DATABASE__URL), and that the database "
              "server runs and lets this user in.", file=sys.stderr)
        return 1


def _note_missing_settings_file(args: argparse.Namespace) -> None:
    """Say on stderr when CONNECTOR_CONFIG names a file that does not exist. It is
    skipped, as a missing config.toml is; but a file named on purpose and missing (a
    typo, a volume not mounted) would otherwise use the built-in defaults' SQLite
    database unseen, in `migrate` and `tenant create` as much as in `serve`. A worker
    `serve` supervises leaves it to the server, which said it."""
    named = os.environ.get("CONNECTOR_CONFIG")
    if args.config or not named or getattr(args, "supervised", False) or Path(named).exists():
        return
    print(f"Note: CONNECTOR_CONFIG names {named}, which does not exist: using the built-in "
          "defaults and the CONNECTOR_<SECTION>__<KEY> variables.", file=sys.stderr,
          flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="connector", description=__doc__)
    parser.add_argument("--config",
                        help="settings file (default: $CONNECTOR_CONFIG or config.toml)")
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("migrate", help="bring the database schema up to date")
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser("serve", help="migrate, then serve the web app (gunicorn)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int,
                   help="web processes (default: server.workers; 0: one per CPU core, at most 4, "
                        "on PostgreSQL, one on SQLite)")
    p.add_argument("--worker-class", choices=serving.WORKER_CLASSES,
                   help="gunicorn worker class (default: server.worker_class, gevent)")
    p.add_argument("--threads", type=int,
                   help="gthread: threads per process (default: server.threads, 4); "
                   "1 = sync worker. Without --worker-class, --threads means gthread")
    p.add_argument("--bootstrap", action="store_true",
                   help="create a first tenant and partner admin where there are none "
                   "(as `connector bootstrap`), and show them once the server listens")
    p.add_argument("--worker-connections", type=int,
                   help="gevent: connections per process (default: "
                   "server.worker_connections, 100)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("bootstrap", help="migrate and create a first tenant if there is none")
    # `connector serve --bootstrap` under gevent: the lines alone, framed by the server.
    p.add_argument("--unframed", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_bootstrap)

    tenant = sub.add_parser("tenant", help="create, list, rename, close, reopen and purge "
                            "tenants; rotate SCIM tokens")
    tsub = tenant.add_subparsers(metavar="ACTION")
    p = tsub.add_parser("create", help="create a tenant and print its SCIM token (shown once)")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_tenant_create)
    p = tsub.add_parser("rotate-token", help="revoke a tenant's SCIM tokens and issue a new one")
    p.add_argument("tenant_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_tenant_rotate)
    p = tsub.add_parser("list", help="list tenants, oldest first")
    p.add_argument("--search", metavar="TEXT",
                   help="only tenants whose name holds TEXT (any case, accents optional), "
                        "or whose id is TEXT")
    p.add_argument("--state", choices=browse.TENANT_STATES,
                   help="only open tenants, or only closed ones")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_tenant_list)
    p = tsub.add_parser("rename", help="give a tenant a new name")
    p.add_argument("tenant_id")
    p.add_argument("name")
    p.set_defaults(handler=cmd_tenant_rename)
    p = tsub.add_parser("close", help="close a tenant: SCIM refused, Entra sync stopped, "
                        "billing history readable until it is purged")
    p.add_argument("tenant_id")
    p.set_defaults(handler=cmd_tenant_close)
    p = tsub.add_parser("reopen", help="reopen a closed tenant (before it is purged)")
    p.add_argument("tenant_id")
    p.set_defaults(handler=cmd_tenant_reopen)
    p = tsub.add_parser("purge", help="delete the data of tenants closed longer than "
                        "[admin] closed_tenant_retention_days")
    p.add_argument("--dry-run", action="store_true", help="only list what would be purged")
    p.set_defaults(handler=cmd_tenant_purge)

    p = sub.add_parser("keygen", help="print a new key for azure_sync.encryption_key")
    p.set_defaults(handler=cmd_keygen)

    p = sub.add_parser("worker", help="run the Entra sync and month-close scheduler and "
                       "the webhook dispatcher (no web server)")
    p.add_argument("--supervised", action="store_true",
                   help="started by `connector serve` (server.schedulers = \"worker\"): "
                   "no banner, the server's serving line says it")
    p.set_defaults(handler=cmd_worker)

    p = sub.add_parser("provlog", help="the provisioning log")
    provlog_sub = p.add_subparsers(metavar="ACTION", required=True)
    q = provlog_sub.add_parser("prune", help="delete entries older than "
                               "[provisioning_log] retention_days, in bounded batches")
    q.add_argument("--days", type=int, help="keep this many days instead of the setting")
    q.set_defaults(handler=cmd_provlog_prune)

    from azure_sync import cli as sync_cli  # the packages' commands are wired here
    from billing import cli as billing_cli
    from connector.webhooks import cli as webhooks_cli

    sync_cli.add_commands(sub)
    billing_cli.add_commands(sub)
    webhooks_cli.add_commands(sub)

    admin = sub.add_parser("admin", help="create admin accounts, reset passwords")
    asub = admin.add_subparsers(metavar="ACTION")
    p = asub.add_parser("create", help="create an admin and print a one-time password")
    p.add_argument("email")
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--partner", action="store_true", help="sees and manages every tenant")
    role.add_argument("--tenant", metavar="TENANT_ID", help="sees and manages one tenant")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_admin_create)
    p = asub.add_parser("reset-password",
                        help="issue a new one-time password and sign out the account")
    p.add_argument("email")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_admin_reset)
    p = asub.add_parser("reset-two-factor",
                        help="turn off an account's two-factor sign-in (a lost phone) and "
                             "sign it out")
    p.add_argument("email")
    p.set_defaults(handler=cmd_admin_reset_two_factor)
    p = asub.add_parser("list", help="list admin accounts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_admin_list)
    for command in sub.choices.values():  # `connector tenant` alone lists tenant's actions
        command.set_defaults(help_of=command)
    return parser


def _session(settings: Settings) -> Session:
    engine = db.make_engine(settings.database)
    migrate.upgrade(engine)
    return db.make_sessionmaker(engine)()


def _read_session(settings: Settings) -> Session:
    """A session on the database as it is, for a command that only reads: it never
    migrates (a listing pointed at the wrong database would create a schema there)."""
    url = db.database_url(settings.database)
    shown = url.render_as_string(hide_password=True)
    missing = f"The database {shown} has no connector schema yet; run `connector migrate` " \
        "to create it."
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).exists():
        raise ConfigError(missing)  # connecting would create the file
    engine = db.make_engine(settings.database)
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    if revision is None:
        raise ConfigError(missing)
    if not migrate.is_current(engine):
        raise ConfigError(f"The database {shown} has the connector schema of another "
                          f"version (revision {revision}); run `connector migrate` to bring "
                          "it up to date.")
    return db.make_sessionmaker(engine)()


def _migrate(settings: Settings) -> Engine:
    """Bring the schema up to date, then seal the admins' two-factor secrets still stored
    in clear (rows from before revision 0029: a migration has no key to seal them with).
    Without a key they keep working in clear; a warning says how to fix it."""
    engine = db.make_engine(settings.database)
    migrate.upgrade(engine)
    with db.make_sessionmaker(engine)() as session:
        try:
            admins.seal_clear_totp_secrets(session, settings.azure_sync)
        except DomainError as exc:  # KeyMissing (not imported: it loads cryptography)
            print(f"warning: admins' two-factor secrets stay stored in clear until a key "
                  f"is configured. {exc.message}", file=sys.stderr)
        session.commit()
    engine.dispose()  # before serve forks its workers: no connection shared with them
    return engine


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    engine = _migrate(settings)
    print(f"Database schema is up to date ({engine.url.render_as_string(hide_password=True)}).")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    if settings.server.schedulers != "web":  # in `connector worker`, or elsewhere
        settings = dataclasses.replace(
            settings,
            azure_sync=dataclasses.replace(settings.azure_sync, scheduler_in_web=False),
            billing=dataclasses.replace(settings.billing, scheduler_in_web=False))
    worker_class = args.worker_class or settings.server.worker_class
    if args.worker_class is None and args.threads is not None:
        worker_class = "gthread"  # threads are gthread's (and --threads 1 is sync)
    threads = args.threads or settings.server.threads
    if worker_class == "gthread" and threads <= 1:
        worker_class = "sync"
    if worker_class == "sync":
        # gunicorn quietly runs its threaded worker for "sync" with threads > 1 (and
        # server.threads is 4 by default): sync is one request at a time, or it is not.
        threads = 1
    problem = serving.worker_class_problem(settings, worker_class)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    connections = args.worker_connections or settings.server.worker_connections
    # --workers wins over [server] workers; the gevent path below reads it from args.
    args.workers = args.workers if args.workers is not None else settings.server.workers
    problem = _serve_numbers_problem(port, args.workers, connections)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    args.workers = serving.web_processes(args.workers)
    # --host/--port win over the settings everywhere this server's address is named: the
    # URLs --bootstrap prints, and the processes it starts (the bootstrap child under
    # gevent, gunicorn's workers, `connector worker`) read their settings again.
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, host=host, port=port))
    os.environ["CONNECTOR_SERVER__HOST"], os.environ["CONNECTOR_SERVER__PORT"] = host, str(port)
    binds = [urls.host_port(host, port)]
    if metrics.enabled(settings.metrics):
        # Before anything counts: gunicorn's workers and the scheduler process inherit
        # the directory.
        metrics.prepare_directory(settings.metrics.multiprocess_dir)
        if settings.metrics.bind:
            binds.append(settings.metrics.bind)
    problem = _address_problem(binds)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    where = {"worker": "; Entra sync and month closes in `connector worker`, started "
             "with it", "web": "; Entra sync and month closes in the web process",
             "external": "; Entra sync and month closes: run `connector worker`"}
    serving_line = (f"Serving on http://{binds[0]} (SCIM: http://{binds[0]}{urls.SCIM_PATH}) "
                    f"with {args.workers} {worker_class} worker(s)"
                    f"{where[settings.server.schedulers]}. Ctrl-C stops.")
    if worker_class == "gevent":
        return _serve_gevent(settings, args, binds, serving_line)
    from gunicorn.app.base import BaseApplication

    from connector import gunicorn_hooks, workers
    from connector.app import create_app, settle_memory

    # With --bootstrap (`make run`), what it created is shown once the server listens:
    # the last lines on the terminal, not lost above the server's own. `bootstrap`
    # migrates (and seals) itself, as the gevent path's child does either one.
    welcome = None
    if args.bootstrap:
        welcome = boxed([*bootstrap(settings), "", *serving_line.split("; ", 1)])
        # Shown once every worker is up (gunicorn_hooks.post_worker_init), as on the
        # gevent path: the workers are this process's children and inherit the variable.
        os.environ[gunicorn_hooks.ENV_WELCOME] = _welcome_file(welcome)
    else:
        _migrate(settings)
    _start_scheduler_process(settings, args)

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", binds)
            # A worker that exits takes its live gauges (pool use) out of /metrics.
            self.cfg.set("child_exit", gunicorn_hooks.child_exit)
            self.cfg.set("workers", args.workers)
            # gunicorn's own classes, answering too long a request line in JSON.
            self.cfg.set("worker_class", workers.CLASSES[worker_class])
            self.cfg.set("threads", threads)
            # URLs up to 8 KB reach the app, which answers those over 4 KB in JSON.
            self.cfg.set("limit_request_line", serving.GUNICORN_LIMIT_REQUEST_LINE)
            self.cfg.set("post_worker_init", gunicorn_hooks.post_worker_init)
            self.cfg.set("on_exit", gunicorn_hooks.on_exit)

        def load(self):
            app = create_app(settings)
            if settings.azure_sync.scheduler_in_web:  # in the worker, after the fork
                from azure_sync import cli as sync_cli
                from azure_sync import scheduler

                service = sync_cli.make_service(settings)
                metrics.watch_pool(service.write_maker.kw["bind"], "sync")
                scheduler.start(service)
            if settings.billing.scheduler_in_web:
                _start_billing(settings)
                _start_webhooks(settings)  # beside the schedulers, where they run
            settle_memory()
            return app

    if welcome is None:
        print(serving_line, flush=True)
    _Server().run()
    return 0


def _address_problem(binds: list[str]) -> str | None:
    """Whether serve can listen on its addresses, said before "Serving on …" is: gunicorn
    retried a busy port for five seconds after that line, then ended with "Can't connect
    to ('127.0.0.1', 8080)". The first address is --port's, the second [metrics] bind's."""
    for bind, option in zip(binds, ("--host/--port, [server] host/port; make run PORT=…",
                                    "[metrics] bind"),
                            strict=False):
        host, _, port = bind.rpartition(":")
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE)[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn
                probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"{bind} is in use: another process listens there (another "
                        f"`connector serve`?). Stop it, or listen elsewhere ({option}).")
            reason = exc.strerror or str(exc)
            return f"cannot listen on {bind}: {reason}. Check {option}."
        except ValueError:
            return f"cannot listen on {bind}: the port is not a number. Check {option}."
    return None


def _welcome_file(welcome: str) -> str:
    """The frame `make run` shows, in a file only this user reads (it holds a one-time
    password), removed by the worker that shows it."""
    import tempfile

    from connector import gunicorn_hooks

    fd, path = tempfile.mkstemp(prefix=gunicorn_hooks.WELCOME_PREFIX, text=True)
    with os.fdopen(fd, "w") as out:
        out.write(welcome + "\n")
    return path


def _serve_numbers_problem(port: int, workers: int, connections: int) -> str | None:
    """What is wrong with the numbers serve was given, before it says it serves: gunicorn
    fails on a port out of range with a traceback, and with no worker it listens and
    never answers."""
    if not 1 <= port <= 65535:
        return f"the port must be 1-65535 (--port, [server] port); got {port}."
    if workers < 0:
        return (f"the workers must be 1 or more, or 0 for one per CPU core (--workers, "
                f"[server] workers); got {workers}.")
    if connections < 1:
        return ("the worker connections must be 1 or more (--worker-connections, [server] "
                f"worker_connections); got {connections}.")
    return None


def _serve_gevent(settings: Settings, args: argparse.Namespace, binds: list[str],
                  serving_line: str) -> int:
    """Become `gunicorn -k gevent 'connector.app:server_app()'` (no scheduler to start).

    This process never opens a database connection: psycopg chooses how to wait for the
    server when it is first imported, and waits cooperatively only where gevent has
    already patched the process (the worker). So the migration runs in a child process,
    and gunicorn replaces this one.
    """
    from connector import gunicorn_hooks, workers

    config = ["--config", args.config] if args.config else []
    # Our own interpreter and module, arguments from our own parser: no shell, no input.
    migrate_cmd = [sys.executable, "-m", "connector.cli", *config,
                   *(["bootstrap", "--unframed"] if args.bootstrap else ["migrate"])]
    done = subprocess.run(migrate_cmd, capture_output=True, text=True)  # noqa: S603
    if done.returncode:
        print(done.stdout + done.stderr, file=sys.stderr, end="")
        return 1
    _start_scheduler_process(settings, args)
    env = dict(os.environ)
    if args.config:
        env["CONNECTOR_CONFIG"] = args.config
    if args.bootstrap:
        # Shown once every worker is up (gunicorn_hooks.post_worker_init), as on the
        # other paths: the last lines on the terminal.
        env[gunicorn_hooks.ENV_WELCOME] = _welcome_file(boxed(
            [*done.stdout.rstrip("\n").splitlines(), "", *serving_line.split("; ", 1)]))
    else:
        print(serving_line, flush=True)
    connections = args.worker_connections or settings.server.worker_connections  # >= 1
    os.execve(sys.executable, [  # noqa: S606 - the same interpreter, fixed arguments
        sys.executable, "-m", "gunicorn", "--worker-class", workers.CLASSES["gevent"],
        "--worker-connections", str(connections), "--workers", str(args.workers),
        "--limit-request-line", str(serving.GUNICORN_LIMIT_REQUEST_LINE),
        "--config", "python:connector.gunicorn_hooks",
        *(arg for bind in binds for arg in ("--bind", bind)), "connector.app:server_app()"],
        env)
    return 1  # not reached: execve replaces this process


def _start_scheduler_process(settings: Settings, args: argparse.Namespace) -> None:
    """With server.schedulers = "worker": `connector worker` in a supervised child
    process (connector/supervise.py), stopped by gunicorn's on_exit hook."""
    if settings.server.schedulers != "worker":
        return
    from connector import supervise

    os.environ[supervise.ENV_STOP] = str(settings.server.worker_stop_seconds)
    supervise.start(args.config, settings.server.worker_stop_seconds)


BOOTSTRAP_ADMIN = "admin@localhost"


def cmd_bootstrap(settings: Settings, args: argparse.Namespace) -> int:
    lines = bootstrap(settings)
    print("\n".join(lines) if getattr(args, "unframed", False) else boxed(lines))
    return 0


def bootstrap(settings: Settings) -> list[str]:
    """Migrate; create the first tenant, the Entra key and the first partner admin where
    there are none. Returns what to tell the person who ran it (secrets included: they
    are shown once)."""
    from azure_sync import secrets as sync_secrets

    lines = _bootstrap_tenant(settings)
    made = sync_secrets.ensure_key_file(settings.azure_sync)
    if made is not None:
        lines += ["", f"Created {made}: the key that encrypts Entra credentials and",
                  "admins' two-factor secrets. Keep it, and keep it out of database backups."]
    _migrate(settings)  # with the key there now: seals two-factor secrets left in clear
    with _session(settings) as session:
        existing = admins.list_admins(session)
        if existing:
            first = min(existing, key=lambda a: (a.role != admins.PARTNER,
                                                 a.disabled_at is not None))
            return [*lines, "", f"Admin UI: {urls.admin_url(settings)}",
                    f"Sign in as {first.email} ({first.role} admin). A new one-time "
                    "password:",
                    f"  {command_name()} admin reset-password {first.email}"]
        account, one_time = admins.create_admin(
            session, BOOTSTRAP_ADMIN, admins.PARTNER, None, clock.now(),
            one_time_hours=settings.admin.one_time_password_hours)
        admins.audit(session, at=clock.now(), actor="cli:bootstrap", action="admin.created",
                     target=account.email, detail={"role": "partner"},
                     correlation_id="bootstrap")
        session.commit()
    return [*lines, "", "Created the first partner admin.",
            f"  Admin UI      : {urls.admin_url(settings)}",
            f"  e-mail        : {account.email}",
            f"  password      : {one_time}",
            f"  (one-time: it works for one sign-in within "
            f"{settings.admin.one_time_password_hours} h,",
            "  which asks you to choose your own)"]


def _bootstrap_tenant(settings: Settings) -> list[str]:
    with _session(settings) as session:
        existing = tenants.list_tenants(session)
        if existing:
            return [f"{len(existing)} tenant(s) exist; first: {existing[0].name} "
                    f"({existing[0].id}).",
                    f"SCIM base URL: {urls.scim_base_url(settings)}",
                    "Its SCIM token was shown when it was created. For a new one run:",
                    f"  {command_name()} tenant rotate-token {existing[0].id}"]
        tenant, issued = tenants.create_tenant(session, "Default workspace", clock.now(),
                                               "bootstrap", Source.SYSTEM)
        session.commit()
    return ["Created the first tenant, 'Default workspace'.",
            f"  tenant id     : {tenant.id}",
            f"  SCIM base URL : {urls.scim_base_url(settings)}",
            f"  SCIM token    : {issued.token}",
            "Keep the token: it is shown only now. Try:",
            f"  curl -H 'Authorization: Bearer {issued.token}' \\",
            f"       {urls.scim_base_url(settings)}/Users"]


def command_name() -> str:
    """How to run `connector` again from here, for the commands it suggests: `connector`
    when that is this installation's command on PATH, else its path (.venv/bin/connector
    after `make run`, whose virtual environment is not activated)."""
    script = Path(sys.executable).parent / "connector"
    if not script.exists():
        return f"{sys.executable} -m connector.cli"
    on_path = shutil.which("connector")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "connector"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


BOX_WIDTH = 100  # a terminal's width or less: a wider frame breaks into pieces


def boxed(lines: list[str]) -> str:
    """The lines in a frame, so they stand out among a server's log lines. A line longer
    than BOX_WIDTH goes on over several, cut between words (never inside a URL or a
    token), as "Serving on …" made the frame 180 columns wide."""
    lines = [part for line in lines for part in (
        textwrap.wrap(line, BOX_WIDTH, subsequent_indent="  ", break_long_words=False,
                      break_on_hyphens=False) if len(line) > BOX_WIDTH else [line])]
    width = max((len(line) for line in lines), default=0)
    rule = "+" + "-" * (width + 2) + "+"
    return "\n".join([rule, *(f"| {line.ljust(width)} |" for line in lines), rule])


def cmd_tenant_create(settings: Settings, args: argparse.Namespace) -> int:
    with _session(settings) as session:
        tenant, issued = tenants.create_tenant(session, args.name, clock.now())
        session.commit()
    out = {"id": tenant.id, "name": tenant.name, "scim_base_url": urls.scim_base_url(settings),
           "scim_token": issued.token}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"Created tenant {tenant.name!r} ({tenant.id}).")
        print(f"SCIM base URL: {out['scim_base_url']}")
        print(f"SCIM token (shown once): {issued.token}")
    return 0


def cmd_tenant_rotate(settings: Settings, args: argparse.Namespace) -> int:
    with _session(settings) as session:
        issued = tenants.rotate_token(session, args.tenant_id, clock.now())
        session.commit()
    if args.json:
        print(json.dumps({"id": args.tenant_id, "scim_base_url": urls.scim_base_url(settings),
                          "scim_token": issued.token}))
    else:
        print(f"Revoked the old tokens of {args.tenant_id}. New SCIM token (shown once):")
        print(issued.token)
    return 0


def cmd_tenant_list(settings: Settings, args: argparse.Namespace) -> int:
    with _read_session(settings) as session:
        rows = tenants.list_tenants(session)
    search = (args.search or "").strip()
    if args.state is not None:
        rows = [t for t in rows if (t.closed_at is None) == (args.state == "open")]
    if search:
        found = browse.tenant_search(search)
        rows = [t for t in rows if found(t.id, t.name)]
    filtered = args.state is not None or bool(search)
    if args.json:
        print(json.dumps([{"id": t.id, "name": t.name, "created_at": t.created_at.isoformat(),
                           "status_source": t.status_source,
                           "provisioning_paused": t.provisioning_paused,
                           "closed_at": t.closed_at.isoformat() if t.closed_at else None}
                          for t in rows]))
    elif not rows and filtered:
        print("No tenant matches. `connector tenant list` without --search or --state "
              "lists them all.")
    elif not rows:
        print("No tenants yet. Create one with: connector tenant create NAME")
    else:
        for t in rows:
            closed = f", closed {t.closed_at:%Y-%m-%d}" if t.closed_at else ""
            print(f"{t.id}  {t.name}  (created {t.created_at:%Y-%m-%d}{closed})")
    return 0


def _tenant_change(settings: Settings, tenant_id: str, action: str,
                   change: Callable[[Session, WriteContext, Tenant], Any]) -> Tenant:
    """Apply a change to one tenant from the command line, with its audit line."""
    with _session(settings) as session:
        tenant = tenants.named_tenant(session, tenant_id, lock=True)
        now = clock.now()
        # The operator at the command line is an admin (docs/events.md, `source`).
        change(session, WriteContext(tenant.id, Source.ADMIN, "cli", f"cli-{action}", now),
               tenant)
        admins.audit(session, at=now, actor="cli", action=action, tenant_id=tenant.id,
                     target=tenant.name, correlation_id=f"cli-{action}")
        after = Tenant(id=tenant.id, name=tenant.name, closed_at=tenant.closed_at)
        session.commit()
        return after  # as it is now, readable after the session ends


def cmd_tenant_rename(settings: Settings, args: argparse.Namespace) -> int:
    tenant = _tenant_change(settings, args.tenant_id, "tenant.renamed",
                            lambda s, ctx, t: tenants.rename_tenant(s, ctx, t, args.name))
    print(f"Renamed tenant {tenant.id} to {tenant.name!r}.")
    return 0


def cmd_tenant_close(settings: Settings, args: argparse.Namespace) -> int:
    tenant = _tenant_change(settings, args.tenant_id, "tenant.closed", tenants.close_tenant)
    due = tenants.purge_due(tenant, settings.admin.closed_tenant_retention_days)
    print(f"Closed tenant {tenant.name!r}: SCIM is refused and Entra ID sync stopped; its "
          f"closed months stay readable. It is purged on {due:%Y-%m-%d} unless reopened "
          f"(connector tenant reopen {tenant.id}).")
    return 0


def cmd_tenant_reopen(settings: Settings, args: argparse.Namespace) -> int:
    tenant = _tenant_change(settings, args.tenant_id, "tenant.reopened", tenants.reopen_tenant)
    print(f"Reopened tenant {tenant.name!r}: SCIM and Entra ID sync work again.")
    return 0


def cmd_tenant_purge(settings: Settings, args: argparse.Namespace) -> int:
    days = settings.admin.closed_tenant_retention_days
    engine = db.make_engine(settings.database)
    migrate.upgrade(engine)
    maker = db.make_sessionmaker(engine, writes=True)
    try:
        if args.dry_run:
            with maker() as s:
                due = [(t.id, t.name) for t in tenants.tenants_to_purge(s, clock.now(), days)]
        else:
            due = tenants.purge_closed(maker, clock.now(), days, _audit_purge("cli"))
    finally:
        engine.dispose()
    verb = "Would purge" if args.dry_run else "Purged"
    for tenant_id, name in due:
        print(f"{verb} {name!r} ({tenant_id}).")
    print(f"{verb} {len(due)} tenant(s) closed more than {days} days ago.")
    return 0


def _audit_purge(actor: str) -> tenants.PurgeAudit:
    def audit(session: Session, tenant: Tenant, now: Any) -> None:
        admins.audit(session, at=now, actor=actor, action="tenant.purged", tenant_id=tenant.id,
                     target=tenant.name, correlation_id=f"purge-{tenant.id}",
                     detail={"closed_at": tenant.closed_at.isoformat()
                             if tenant.closed_at else None})
    return audit


def cmd_admin_create(settings: Settings, args: argparse.Namespace) -> int:
    role = admins.PARTNER if args.partner else admins.TENANT
    with _session(settings) as session:
        account, one_time = admins.create_admin(
            session, args.email, role, args.tenant, clock.now(),
            one_time_hours=settings.admin.one_time_password_hours)
        admins.audit(session, at=clock.now(), actor="cli", action="admin.created",
                     tenant_id=account.tenant_id, target=account.email,
                     detail={"role": role}, correlation_id="cli")
        session.commit()
    _print_password(settings, account, one_time, args.json, "Created")
    return 0


def cmd_admin_reset(settings: Settings, args: argparse.Namespace) -> int:
    with _session(settings) as session:
        account, one_time = admins.reset_password(
            session, args.email, clock.now(),
            one_time_hours=settings.admin.one_time_password_hours)
        admins.audit(session, at=clock.now(), actor="cli", action="admin.password_reset",
                     tenant_id=account.tenant_id, target=account.email, correlation_id="cli")
        session.commit()
    _print_password(settings, account, one_time, args.json, "Reset the password of")
    return 0


def cmd_admin_reset_two_factor(settings: Settings, args: argparse.Namespace) -> int:
    with _session(settings) as session:
        account = admins.find_admin(session, args.email)
        if account is None:
            raise NotFound(f"No admin account for {args.email}; `connector admin list` shows "
                           "them.")
        had = account.totp_secret is not None or account.totp_pending_secret is not None
        admins.reset_two_factor(session, account, clock.now())
        admins.audit(session, at=clock.now(), actor="cli", action="admin.two_factor_reset",
                     tenant_id=account.tenant_id, target=account.email, correlation_id="cli")
        session.commit()
    print(f"Two-factor sign-in of {account.email} is "
          f"{'off now' if had else 'off (it was not set up)'}; it is signed out everywhere "
          "and signs in with its password (and sets two-factor sign-in up again when "
          "[admin] require_two_factor_for_partner_admins asks for it).")
    return 0


def _print_password(settings: Settings, account: AdminAccount, one_time: str | None,
                    as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps({"id": account.id, "email": account.email, "role": account.role,
                          "tenant_id": account.tenant_id, "one_time_password": one_time,
                          "sign_in_url": urls.admin_url(settings)}))
        return
    scope = "every tenant" if account.role == admins.PARTNER else f"tenant {account.tenant_id}"
    print(f"{verb} {account.role} admin {account.email} ({scope}).")
    print(f"Sign in at {urls.admin_url(settings)} with the one-time password: {one_time}")
    print(f"It works for one sign-in within {settings.admin.one_time_password_hours} hours, "
          "which asks for a new password; after that, reset it again.")


def cmd_admin_list(settings: Settings, args: argparse.Namespace) -> int:
    with _session(settings) as session:
        rows = admins.list_admins(session)
    if args.json:
        print(json.dumps([{"id": a.id, "email": a.email, "role": a.role,
                           "tenant_id": a.tenant_id,
                           "disabled": a.disabled_at is not None} for a in rows]))
    elif not rows:
        print("No admin accounts yet. Create one with: connector admin create EMAIL --partner")
    else:
        for a in rows:
            print(f"{a.email}  {a.role}{'  ' + a.tenant_id if a.tenant_id else ''}"
                  f"{'  (disabled)' if a.disabled_at else ''}")
    return 0


def cmd_keygen(_settings: Settings, _args: argparse.Namespace) -> int:
    from azure_sync import secrets as sync_secrets

    print(sync_secrets.new_key())
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    import signal
    import threading

    from azure_sync import cli as sync_cli
    from azure_sync import scheduler

    metrics.set_process("worker")
    if metrics.enabled(settings.metrics):  # counted where `connector serve` reports
        metrics.prepare_directory(settings.metrics.multiprocess_dir, keep_counts=True)
    service = sync_cli.make_service(settings)
    metrics.watch_pool(service.write_maker.kw["bind"], "sync")
    running = scheduler.start(service)
    closing = _start_billing(settings)
    delivering = _start_webhooks(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if not args.supervised:
        print("Worker running: one Entra sync round per registered tenant every interval, "
              "month closes when they are due, webhooks as events come. Ctrl-C stops.",
              flush=True)
    stop.wait()
    scheduler.stop(running)  # takes no more "Run now" requests, then ends its rounds
    closing.shutdown(wait=True)
    if delivering is not None:
        delivering.stop()
    metrics.mark_process_dead(os.getpid())  # its pool gauges leave /metrics with it
    print("Sync worker stopped.")
    return 0


def _start_billing(settings: Settings) -> Any:
    """The month-close scheduler, which also prunes the provisioning log."""
    from billing import scheduler as billing_scheduler
    from connector import notify

    engine = db.make_engine(settings.database)
    maker = db.make_sessionmaker(engine, writes=True)
    metrics.watch_pool(engine, "billing")
    running = billing_scheduler.start(maker, settings.billing)
    notify.add_jobs(running, maker, settings)  # the notifications run beside the closes
    provlog.add_prune_job(running, maker, settings.provisioning_log)
    tenants.add_purge_job(running, maker, settings.admin.closed_tenant_retention_days,
                          _audit_purge("system:purge"))
    return running


def _start_webhooks(settings: Settings) -> Any:
    """The webhook dispatcher's loop (unless webhooks.enabled is off). Its sessions do
    not announce writes: most of what it does is reading the feed, and on SQLite a
    session that announces writes takes the write lock at BEGIN."""
    from connector.webhooks import runner

    engine = db.make_engine(settings.database)
    return runner.start(db.make_sessionmaker(engine), settings)


def cmd_provlog_prune(settings: Settings, args: argparse.Namespace) -> int:
    engine = db.make_engine(settings.database)
    migrate.upgrade(engine)
    days = settings.provisioning_log.retention_days if args.days is None else args.days
    if days < 0:
        print("error: --days must be 0 or more", file=sys.stderr)
        return 2
    try:
        removed = provlog.prune(db.make_sessionmaker(engine, writes=True), clock.now(), days,
                                settings.provisioning_log.prune_batch)
    finally:
        engine.dispose()
    print(f"Pruned {removed} provisioning log entries older than {days} days.")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
