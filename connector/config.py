"""Load the connector's settings: TOML file, then environment overrides.

Precedence, lowest first: the built-in defaults declared below (which
`config.example.toml` mirrors, a test keeps them in step), the TOML file named by
`CONNECTOR_CONFIG` (default `config.toml`, skipped when absent), then environment
variables named `CONNECTOR_<SECTION>__<KEY>`, e.g. `CONNECTOR_DATABASE__URL`.
This is the only module that reads the environment for settings.

A setting typed as a `Literal` takes one of its values and nothing else: a typo fails
at start with a ConfigError naming the key, rather than quietly meaning something else
later. The Literal is the one list of those values; other modules take it from here
(`typing.get_args`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

ENV_PREFIX = "CONNECTOR_"


class ConfigError(Exception):
    """A settings file or override that cannot be used; the message says which key."""


# The settings that take one of a closed set of values.
WorkerClass = Literal["gthread", "gevent", "sync"]  # connector/serving.py
Schedulers = Literal["worker", "web", "external"]  # connector/supervise.py
SecureCookies = Literal["auto", "always", "never"]
MailSecurity = Literal["none", "starttls", "tls"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def setting(default: Any, doc: str, *, any_case: bool = False) -> Any:
    """Declare one setting with its default and the sentence that documents it.

    any_case: a Literal setting's value matches its choices in any letter case, and is
    stored as the choice spells it.
    """
    return field(default=default, metadata={"doc": doc, "any_case": any_case})


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("127.0.0.1", "Address `connector serve` listens on.")
    port: int = setting(8080, "Port `connector serve` listens on.")
    public_base_url: str = setting(
        "",
        "Base URL clients reach the connector at, e.g. https://connector.example.com. "
        "Empty: derived from each request's Host header.",
    )
    max_body_bytes: int = setting(
        1_048_576, "Largest request body accepted, in bytes; larger bodies get 413."
    )
    body_timeout_seconds: float = setting(
        30.0, "How long a request's body may take to arrive, in seconds: a slower one is "
        "answered 408 and its connection closed. The body is read in full before the "
        "request touches the database (connector/slow_clients.py).")
    header_timeout_seconds: float = setting(
        10.0, "How long a request's headers may take to arrive (gthread and sync "
        "workers; under gevent, gunicorn's keep-alive timeout), before the connection "
        "is closed: a client sending one header line every few seconds (slowloris) "
        "holds a thread no longer.")
    proxy_hops: int = setting(
        0,
        "Reverse proxies in front of the connector whose X-Forwarded-For/-Proto/-Host "
        "headers are trusted (0: none). Set it when TLS ends at a proxy, so secure "
        "cookies, client addresses for sign-in throttling and links come out right.",
    )
    worker_class: WorkerClass = setting(
        "gevent",
        "How `connector serve` runs gunicorn: \"gevent\" (the default: an event loop "
        "with keep-alive; overlaps database waits, fastest on both databases; cannot run "
        "the schedulers in the web process, see `schedulers`), \"gthread\" (threads "
        "with keep-alive) or \"sync\" (one request at a time, no keep-alive). See "
        "connector/serving.py.",
    )
    schedulers: Schedulers = setting(
        "worker",
        "Where Entra sync rounds, month closes, notifications and pruning run. "
        "\"worker\": `connector serve` starts `connector worker` as a child process, "
        "starts it again if it dies and stops it with the server (any worker_class). "
        "\"web\": inside the web process, as scheduler_in_web in [azure_sync] and "
        "[billing] say (gthread or sync only). \"external\": not from `connector serve`; "
        "run `connector worker` yourself (several servers on one database).",
    )
    worker_stop_seconds: int = setting(
        30, "How long the server's `connector worker` may take to finish what it runs "
        "when the server stops, before it is killed (a sync round resumes from its last "
        "committed page).")
    workers: int = setting(
        0, "Web processes `connector serve` starts (gunicorn workers; `--workers` wins). "
        "0: one per CPU core (the cores a container's CPU quota grants), at most 4, on "
        "PostgreSQL; one on SQLite, which takes one writer at a time (a second process "
        "speeds up reads only). Each keeps its own database pool: see [database] "
        "pool_size.")
    threads: int = setting(4, "gthread: threads per process.")
    worker_connections: int = setting(
        100, "gevent: connections one process serves at once (the rest wait in the "
        "listen queue).")


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = setting(
        "sqlite:///var/connector.sqlite3",
        "SQLAlchemy URL. SQLite paths are relative to the working directory; "
        "PostgreSQL: postgresql+psycopg://user@host:5432/dbname.",
    )
    pool_size: int = setting(5, "Connections kept per process (PostgreSQL).")
    max_overflow: int = setting(
        -1,
        "Connections opened beyond pool_size while more requests than that use the "
        "database at once, closed again when handed back (PostgreSQL). -1: up to "
        "pool_size + 10 either way: 10 beyond the pool with threads; under gevent all "
        "kept in the pool (pool_size + 10, none beyond), since opening and closing a "
        "connection per request there cost more than the request.",
    )
    pool_pre_ping: bool = setting(
        False,
        "Test each pooled connection before use (PostgreSQL): one more round trip per "
        "request. Off, a connection the server dropped fails one request with 503 and "
        "Retry-After, and the pool reconnects.",
    )
    pool_recycle: int = setting(
        1800, "Replace pooled connections older than this many seconds (PostgreSQL)."
    )
    echo: bool = setting(False, "Log every SQL statement (debugging only).")
    pgbouncer: bool = setting(
        False,
        "The URL is a PgBouncer in transaction pooling mode (PostgreSQL): no server-side "
        "prepared statements (each transaction may get another server connection) and no "
        "startup options (PgBouncer refuses them; set jit = off on the database instead: "
        "ALTER DATABASE name SET jit = off). See docs/operations.md.",
    )


@dataclass(frozen=True)
class LoggingSettings:
    # Any case: logging's names are upper case, and people write them in lower.
    level: LogLevel = setting("INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL, in any case.",
                              any_case=True)
    json: bool = setting(True, "One JSON object per line; false for plain text.")
    access_log: bool = setting(True, "Log one line per HTTP request.")


@dataclass(frozen=True)
class ScimSettings:
    max_results: int = setting(
        1000, "Largest page a list or search returns (`count` is capped to it)."
    )
    default_count: int = setting(100, "Page size when a list request gives no `count`.")
    bulk_max_operations: int = setting(1000, "Most operations accepted in one /Bulk request.")
    bulk_max_payload_bytes: int = setting(
        1_048_576, "Largest /Bulk request body, in bytes (advertised as maxPayloadSize)."
    )
    paused_retry_after: int = setting(
        300, "Seconds sent in Retry-After while a tenant's provisioning is paused."
    )
    token_cache_seconds: int = setting(
        10,
        "Seconds a process trusts a SCIM token it has checked, for reads only (writes "
        "always check the database, so a revoked token never writes). A token revoked in "
        "another process may still read for this long; 0 turns the cache off.",
    )


@dataclass(frozen=True)
class AdminSettings:
    session_secret: str = setting(
        "",
        "Key that signs admin session cookies. Empty: generated on first use and kept "
        "in the database, shared by every process. Changing it signs everyone out.",
    )
    session_hours: int = setting(
        12, "Hours an admin stays signed in before signing in again."
    )
    secure_cookies: SecureCookies = setting(
        "auto",
        "Mark the session cookie Secure: auto (when the request came over HTTPS or "
        "public_base_url is https://), always, or never.",
    )
    login_max_failures: int = setting(
        5,
        "Failed sign-ins (a wrong password or code) for one account from one client "
        "address (an IPv6 client counts by its /64, which it may pick any address "
        "from) before that address must wait login_window_seconds; each further "
        "failure doubles the wait (up to a day). A sign-in that succeeds starts the count "
        "again. Wrong current passwords on a password change count the same way, per "
        "account: at this many the session that sent them is signed out.",
    )
    login_window_seconds: int = setting(900, "The window failed sign-ins are counted in.")
    login_account_ceiling: int = setting(
        50,
        "Failed sign-ins for one account from all addresses together within "
        "login_window_seconds before every address must wait: high enough that guessers "
        "elsewhere do not lock the owner out, low enough to stop a spread-out guess.",
    )
    login_address_ceiling: int = setting(
        100,
        "Failed sign-ins from one client address (IPv6: its /64) for all accounts "
        "together within login_window_seconds before that address must wait (stops "
        "spraying many accounts; high, since an office behind one address shares it).",
    )
    one_time_password_hours: int = setting(
        24,
        "Hours a one-time password (`connector admin create`/`reset-password`, an "
        "invitation or reset in the admin UI or API, bootstrap) works before it expires. "
        "It works for one sign-in in any case.",
    )
    require_two_factor_for_partner_admins: bool = setting(
        False,
        "Partner admins must sign in with a TOTP code: one who has not set it up is led "
        "to set it up at sign-in, and its API tokens are refused until then.",
    )
    closed_tenant_retention_days: int = setting(
        90,
        "Days a closed tenant is kept (its closed months and invoices readable, reopening "
        "possible) before the scheduler or `connector tenant purge` deletes its data.",
    )


@dataclass(frozen=True)
class AzureSyncSettings:
    encryption_key: str = setting(
        "",
        "Key that encrypts secrets at rest: app-registration secrets and certificates, "
        "webhook signing secrets, admins' two-factor (TOTP) secrets (a Fernet key: "
        "`connector keygen` prints one). Empty: read from encryption_key_file.",
    )
    encryption_key_file: str = setting(
        "var/secrets.key",
        "File holding the encryption key when encryption_key is empty (`connector "
        "bootstrap` creates it, readable by its owner only). Keep it out of backups of "
        "the database: the key and the data it protects belong apart.",
    )
    authority_host: str = setting(
        "https://login.microsoftonline.com",
        "Default Entra sign-in host for new registrations (sovereign clouds: "
        "https://login.microsoftonline.us, …).",
    )
    graph_base_url: str = setting(
        "https://graph.microsoft.com",
        "Default Microsoft Graph base URL for new registrations (https://graph.microsoft.us…).",
    )
    graph_scope: str = setting(
        "",
        "The scope tokens are asked for. Empty: the registration's Graph base URL + "
        "/.default (https://graph.microsoft.com/.default), right for every Microsoft "
        "cloud; set it only when Graph is reached through another address.",
    )
    interval_minutes: int = setting(10, "Default minutes between sync rounds of a tenant.")
    request_timeout_seconds: int = setting(30, "Timeout of every Graph and token request.")
    retry_budget: int = setting(
        50, "Retries (throttling, 5xx, timeouts) one round may spend before it stops."
    )
    backoff_cap_seconds: int = setting(
        60, "Longest wait between retries when Graph gives no Retry-After."
    )
    quarantine_after_failures: int = setting(
        5, "Failed rounds in a row after which a tenant runs only daily until one succeeds."
    )
    notify_after_failures: int = setting(
        3, "Rounds failing in a row after which the admins are notified ([notify]).")
    lease_seconds: int = setting(
        300,
        "How long a process holds a tenant's round without renewing it (each page renews "
        "it); after that another process may take the round over.",
    )
    max_pages_per_round: int = setting(
        100_000, "Pages after which a round stops as runaway (a nextLink loop guard)."
    )
    read_ahead: bool = setting(
        True,
        "Read a round's next Graph page while the current one is applied (the same "
        "requests, earlier). false: one page at a time.",
    )
    pipeline: bool = setting(
        True,
        "In a full round, commit each page of new users in a writer process of its own "
        "while the round builds the next page (PostgreSQL, or SQLite in a file). false: "
        "the round's process writes every page itself.",
    )
    ca_bundle: str = setting(
        "",
        "A PEM file of extra CA certificates trusted for Entra and Graph, on top of the "
        "operating system's trust store (which is always used, through truststore). "
        "Empty: the system's store only.",
    )
    proxy: str = setting(
        "",
        "Outbound proxy Graph and the token endpoint are reached through, e.g. "
        "http://proxy.example:3128 (HTTPS goes through it with CONNECT). Empty: the "
        "environment's HTTPS_PROXY / NO_PROXY when set, else a direct connection.",
    )
    no_proxy: str = setting(
        "",
        "Comma-separated hosts (or .domain suffixes) reached directly although `proxy` is "
        "set. Used only with `proxy`; otherwise the environment's NO_PROXY applies.",
    )
    allow_private_hosts: bool = setting(
        False,
        "Let Graph and the token endpoint be on private, loopback or link-local addresses "
        "(checked on the address actually connected to, at every connection). Off: a "
        "registration cannot point the connector into its own network. Tests and "
        "on-premises stand-ins only.",
    )
    scheduler_in_web: bool = setting(
        True,
        "With [server] schedulers = \"web\": run the sync scheduler inside `connector "
        "serve`. (The default, schedulers = \"worker\", runs it in the server's own "
        "`connector worker` process instead, and this setting is not read.)",
    )


@dataclass(frozen=True)
class BillingSettings:
    grace_minutes: int = setting(
        60,
        "Collection window: a month closes this many minutes after its boundary, so that "
        "writes in flight at midnight are in (Stripe waits 1 hour, Orb 12). A tenant fed "
        "by Entra sync also waits for a sync round that started after the boundary.",
    )
    adjustment_months: int = setting(
        2,
        "How many closed months a close looks back at for late events: what was learned "
        "after those months closed becomes adjustment lines. Older late events are listed "
        "in the close report, not adjusted.",
    )
    scheduler_in_web: bool = setting(
        True,
        "With [server] schedulers = \"web\": close due months from `connector serve`. "
        "(The default, schedulers = \"worker\", closes them in the server's own "
        "`connector worker` process, and this setting is not read.)",
    )
    close_check_minutes: int = setting(
        15, "How often the scheduler looks for months that are due to close."
    )
    close_lease_seconds: int = setting(
        300,
        "A month close in progress says it is alive with every chunk of users it folds "
        "(a few seconds apart); one silent for this long is taken for a process that "
        "died mid-close (killed, out of memory): the next close pass deletes what it "
        "wrote and closes the month again.",
    )
    close_workers: int = setting(
        0,
        "Processes that fold a large tenant's month side by side (tenants of 50,000 users "
        "or more; smaller ones fold in the closing process). 0: one per CPU, at most 4; "
        "1: always in the closing process.",
    )
    close_parallel_tenants: int = setting(
        0,
        "Tenants a close pass (the scheduler's and `connector billing close-due`) closes "
        "side by side on PostgreSQL, each in a process of its own (spawned when needed, "
        "with one database connection or two), each tenant's months still in order. 0: "
        "two per CPU, at most 8. SQLite closes one tenant at a time whatever this says "
        "(one writer).",
    )
    mail_host: str = setting(
        "",
        "SMTP server of the monthly e-mail report (sent after each close, with the billed "
        "users and the invoice attached) and of the notifications ([notify]). Empty: no "
        "e-mail.",
    )
    mail_port: int = setting(587, "Port of the SMTP server (587 STARTTLS, 465 TLS, 25 none).")
    mail_security: MailSecurity = setting(
        "starttls",
        "none, starttls (upgrade the connection, refuse to go on without it) or tls "
        "(TLS from the first byte).",
    )
    mail_ca_file: str = setting(
        "", "CA bundle the SMTP server's certificate is verified with; empty: the system's."
    )
    mail_username: str = setting("", "SMTP AUTH user name; empty: no AUTH.")
    # Out of the settings' repr: a logged settings object must not carry it.
    mail_password: str = field(default="", repr=False, metadata={"doc": (
        "SMTP AUTH password. Never logged; prefer the environment "
        "(CONNECTOR_BILLING__MAIL_PASSWORD) to the file.")})
    mail_from: str = setting(
        "", "The From address of the report and the notifications, e.g. "
        "connector@partner.example.")
    mail_recipients: str = setting(
        "", "Comma-separated addresses the report goes to. Empty: no e-mail report."
    )
    mail_retry_minutes: int = setting(
        15,
        "Wait before retrying a report that could not be sent; doubled after each "
        "failure (at most a day). A failed send never holds up a close.",
    )
    mail_max_attempts: int = setting(
        10, "Attempts after which a report is given up (logged as an error)."
    )
    mail_timeout_seconds: int = setting(30, "Timeout of each SMTP connection and command.")
    mail_attachment_max_bytes: int = setting(
        10_000_000,
        "Billed-users attachments larger than this together are left out (the e-mail says "
        "so; download them from the admin UI): mail servers refuse large messages.",
    )


@dataclass(frozen=True)
class NotifySettings:
    enabled: bool = setting(
        True,
        "Tell admins (e-mail and a notice in the admin UI) about a round held for approval, "
        "a quarantined tenant, failing rounds, SCIM errors and a failed month close. The "
        "e-mail goes through the SMTP server of [billing] (mail_host…); without one, only "
        "the notices show. The jobs run where the month-close scheduler runs. Off: no "
        "e-mail and no SCIM error check; the sync and close conditions are still listed.",
    )
    reminder_hours: int = setting(
        24, "Hours after which a condition still raised is e-mailed again (0: never).")
    scim_error_percent: float = setting(
        20.0,
        "Share of SCIM answers that are errors (4xx and 5xx, except 404, 409 and 412, "
        "which answer ordinary lookups, duplicates and stale ETags) over scim_window_minutes "
        "above which \"SCIM errors\" is raised; it clears when the share falls back under.",
    )
    scim_min_requests: int = setting(
        50, "SCIM requests of a tenant within the window below which its share is not judged.")
    scim_window_minutes: int = setting(15, "The window the SCIM error share is taken over.")
    retry_minutes: int = setting(
        5, "Wait before retrying an e-mail that could not be sent; doubled after each failure.")
    max_attempts: int = setting(10, "Attempts after which an e-mail is given up (logged).")
    recently_cleared_days: int = setting(
        7, "Days a cleared condition stays listed on the notifications page.")


@dataclass(frozen=True)
class ProvisioningLogSettings:
    enabled: bool = setting(
        True,
        "Log every object change SCIM pushes and Entra sync pulls attempt, and every "
        "failed SCIM request (the admin UI's Provisioning log). Off: nothing is logged.",
    )
    retention_days: int = setting(
        30, "Entries older than this many days are pruned by the scheduler."
    )
    prune_batch: int = setting(
        5000, "Entries deleted per statement when pruning (bounded, short transactions)."
    )
    prune_interval_minutes: int = setting(
        60, "How often the scheduler (web process and `connector worker`) prunes."
    )


@dataclass(frozen=True)
class WebhooksSettings:
    enabled: bool = setting(
        True,
        "Deliver webhooks where the schedulers run: `connector worker` (the one "
        "`connector serve` starts with server.schedulers = \"worker\", or your own), or "
        "the web process with server.schedulers = \"web\" and [billing] "
        "scheduler_in_web. Any number of processes share the endpoints (each is leased by "
        "one at a time). Off: no delivery from here; events wait in the feed, none lost.",
    )
    poll_interval_ms: int = setting(
        200,
        "How often an idle dispatcher looks for new events, in milliseconds: the bulk of "
        "the commit-to-delivery latency when the receivers keep up. An endpoint that is "
        "behind is delivered to until it has caught up, without waiting.",
    )
    max_batch: int = setting(
        100,
        "Most events in one message when an endpoint is behind (one event: a single-event "
        "message; several: a batch, docs/webhooks.md).",
    )
    workers: int = setting(
        4, "Endpoints one process delivers to at the same time (threads).")
    connect_timeout_seconds: float = setting(
        5.0, "Timeout for connecting to a receiver (TCP and TLS).")
    read_timeout_seconds: float = setting(
        10.0,
        "Timeout for the receiver's answer, and for the whole request: a receiver that "
        "trickles its answer is cut off after this long.",
    )
    lease_seconds: int = setting(
        60,
        "How long a process holds an endpoint without renewing it (each delivery renews "
        "it); after that another process takes the endpoint over. Must exceed the two "
        "timeouts together.",
    )
    max_retry_after_seconds: int = setting(
        3600,
        "Longest wait a receiver's Retry-After header is honoured for; a longer one is cut "
        "to this.",
    )
    disable_after_hours: int = setting(
        72,
        "Hours an endpoint may fail without a single success before it is disabled and "
        "its admins are told (notification \"Webhook endpoint disabled\").",
    )
    allow_private_targets: bool = setting(
        False,
        "Let endpoints be on private, loopback or link-local addresses (checked on the "
        "address actually connected to, at every connection), and plain http:// on "
        "loopback. Off: https:// only, public addresses only, so an endpoint cannot point "
        "the connector into its own network. Tests and on-premises receivers only.",
    )
    ca_bundle: str = setting(
        "",
        "A PEM file of extra CA certificates trusted for webhook receivers, on top of the "
        "operating system's trust store (which is always used, through truststore). "
        "Empty: the system's store only.",
    )
    proxy: str = setting(
        "",
        "Outbound proxy webhooks are delivered through, e.g. http://proxy.example:3128 "
        "(HTTPS goes through it with CONNECT). Empty: the environment's HTTPS_PROXY / "
        "NO_PROXY when set, else a direct connection (as [azure_sync] proxy).",
    )
    no_proxy: str = setting(
        "",
        "Comma-separated hosts (or .domain suffixes) reached directly although `proxy` is "
        "set. Used only with `proxy`; otherwise the environment's NO_PROXY applies.",
    )
    secret_grace_hours: int = setting(
        24,
        "Hours after a secret rotation during which messages are signed with the old "
        "secret too (two signatures), so receivers can switch without losing a message.",
    )
    attempt_retention_days: int = setting(
        30, "Delivery-log entries older than this many days are pruned.")


@dataclass(frozen=True)
class MetricsSettings:
    # Off by default: the figures name no tenant but tell how many tenants are failing,
    # quarantined or lagging, and how busy the service is, which is not for everyone who
    # can reach the SCIM port; and a token made up here would have to be shown somewhere.
    # Setting either `token` or `bind` turns /metrics on (docs/operations.md, "Metrics").
    token: str = field(default="", repr=False, metadata={"doc": (
        "Bearer token Prometheus sends to read /metrics (`Authorization: Bearer …`; "
        "`openssl rand -hex 32` makes a good one). Empty, with bind empty too: "
        "/metrics is off (404). Prefer the environment (CONNECTOR_METRICS__TOKEN) to the "
        "file. Required on the bind address too when set.")})
    bind: str = setting(
        "",
        "host:port of a second listener of `connector serve` that answers /metrics and "
        "nothing else, e.g. 127.0.0.1:9464, for a network only Prometheus reaches; the "
        "main address then answers /metrics with 404. Empty: /metrics is on the main "
        "address, with the token.",
    )
    multiprocess_dir: str = setting(
        "var/metrics",
        "Directory where the processes of one host (`connector serve`'s workers and "
        "`connector worker`) keep their counts for any of them to report "
        "(PROMETHEUS_MULTIPROC_DIR). Created at start; files of processes that are gone "
        "are removed then. Give every host its own.",
    )
    cache_seconds: int = setting(
        5,
        "Seconds the figures read from the database at scrape time (sync lag, held and "
        "quarantined tenants, outbox backlogs) are reused before being read again.",
    )
    sync_lag_minutes: int = setting(
        60,
        "A tenant registered for Entra sync whose last successful round (or its "
        "registration, before its first) is older than this counts in "
        "connector_sync_lagging_tenants.",
    )


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    scim: ScimSettings = field(default_factory=ScimSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    azure_sync: AzureSyncSettings = field(default_factory=AzureSyncSettings)
    billing: BillingSettings = field(default_factory=BillingSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    provisioning_log: ProvisioningLogSettings = field(
        default_factory=ProvisioningLogSettings)
    webhooks: WebhooksSettings = field(default_factory=WebhooksSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)


_SECTION_TYPES = {
    "server": ServerSettings,
    "database": DatabaseSettings,
    "logging": LoggingSettings,
    "scim": ScimSettings,
    "admin": AdminSettings,
    "azure_sync": AzureSyncSettings,
    "billing": BillingSettings,
    "notify": NotifySettings,
    "provisioning_log": ProvisioningLogSettings,
    "webhooks": WebhooksSettings,
    "metrics": MetricsSettings,
}


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build the settings from defaults, the TOML file, the environment and `overrides`."""
    environ = os.environ if environ is None else environ
    data: dict[str, dict[str, Any]] = {}
    file = Path(path) if path else Path(environ.get(ENV_PREFIX + "CONFIG", "config.toml"))
    try:
        if file.exists():
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        elif path:
            raise ConfigError(f"{file}: no such settings file")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not a TOML settings file (not UTF-8 text)") from exc
    except OSError as exc:  # a directory, a file this user may not read
        raise ConfigError(f"{file}: cannot read the settings file "
                          f"({exc.strerror or exc})") from exc
    from_env = _merge_environment(data, environ)
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return _build(data, _Origin(str(file), from_env))


