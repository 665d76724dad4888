"""/metrics: every process's counts, and figures read from the database at scrape time.

Off unless `[metrics] token` or `bind` is set (connector/config.py says why). With a
token, a scrape must send `Authorization: Bearer <token>`. With `bind`, `connector
serve` listens on that address too, and there /metrics is all that answers, while the
main address answers /metrics with 404: the request's listener is told apart by the
port gunicorn accepted it on (SERVER_PORT), read before any proxy header is applied.

The database figures (sync lag, held and quarantined tenants, outbox and webhook
backlogs) are gauges computed when Prometheus asks, from a few indexed queries (the
webhook backlog: one feed probe per endpoint stream), and kept for `cache_seconds` so
that several Prometheus servers or a dashboard's refreshes do not multiply them. A
database that does not answer gives connector_metrics_database_up 0 and the rest of the
scrape, never a failed scrape.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from flask import Blueprint, Flask, Response, current_app, g, request
from sqlalchemy import Integer, case, func, select, type_coerce
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from connector import clock, metrics
from connector.config import MetricsSettings
from connector.models import (
    BillingMailOutbox,
    EntraRegistration,
    NotifyOutbox,
    SyncRun,
    SyncState,
    Tenant,
)
from connector.models.base import UTCDateTime
from connector.serving import WsgiApp
from connector.webhooks import service as webhooks_service

log = logging.getLogger("connector.metrics")
bp = Blueprint("metrics", __name__)
ON_METRICS_LISTENER = "connector.metrics_listener"  # an environ key no client can set


def init_app(app: Flask) -> None:
    """Count every request, and answer /metrics as the settings say."""
    settings: MetricsSettings = app.config["SETTINGS"].metrics
    metrics.instruments()  # made now: a wrongly set up process fails at start, not later
    app.extensions["metrics_figures"] = DatabaseFigures(
        app.extensions["sessionmaker"], settings)
    app.register_blueprint(bp)
    app.after_request(_count_request)
    port = listener_port(settings.bind)
    if port is not None:
        app.wsgi_app = MetricsListener(app.wsgi_app, port)  # type: ignore[method-assign]


def listener_port(bind: str) -> str | None:
    """The port of `[metrics] bind` ("127.0.0.1:9464" → "9464"), None when unset."""
    if not bind:
        return None
    return bind.rpartition(":")[2]


def _count_request(response: Response) -> Response:
    started = g.get("started")
    seconds = time.perf_counter() - started if started is not None else 0.0
    metrics.observe_request(request.path, request.method, response.status_code,
                            g.get("tenant"), seconds)
    return response


class MetricsListener:
    """The WSGI app behind both listeners: on the metrics port only /metrics answers."""

    def __init__(self, app: WsgiApp, port: str) -> None:
        self.app = app
        self.port = port

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse
                 ) -> Iterable[bytes]:
        environ.pop(ON_METRICS_LISTENER, None)
        if str(environ.get("SERVER_PORT", "")) != self.port:
            return self.app(environ, start_response)
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"This address serves /metrics only.\n"]
        environ[ON_METRICS_LISTENER] = True
        return self.app(environ, start_response)


def _plain(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text + "\n", status=status, mimetype="text/plain", headers=headers)


@bp.get("/metrics")
def scrape() -> Response:
    settings: MetricsSettings = current_app.config["SETTINGS"].metrics
    if not settings.token and not settings.bind:
        return _plain(404, "Metrics are off: set [metrics] token or bind "
                      "(docs/operations.md, \"Metrics\").")
    if settings.bind and not request.environ.get(ON_METRICS_LISTENER):
        return _plain(404, f"Metrics are served on {settings.bind} ([metrics] bind).")
    if settings.token and not token_matches(request.headers.get("Authorization", ""),
                                            settings.token):
        return _plain(401, "Send the metrics token: Authorization: Bearer <[metrics] token>.",
                      {"WWW-Authenticate": 'Bearer realm="metrics"'})
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    body = generate_latest(scrape_registry(current_app.extensions["metrics_figures"]))
    return Response(body, status=200, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                               "Cache-Control": "no-store"})


def token_matches(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode())


def scrape_registry(figures: DatabaseFigures | None) -> Any:
    """A registry holding what one scrape reports: every process's counts (from the
    files with several processes, else this process's) and the database figures."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    own = metrics.instruments().registry
    if own is None:
        MultiProcessCollector(registry)
    else:
        registry.register(_Forward(own))
    if figures is not None:
        registry.register(figures)
    return registry


