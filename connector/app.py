"""The application factory: a table of contents of named setup steps."""

from __future__ import annotations

import gc
import logging
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request
from flask.typing import ResponseReturnValue
from sqlalchemy import Engine
from werkzeug.exceptions import HTTPException, RequestTimeout, RequestURITooLarge
from werkzeug.routing import IntegerConverter, Map

from connector import db, health, logs, provlog, serving, slow_clients
from connector.config import Settings, load_settings
from connector.text import MAX_ROW_ID

access_log = logging.getLogger("connector.access")


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Flask:
    """Build the WSGI app. Nothing touches the network or starts a thread here."""
    settings = settings or load_settings()
    app = Flask("connector")
    app.config["SETTINGS"] = settings
    provlog.configure(settings.provisioning_log)
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    setup_routing(app)
    setup_logging(app, settings)
    setup_storage(app, settings, engine)
    setup_request_ids(app, settings)
    setup_health(app)
    setup_errors(app)
    setup_scim(app)
    setup_admin(app, settings)
    setup_reporting(app)
    setup_metrics(app)
    # Outermost: no request reaches the app (nor the database) before its body is in.
    app.wsgi_app = slow_clients.BodyFirst(  # type: ignore[method-assign]
        app.wsgi_app, settings.server.max_body_bytes, settings.server.body_timeout_seconds)
    if serving.gevent_patched():
        app.wsgi_app = serving.cooperative(app.wsgi_app)  # type: ignore[method-assign]
        logging.getLogger("connector").info(
            "serving under gevent; database waits are %s", serving.database_waits())
    return app


def server_app() -> Flask:
    """The app as a server process serves it: `wsgi.py`, and
    `gunicorn 'connector.app:server_app()'` from any directory."""
    app = create_app()
    settle_memory()
    return app


def settle_memory() -> None:
    """Call once a server process has built its app (never in tests: it is for good).

    The objects made at start-up (modules, the app, SQLAlchemy's mappers) live as long
    as the process; freezing them keeps the garbage collector from scanning them again in
    every full collection, which showed as pauses of tens of milliseconds in a page
    (figures in docs/benchmarks.md, "Measurements behind the code").
    """
    gc.collect()
    gc.freeze()


class RowNumber(IntegerConverter):
    """`<int:…>` in every route: a row number the databases can hold. A larger one
    (`/entra/runs/99999999999999999999999`) matches no route, so it is the surface's
    404 rather than an integer overflow in the database (a 500)."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(url_map, *args, **{"max": MAX_ROW_ID, **kwargs})


def setup_routing(app: Flask) -> None:
    """Before any route is added: the converters its rules compile with."""
    app.url_map.converters["int"] = RowNumber


def setup_logging(app: Flask, settings: Settings) -> None:
    logs.setup(settings.logging)


def setup_storage(app: Flask, settings: Settings, engine: Engine | None) -> None:
    db.init_app(app, engine or db.make_engine(settings.database))


def setup_request_ids(app: Flask, settings: Settings) -> None:
    """Give every request a correlation id (echoed as X-Request-Id) and an access log line."""

    @app.before_request
    def _start() -> None:
        g.request_id = uuid.uuid4().hex
        g.started = time.perf_counter()
        size = serving.url_bytes(request.environ)
        if size > serving.MAX_URL_BYTES:
            raise RequestURITooLarge(
                f"The URL is {size:,} bytes long; this service takes at most "
                f"{serving.MAX_URL_BYTES:,}. Send a long filter in the body of a search "
                "(SCIM: POST /Users/.search, /Groups/.search or /.search) instead of the "
                "query string, and use ids as this service returned them.")
        if request.environ.get(slow_clients.TIMED_OUT):
            raise RequestTimeout(
                f"The request body did not arrive within "
                f"{settings.server.body_timeout_seconds:g} seconds; nothing was changed. "
                "Send it again.")

    @app.after_request
    def _finish(response: ResponseReturnValue) -> ResponseReturnValue:
        response.headers["X-Request-Id"] = g.get("request_id", "")  # type: ignore[union-attr]
        if settings.logging.access_log:
            logs.log(access_log, logging.INFO, "request", method=request.method,
                     path=request.path, status=response.status_code,  # type: ignore[union-attr]
                     ms=round((time.perf_counter() - g.get("started", 0)) * 1000, 2),
                     tenant=g.get("tenant_id"), request_id=g.get("request_id"))
        return response


def setup_health(app: Flask) -> None:
    app.register_blueprint(health.bp)


def setup_errors(app: Flask) -> None:
    """Errors raised before a blueprint is known (unknown URL, wrong method, body too
    large) or outside any handler: each surface (SCIM, admin API, web UI) registers how
    it answers under its URL prefix; the longest matching prefix answers."""
    surfaces: list[tuple[str, Any, Any]] = app.extensions.setdefault("error_surfaces", [])

    def surface_for(path: str) -> tuple[str, Any, Any] | None:
        matches = [s for s in surfaces if path.startswith(s[0])]
        return max(matches, key=lambda s: len(s[0])) if matches else None

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        found = surface_for(request.path)
        return found[1](exc) if found else exc

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        if isinstance(exc, HTTPException):
            return _http(exc)
        found = surface_for(request.path)
        if found:
            return found[2](exc)
        logging.getLogger("connector").exception("unexpected error")
        return Response('{"error":"internal error"}', status=500, mimetype="application/json")


def setup_scim(app: Flask) -> None:
    from scim import views

    views.init_app(app)


def setup_admin(app: Flask, settings: Settings) -> None:
    """Admin sign-in, the admin API (/api/v1) and the web UI, each with Entra ID sync's
    and billing's routes nested in it."""
    from connector import api, auth, web

    if settings.server.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = settings.server.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops,  # type: ignore[method-assign]
                                x_host=hops)
    from azure_sync import pages as sync_pages
    from azure_sync import views as sync_views
    from billing import pages as billing_pages
    from billing import views as billing_views

    auth.init_app(app)
    sync_views.init_app(app)
    api.init_app(app, children=(sync_views.bp, billing_views.bp, billing_views.keys_bp))
    web.init_app(app, children=(sync_pages.bp, billing_pages.bp))


def setup_metrics(app: Flask) -> None:
    """Prometheus metrics: every request counted, /metrics as [metrics] says
    (connector/metrics.py, docs/operations.md)."""
    from connector import metrics, metrics_export

    metrics_export.init_app(app)
    metrics.watch_pool(app.extensions["engine"], "app")


def setup_reporting(app: Flask) -> None:
    """The hosting partner's reporting API (/reporting/v1), with its own provisioning keys."""
    from billing import reporting

    reporting.init_app(app)