@dataclass(frozen=True)
class _Origin:
    """Where the settings came from, to name in an error: the file, or for a key set in
    the environment, its variable (the file may not even exist)."""

    file: str
    variables: Mapping[tuple[str, str], str]

    def of(self, section: str, keys: set[str] | None = None) -> str:
        names = sorted(name for (s, k), name in self.variables.items()
                       if s == section and (keys is None or k in keys))
        return ", ".join(names) or self.file


def _merge_environment(data: dict[str, dict[str, Any]],
                       environ: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """Put the CONNECTOR_<SECTION>__<KEY> variables into `data`; returns which variable
    set each (section, key)."""
    names = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        data.setdefault(section, {})[key] = raw
        names[(section, key)] = name
    return names


def _build(data: Mapping[str, Any], origin: _Origin) -> Settings:
    unknown = set(data) - set(_SECTION_TYPES)
    if unknown:
        where = ", ".join(sorted({origin.of(name) for name in unknown}))
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}. The sections are "
                          f"{', '.join(_SECTION_TYPES)} (config.example.toml lists every "
                          "setting).")
    sections = {}
    for name, cls in _SECTION_TYPES.items():
        values = data.get(name, {})
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin.file}: [{name}] must be a table")
        sections[name] = _build_section(cls, name, values, origin)
    return Settings(**sections)