class _Forward:
    """A collector yielding another registry's metrics (this process's own)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()


# -- figures read from the database ------------------------------------------------------


class DatabaseFigures:
    """A prometheus_client collector of gauges read from the database, cached."""

    def __init__(self, maker: sessionmaker[Session], settings: MetricsSettings,
                 now: Callable[[], dt.datetime] = clock.now,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.maker = maker
        self.settings = settings
        self.now = now
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._until = 0.0
        self._families: list[Any] = []

    def collect(self) -> list[Any]:
        with self._lock:
            if self.monotonic() >= self._until:
                self._families = self._read()
                self._until = self.monotonic() + self.settings.cache_seconds
            return self._families

    def _read(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            with self.maker() as s:
                values = read_figures(s, self.now(), self.settings.sync_lag_minutes)
        except SQLAlchemyError:
            log.exception("metrics: could not read the database figures")
            values = None
        up = GaugeMetricFamily("connector_metrics_database_up",
                               "1 when the database figures below were read, 0 when the "
                               "database did not answer.", value=0 if values is None else 1)
        if values is None:
            return [up]
        families = [up]
        for name, (doc, value) in values.items():
            if isinstance(value, dict):
                family = GaugeMetricFamily(name, doc, labels=["outbox"])
                for label, each in value.items():
                    family.add_metric([label], each)
            else:
                family = GaugeMetricFamily(name, doc, value=value)
            families.append(family)
        return families


def read_figures(s: Session, now: dt.datetime, lag_minutes: int) -> dict[str, Any]:
    """The database figures as {metric name: (help, value or {outbox: value})}."""
    registration, state, tenant = EntraRegistration, SyncState, Tenant
    synced = tenant.provisioning_paused.is_(False)
    since = type_coerce(func.coalesce(state.last_success_at, registration.created_at),
                        UTCDateTime())
    cutoff = now - dt.timedelta(minutes=lag_minutes)

    def total(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    latest_status = (select(SyncRun.status).where(SyncRun.tenant_id == registration.tenant_id)
                     .order_by(SyncRun.id.desc()).limit(1).scalar_subquery())
    row = s.execute(
        select(func.count(),
               total(~synced),
               total(state.quarantined_until > now),
               total(synced & state.last_success_at.is_(None)),
               total(synced & (since < cutoff)),
               type_coerce(func.min(case((synced, since))), UTCDateTime()),
               type_coerce(total(latest_status == "awaiting_approval"), Integer()))
        .select_from(registration)
        .join(tenant, tenant.id == registration.tenant_id)
        .outerjoin(state, state.tenant_id == registration.tenant_id)
        .where(registration.enabled.is_(True), tenant.closed_at.is_(None))).one()
    registered, paused, quarantined, never, lagging, oldest, held = row
    max_lag = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    pending: dict[str, float] = {}
    oldest_pending: dict[str, float] = {}
    for name, table in (("notify", NotifyOutbox), ("billing_mail", BillingMailOutbox)):
        count, first = s.execute(
            select(func.count(), type_coerce(func.min(table.created_at), UTCDateTime()))
            .where(table.state == "pending")).one()
        pending[name] = count
        oldest_pending[name] = max((now - first).total_seconds(), 0.0) if first else 0.0
    hooks = webhooks_service.backlog(s, now)
    pending["webhook"] = hooks.behind
    oldest_pending["webhook"] = max(hooks.oldest_seconds, 0.0)
    return {
        "connector_sync_registered_tenants": (
            "Open tenants with an enabled Entra ID sync registration.", registered),
        "connector_sync_paused_tenants": (
            "Of those, tenants whose provisioning is paused (left out of the lag figures).",
            paused),
        "connector_sync_quarantined_tenants": (
            "Registered tenants quarantined after failing rounds in a row (one round a day "
            "until one succeeds).", quarantined),
        "connector_sync_held_tenants": (
            "Registered tenants whose latest round awaits an admin's approval of its "
            "deletions.", held),
        "connector_sync_never_succeeded_tenants": (
            "Registered, unpaused tenants without a successful round yet.", never),
        "connector_sync_lagging_tenants": (
            "Registered, unpaused tenants whose last successful round (or registration) is "
            "older than the threshold.", lagging),
        "connector_sync_lag_threshold_seconds": (
            "The threshold of connector_sync_lagging_tenants ([metrics] sync_lag_minutes).",
            lag_minutes * 60),
        "connector_sync_max_lag_seconds": (
            "Seconds since the last successful round (or registration) of the unpaused "
            "registered tenant that waited longest.", max_lag),
        "connector_outbox_pending": (
            "Messages waiting to be sent, per outbox (notify: admin notifications; "
            "billing_mail: monthly reports); webhook: enabled endpoints with events not "
            "delivered yet.", pending),
        "connector_outbox_oldest_pending_seconds": (
            "Age of the oldest message waiting in each outbox (webhook: of the oldest "
            "event not yet delivered to an enabled endpoint).", oldest_pending),
        "connector_webhook_endpoints_disabled": (
            "Webhook endpoints disabled (by an admin, or after failing "
            "webhooks.disable_after_hours); their events wait in the feed.", hooks.disabled),
    }