def _build_section(cls: type, name: str, values: Mapping[str, Any], origin: _Origin) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"{origin.of(name, unknown)}: unknown setting(s) {sorted(unknown)} "
                          f"in [{name}]. Its settings are {', '.join(fields)} "
                          "(config.example.toml explains each).")
    kwargs = {}
    choices = _choices(cls)
    for key, raw in values.items():
        if key in choices:
            any_case = fields[key].metadata.get("any_case", False)
            kwargs[key] = _choose(raw, choices[key], any_case, f"{name}.{key}")
        else:
            kwargs[key] = _coerce(raw, type(fields[key].default), f"{name}.{key}")
    return cls(**kwargs)


@functools.cache
def _choices(cls: type) -> dict[str, tuple[str, ...]]:
    """The settings of a section typed as a Literal, with their values."""
    return {name: get_args(hint) for name, hint in get_type_hints(cls).items()
            if get_origin(hint) is Literal}


def _choose(raw: Any, choices: tuple[str, ...], any_case: bool, key: str) -> str:
    if isinstance(raw, str):
        if raw in choices:
            return raw
        if any_case:
            for choice in choices:
                if choice.casefold() == raw.casefold():
                    return choice
    raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {raw!r}")


def _coerce(raw: Any, kind: type, key: str) -> Any:
    if isinstance(raw, str) and kind is not str:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ConfigError(f"{key}: expected true or false, got {raw!r}")
        try:
            return kind(raw)
        except ValueError as exc:
            raise ConfigError(f"{key}: expected {kind.__name__}, got {raw!r}") from exc
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {raw!r}")
    return raw


def describe_settings() -> list[tuple[str, str, Any, str]]:
    """List (section, key, default, doc) for every setting, in declaration order."""
    rows = []
    for name, cls in _SECTION_TYPES.items():
        for f in dataclasses.fields(cls):
            rows.append((name, f.name, f.default, f.metadata.get("doc", "")))
    return rows
