"""HTTP routes of the SCIM endpoint (RFC 7644 §3), base URL /scim/v2.

Routes only translate HTTP: parse the request, call `scim.resources`, commit, render.
Every error, ours or the domain's, becomes a SCIM Error response in `_error_response`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from connector import (
    clock,
    counters,
    db,
    limits,
    logs,
    metrics,
    provlog,
    scim_health,
    tenants,
    token_kinds,
    urls,
)
from connector.events import WriteContext
from connector.models import Group, User
from connector.request_body import body_bytes, too_large
from connector.status import Source
from connector.text import all_storable, storable
from scim import bulk, casting, discovery, resources, store
from scim.anchors import PageAnchors
from scim.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    InvalidFilter,
    InvalidSyntax,
    InvalidValue,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ScimError,
    Unauthorized,
    UnsupportedMediaType,
    UriTooLong,
)
from scim.failures import to_scim_error
from scim.filters import Compare, Node, compile_sort, parse_filter, simple_user_lookup
from scim.projection import Projection, parse_projection
from scim.queries import (
    group_clause,
    group_sort_column,
    sort_order,
    user_clause,
    user_sort_column,
)
from scim.schemas import GROUP_TYPE, LIST_RESPONSE, SEARCH_REQUEST, USER_TYPE, ResourceType

PREFIX = urls.SCIM_PATH
SCIM_JSON = "application/scim+json"
log = logging.getLogger("connector.scim")
bp = Blueprint("scim", __name__, url_prefix=PREFIX)

# Discovery needs no token (RFC 7644 §4 leaves it to us): clients read it to learn
# how to authenticate.
SEARCHES = {"scim.search_users", "scim.search_groups", "scim.search_everything"}
# Writes made of ONE statement, all of whose refusals come before it (a bad body, a bad
# `attributes=`, a taken userName: the statement itself fails): on PostgreSQL they run
# without BEGIN and COMMIT (`db.make_sessionmaker`, one_statement). A create's reads (the
# token, the module catalogue) need no snapshot shared with it: under READ COMMITTED a
# transaction's statements each see what is committed when they start anyway.
ONE_STATEMENT = {"scim.post_user", "scim.patch_user"}
# Of those, the ones that may find out only on the way that they need a transaction
# after all (`db.NeedsTransaction`): a PATCH's change is known once it is applied.
GUARDED = {"scim.patch_user"}
PUBLIC = {"scim.spc", "scim.schemas", "scim.schema", "scim.resource_types",
          "scim.resource_type"}


class TidySlashes:
    """SCIM paths with doubled or trailing slashes reach the resource they name.

    A client whose base URL ends in "/" (a common way to type the tenant URL into an
    identity provider) asks for `/scim/v2//Users`; some ask for `/Users/`. Werkzeug
    answers the first with a 308 redirect, which an identity provider does not follow
    with its POST or PATCH, and the second with a 404. SCIM ids never contain "/", so
    under the SCIM prefix slashes are collapsed and a trailing one dropped.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if "//" in path or (path.endswith("/") and len(path) > 1):
            tidy = _SLASHES.sub("/", path).rstrip("/") or "/"
            if tidy == PREFIX or tidy.startswith(PREFIX + "/"):
                environ["PATH_INFO"] = tidy
        return self.app(environ, start_response)


_SLASHES = re.compile("/{2,}")


def init_app(app: Flask) -> None:
    app.extensions["scim_token_cache"] = tenants.TokenCache(
        app.config["SETTINGS"].scim.token_cache_seconds)
    app.extensions["scim_page_anchors"] = PageAnchors()
    app.extensions["scim_base_urls"] = {}  # see `_base_url_for`
    app.extensions["scim_counts"] = scim_health.ScimCounts(
        app.extensions["write_sessionmaker"])
    app.register_blueprint(bp)
    app.wsgi_app = TidySlashes(app.wsgi_app)  # type: ignore[method-assign]
    app.extensions.setdefault("error_surfaces", []).append((PREFIX, _http_error,
                                                            _unexpected_error))


# -- request plumbing -------------------------------------------------------------------


@bp.before_request
def _authenticate() -> None:
    if not all_storable((request.view_args or {}).values()):
        raise NotFound(f"No resource at {request.path!r}.")
    for name in ("user_id", "group_id"):
        value = (request.view_args or {}).get(name)
        if isinstance(value, str) and limits.too_long(value, limits.ID):
            raise InvalidValue(f"The id in the path is {len(value):,} characters long; ids "
                               f"have at most {limits.ID}. Use the 'id' of a resource as "
                               "this service returned it.")
    if not all_storable(request.args.values()):
        raise InvalidValue("Query parameters may not contain NUL characters.")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if request.endpoint in PUBLIC:
        # Discovery answers without a token; with a valid one it also names the caller's
        # module catalogue, so clients (and conformance tools) can offer real values.
        if scheme.lower() == "bearer" and token.strip():
            g.tenant = _token_cache().authenticate(db.get_session, token.strip())
        return
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    if request.method in ("GET", "HEAD") or request.endpoint in SEARCHES:
        tenant = _token_cache().authenticate(db.get_session, token.strip())
    else:  # writes see revocations and tenant settings as of now, in their own transaction
        tenant = tenants.authenticate(
            db.get_session(writes=True, one_statement=request.endpoint in ONE_STATEMENT,
                           guarded=request.endpoint in GUARDED), token.strip())
    if tenant is None:
        raise Unauthorized("The bearer token is not valid for any tenant (revoked or mistyped)."
                           + token_kinds.elsewhere(token.strip(), tenants.TOKEN_PREFIX),
                           headers={"WWW-Authenticate": 'Bearer realm="SCIM", '
                                    'error="invalid_token"'})
    if tenant.closed_at is not None:
        raise Forbidden(f"This tenant was closed on {tenant.closed_at:%Y-%m-%d}: SCIM "
                        "provisioning to it is refused. Turn provisioning off in the identity "
                        "provider, or ask the hosting partner to reopen the tenant.")
    g.tenant = tenant
    g.tenant_id = tenant.id


@bp.after_request
def _count(response: Response) -> Response:
    """Count the answer for the SCIM error-share notification (connector/scim_health.py);
    an empty answer Flask made (OPTIONS) carries no HTML type."""
    if response.mimetype == "text/html" and not response.is_streamed and not response.get_data():
        del response.headers["Content-Type"]
    tenant_id = g.get("tenant_id")
    if tenant_id is not None:
        current_app.extensions["scim_counts"].record(tenant_id, response.status_code)
    return response


def _token_cache() -> tenants.TokenCache:
    return current_app.extensions["scim_token_cache"]


def scim_context() -> resources.ScimContext:
    """The request's context, made once: a write, its rendering and its headers share it
    (and its instant)."""
    ctx: resources.ScimContext | None = g.get("scim_context")
    if ctx is None:
        settings = current_app.config["SETTINGS"]
        ctx = g.scim_context = resources.ScimContext(
            tenant=g.tenant,
            write=WriteContext(g.tenant.id, Source.SCIM, _actor(), g.request_id,
                               clock.now()),
            base_url=base_url(),
            retry_after=settings.scim.paused_retry_after,
        )
    return ctx


def _actor() -> str:
    agent = request.headers.get("User-Agent", "")[:120]
    return f"scim-token:{agent}" if agent else "scim-token"


def base_url() -> str:
    """Where this request reached the SCIM API (computed once per request)."""
    url = g.get("scim_base_url")
    if url is None:
        url = g.scim_base_url = _base_url_for(request.scheme, request.host,
                                              request.root_path)
    return url


def _base_url_for(scheme: str, host: str, root_path: str) -> str:
    """The base URL for a request reaching us at scheme://host/root_path, remembered
    for the few such triples a process sees: Werkzeug's `url_root` quotes and
    re-decodes it (IRI to URI and back) on every request, a few per cent of a GET."""
    known: dict[tuple[str, str, str], str] = current_app.extensions["scim_base_urls"]
    key = (scheme, host, root_path)
    url = known.get(key)
    if url is None:
        if len(known) >= 64:  # the Host header is the client's: stay bounded
            known.clear()
        url = known[key] = urls.scim_base_url(current_app.config["SETTINGS"],
                                              request.url_root)
    return url


def read_json() -> Any:
    """Parse the body as JSON; SCIM or plain JSON media types only (RFC 7644 §3.1)."""
    mimetype = request.mimetype
    if mimetype not in (SCIM_JSON, "application/json"):
        raise UnsupportedMediaType(
            f"Content-Type {mimetype or '(none)'} is not supported; send {SCIM_JSON}.")
    raw = body_bytes()
    try:
        body = orjson.loads(raw)  # several times faster; what it refuses, json decides
    except orjson.JSONDecodeError:
        body = _loads_or_refuse(raw)
    if not storable(body):
        raise InvalidValue("Text may not contain NUL characters or unpaired surrogates.")
    return body


def _loads_or_refuse(raw: bytes) -> Any:
    """The standard parser's reading of a body orjson refused (a number beyond 64 bits,
    an unpaired surrogate, deep nesting), or its reason for refusing it."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidSyntax("The body is not valid JSON: nested too deeply.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSyntax(f"The body is not valid JSON: {exc}.") from exc


def scim_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    payload = b"" if body is None else _dumps(body)
    response = Response(payload, status=status, mimetype=SCIM_JSON if body is not None else None,
                        headers=headers)
    if body is None:  # 204 and 304 have no body, so no type (Werkzeug's default is HTML)
        del response.headers["Content-Type"]
    return response


def _dumps(body: Any) -> bytes:
    """Compact JSON, UTF-8: orjson's, or the standard encoder's for what orjson refuses
    (an integer beyond 64 bits in a stored extension attribute)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, separators=(",", ":")).encode()


def if_match() -> frozenset[int] | None:
    """The versions an If-Match header accepts (any one of a list matches); None when
    there is no header or it is `*`."""
    value = request.headers.get("If-Match")
    return None if value is None else casting.parse_if_match(value)


def resource_response(resource: dict[str, Any], row: Any, status: int = 200) -> Response:
    """A single resource with its ETag, Content-Location (RFC 7643 §3.1: `meta.location`
    "MUST be the same as the Content-Location HTTP response header") and, on 201,
    Location, taken from the stored row so that they are present even when `attributes=`
    left `meta` out of the body."""
    kind = "Groups" if isinstance(row, Group) else "Users"  # a user may be a plain row
    location = f"{scim_context().base_url}/{kind}/{row.id}"
    headers = {"ETag": casting.etag(row.version), "Content-Location": location}
    if status == 201:
        headers["Location"] = location
    return scim_response(resource, status, headers)


def commit() -> None:
    db.get_session().commit()


def rendered_then_committed(resource_type: ResourceType, row: Any,
                            projection: Projection | None | bool = False) -> dict[str, Any]:
    """Render a written resource inside its own transaction, then commit.

    Rendering after the commit would open a second transaction (on SQLite a second write
    lock) only to read back what this request just wrote. `projection`: parsed already
    (before the write), else from the query.
    """
    db.get_session().flush()
    resource = single(resource_type, row, projection)
    commit()
    return resource


# -- errors ---------------------------------------------------------------------------


def error_response(exc: ScimError) -> Response:
    metrics.scim_error(exc.status, exc.scim_type)
    return scim_response(exc.to_scim(), exc.status, exc.headers)


@bp.errorhandler(Exception)
def _scim_error(exc: Exception) -> Any:
    db.get_session().rollback()
    if isinstance(exc, HTTPException):
        response = _http_error(exc)
    else:
        error = to_scim_error(exc)
        if isinstance(error, InternalError):
            log.exception("unexpected error in SCIM request")
        response = error_response(error)
    _log_failed_request(response)
    return response


_OPERATIONS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}


def _log_failed_request(response: Response) -> None:
    """The provisioning log's entry for a failed request of an authenticated client, in
    its own short transaction: the request's was rolled back, nothing of it applied."""
    tenant = g.get("tenant")
    if tenant is None or not provlog.enabled():
        return
    try:
        body = json.loads(response.get_data()) if response.get_data() else {}
        resource_id = (request.view_args or {}).get("user_id")
        on_resource = isinstance(resource_id, str) and "/Users/" in request.path
        operation = _OPERATIONS.get(request.method, "request")
        if request.endpoint in SEARCHES or "/Bulk" in request.path:
            operation = "request"
        provlog.record_failed_request(
            current_app.extensions["write_sessionmaker"],
            WriteContext(tenant.id, Source.SCIM, _actor(), g.get("request_id") or "-",
                         clock.now()),
            # A token a client put in the query string (…?access_token=) is no
            # business of the log's readers: as in the service's log, redacted.
            method=request.method, path=logs.redact(request.full_path.rstrip("?")),
            status=response.status_code, scim_type=body.get("scimType"),
            detail=str(body.get("detail") or ""), operation=operation,
            user_id=resource_id if on_resource else None)
    except Exception:  # noqa: BLE001 - the client gets its answer whatever the log does
        log.exception("could not log a failed SCIM request in the provisioning log")


def _http_error(exc: HTTPException) -> Any:
    """Werkzeug's 404/405/413/414 under /scim/v2 become SCIM errors (blueprint handlers miss
    them: routing fails before the blueprint is known)."""
    mapping: dict[int, Callable[[], ScimError]] = {
        404: lambda: NotFound(f"No SCIM endpoint at {request.path}."),
        405: lambda: MethodNotAllowed(
            f"{request.method} is not supported on {request.path}.",
            # RFC 9110 §15.5.6: a 405 lists the methods the resource does support.
            headers={"Allow": ", ".join(sorted(getattr(exc, "valid_methods", None) or ()))}),
        413: lambda: PayloadTooLarge(too_large()),
        414: lambda: UriTooLong(exc.description),
    }
    factory = mapping.get(exc.code or 0)
    error = factory() if factory else BadRequest(exc.description)
    if exc.code and not factory:
        error.status = exc.code
    return error_response(error)


def _unexpected_error(exc: Exception) -> Any:
    log.exception("unexpected error")
    return error_response(InternalError())


# -- list and search -------------------------------------------------------------------


def list_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Normalise query parameters or a SearchRequest body (RFC 7644 §3.4.2, §3.4.3)."""
    settings = current_app.config["SETTINGS"].scim
    names = {"filter", "sortby", "sortorder", "startindex", "count", "attributes",
             "excludedattributes"}
    canonical = {"sortby": "sortBy", "sortorder": "sortOrder", "startindex": "startIndex",
                 "excludedattributes": "excludedAttributes"}
    source = {canonical.get(k.lower(), k.lower()): v for k, v in raw.items()
              if isinstance(k, str) and k.lower() in names}
    return {
        "filter": source.get("filter"),
        "sort_by": source.get("sortBy"),
        "descending": _descending(source.get("sortOrder")),
        "start": max(_int_param(source, "startIndex", 1), 1),
        "count": min(max(_int_param(source, "count", settings.default_count), 0),
                     settings.max_results),
        "attributes": _csv_param(source.get("attributes")),
        "excluded": _csv_param(source.get("excludedAttributes")),
    }


def _descending(value: Any) -> bool:
    """RFC 7644 §3.4.2.3: "ascending" (the default) or "descending", in any case."""
    if value is None or value == "":
        return False
    order = str(value).lower()
    if order not in ("ascending", "descending"):
        raise InvalidValue(f"'sortOrder' must be 'ascending' or 'descending'; got {value!r:.40}.")
    return order == "descending"


def _int_param(source: dict[str, Any], name: str, default: int) -> int:
    value = source.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise InvalidValue(f"'{name}' must be an integer.")
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidValue(f"'{name}' must be an integer; got {value!r:.40}.") from exc
    # Beyond any list's length (RFC 7644 §3.4.2.4: a startIndex past the end is an empty
    # page), and within what a database's OFFSET/LIMIT takes: a 20-digit number overflowed
    # them.
    return min(max(number, -INT_PARAM_LIMIT), INT_PARAM_LIMIT)


INT_PARAM_LIMIT = 2**31 - 1


def _csv_param(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


class _Listing:
    """One resource type's part of a query: compiled filter, order and projection."""

    def __init__(self, resource_type: ResourceType, params: dict[str, Any]) -> None:
        self.type = resource_type
        self.users = users = resource_type is USER_TYPE
        self.filter = params["filter"]
        self.lookup: tuple[str, str] | None = None
        if users and self.filter and not params["sort_by"]:
            self.lookup = simple_user_lookup(self.filter)
        self._where: list[Any] | None = None
        if self.lookup is None:
            node = parse_filter(self.filter, resource_type) if self.filter else None
            if node is not None and users and not params["sort_by"]:
                self.lookup = _plain_lookup(node)
            self._compile(node)
        model_id = User.id if users else Group.id
        self.order: list[Any] = [model_id]
        self.default_order = not params["sort_by"]
        if params["sort_by"]:
            ref = compile_sort(params["sort_by"], resource_type)
            column = user_sort_column(ref) if users else group_sort_column(ref)
            self.order = [sort_order(column, params["descending"]), model_id]
        self.projection = parse_projection(resource_type, params["attributes"],
                                           params["excluded"])

    def _compile(self, node: Node | None) -> list[Any]:
        clause = None if node is None else (user_clause(node) if self.users
                                            else group_clause(node))
        self.unfiltered = clause is None
        conditions = store.user_conditions if self.users else store.group_conditions
        self._where = conditions(scim_context().tenant.id, clause)
        return self._where

    @property
    def where(self) -> list[Any]:
        """The compiled filter; a recognised lookup compiles it only when a count needs it."""
        if self._where is None:
            return self._compile(parse_filter(self.filter, self.type))
        return self._where

    def _anchored_page(self, offset: int, count: int, wants_groups: bool, generation: int
                       ) -> list[Any]:
        """The unfiltered id-ordered page, started from the nearest known position."""
        anchors: PageAnchors = current_app.extensions["scim_page_anchors"]
        tenant_id = scim_context().tenant.id
        where, skip = list(self.where), offset
        anchor = anchors.nearest(tenant_id, generation, offset) if offset else None
        if anchor is not None:
            position, user_id = anchor
            where.append(User.id >= user_id)
            skip = offset - position
        rows = store.user_page(db.get_session(), where, self.order, skip, count, wants_groups)
        if rows:
            anchors.remember(tenant_id, generation, offset, rows[0].id)
            anchors.remember(tenant_id, generation, offset + len(rows) - 1, rows[-1].id)
        return rows

    def page(self, offset: int, count: int) -> tuple[int, list[dict[str, Any]]]:
        session = db.get_session()
        ctx = scim_context()
        if self.users:
            wants_groups = self.projection is None or self.projection.includes("groups")
            if count <= 0:
                rows = []
            elif self.lookup is not None:
                rows = store.lookup_page(session, ctx.tenant.id, *self.lookup, offset, count,
                                         wants_groups)
            elif self.unfiltered and self.default_order:
                total, generation = counters.live_users_and_generation(session, ctx.tenant.id)
                rows = self._anchored_page(offset, count, wants_groups, generation)
                return total, resources.render_user_rows(ctx, rows, self.projection)
            else:
                rows = store.user_page(session, self.where, self.order, offset, count,
                                       wants_groups)
            # A page that is not full, and not empty past the end, tells the total
            # without counting: `userName eq` lookups (what IdPs send) skip the count.
            if 0 < len(rows) < count or (not rows and offset == 0 and count > 0):
                total = offset + len(rows)
            else:
                where = self.where  # compiles a recognised lookup's filter (sets unfiltered)
                total = (counters.live_users(session, ctx.tenant.id) if self.unfiltered
                         else store.count_users(session, where))
            return total, resources.render_user_rows(ctx, rows, self.projection)
        total = store.count_groups(session, self.where)
        if count <= 0 or offset >= total:
            return total, []
        groups = store.group_page(session, self.where, self.order, offset, count)
        return total, resources.render_groups(session, ctx, groups, self.projection)


def _plain_lookup(node: Any) -> tuple[str, str] | None:
    """`userName eq "x"` or `externalId eq "x"` and nothing else: (attribute, value)."""
    if (isinstance(node, Compare) and node.op == "eq" and isinstance(node.value, str)
            and node.ref.is_core and node.ref.sub_attribute is None
            and node.ref.attribute.name in store.lookup_attributes()):
        return node.ref.attribute.name, node.value
    return None


def _list_response(total: int, start: int, found: list[dict[str, Any]]) -> Response:
    return scim_response({
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(found),
        "Resources": found,
    })


def list_resources(resource_type: ResourceType, params: dict[str, Any]) -> Response:
    total, found = _Listing(resource_type, params).page(params["start"] - 1, params["count"])
    return _list_response(total, params["start"], found)


@bp.post("/.search")
def search_everything() -> Response:
    """RFC 7644 §3.4.3: a search at the root spans Users, then Groups.

    A filter, sort or attribute that one type does not have leaves that type out; when
    neither type understands the request, the first type's error is the answer.
    """
    params = list_params(search_body())
    listings: list[_Listing] = []
    first_error: ScimError | None = None
    for resource_type in (USER_TYPE, GROUP_TYPE):
        try:
            listings.append(_Listing(resource_type, params))
        except (InvalidFilter, InvalidValue) as exc:
            first_error = first_error or exc
    if not listings:
        assert first_error is not None
        raise first_error
    offset, wanted, total = params["start"] - 1, params["count"], 0
    found: list[dict[str, Any]] = []
    for listing in listings:
        part_total, part = listing.page(max(offset - total, 0), wanted - len(found))
        total += part_total
        found.extend(part)
    return _list_response(total, params["start"], found)


@bp.get("/Users")
def list_users() -> Response:
    return list_resources(USER_TYPE, list_params(request.args.to_dict()))


@bp.get("/Groups")
def list_groups() -> Response:
    return list_resources(GROUP_TYPE, list_params(request.args.to_dict()))


@bp.post("/Users/.search")
def search_users() -> Response:
    return list_resources(USER_TYPE, list_params(search_body()))


@bp.post("/Groups/.search")
def search_groups() -> Response:
    return list_resources(GROUP_TYPE, list_params(search_body()))


def search_body() -> dict[str, Any]:
    """RFC 7644 §3.4.3: a SearchRequest body carries the query parameters."""
    body = read_json()
    if not isinstance(body, dict):
        raise InvalidSyntax("A search request must be a JSON object.")
    schemas = [s.lower() for s in body.get("schemas", []) if isinstance(s, str)]
    if SEARCH_REQUEST.lower() not in schemas:
        raise InvalidSyntax(f"'schemas' must contain {SEARCH_REQUEST}.")
    if body.get("filter") is not None and not isinstance(body["filter"], str):
        raise InvalidFilter("'filter' must be a string.")
    return body


# -- single resources --------------------------------------------------------------------


def single(resource_type: ResourceType, row: Any,
           projection: Projection | None | bool = False) -> dict[str, Any]:
    if projection is False:
        projection = requested_projection(resource_type)
    assert projection is not True
    render = resources.render_users if resource_type is USER_TYPE else resources.render_groups
    return render(db.get_session(), scim_context(), [row], projection)[0]


def requested_projection(resource_type: ResourceType) -> Projection | None:
    """`attributes=` / `excludedAttributes=` of the query, parsed (or refused)."""
    return parse_projection(resource_type, request.args.get("attributes"),
                            request.args.get("excludedAttributes"))


@bp.get("/Users/<user_id>")
def get_user(user_id: str) -> Response:
    """The hottest read: one statement for the user, its modules and its groups."""
    ctx = scim_context()
    projection = parse_projection(USER_TYPE, request.args.get("attributes"),
                                  request.args.get("excludedAttributes"))
    wants_groups = projection is None or projection.includes("groups")
    row = store.get_user_row(db.read_connection(), ctx.tenant.id, user_id, wants_groups)
    if row is None:
        raise NotFound(f"User {user_id} not found.")
    not_modified = _not_modified(row)
    if not_modified is not None:
        return not_modified
    return resource_response(resources.render_user_rows(ctx, [row], projection)[0], row)


@bp.get("/Groups/<group_id>")
def get_group(group_id: str) -> Response:
    group = resources.load_group(db.get_session(), scim_context(), group_id)
    return _conditional(GROUP_TYPE, group)


def _conditional(resource_type: ResourceType, row: Any) -> Response:
    not_modified = _not_modified(row)
    if not_modified is not None:
        return not_modified
    return resource_response(single(resource_type, row), row)


def _not_modified(row: Any) -> Response | None:
    """304 when If-None-Match names the current version (RFC 7644 §3.14), else None."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return None
    # A list of tags, or "*" for any (RFC 7232 §3.2, weak comparison).
    tags = {t.strip() for t in header.split(",")}
    if "*" in tags or row.version in {casting.parse_etag(t) for t in tags}:
        return scim_response(None, 304, {"ETag": casting.etag(row.version)})
    return None


@bp.post("/Users")
def post_user() -> Response:
    # One statement without BEGIN/COMMIT on PostgreSQL (ONE_STATEMENT): whatever can
    # refuse the request is decided before it, the projection too.
    session = db.get_session(writes=True, one_statement=True)
    projection = requested_projection(USER_TYPE)
    user = resources.create_user(session, scim_context(), read_json())
    return resource_response(rendered_then_committed(USER_TYPE, user, projection), user, 201)


@bp.put("/Users/<user_id>")
def put_user(user_id: str) -> Response:
    session = db.get_session(writes=True)
    user = resources.replace_user(session, scim_context(), user_id, read_json(), if_match())
    return resource_response(rendered_then_committed(USER_TYPE, user), user)


@bp.patch("/Users/<user_id>")
def patch_user(user_id: str) -> Response:
    """On PostgreSQL first without a transaction (GUARDED): the user read without a lock,
    its change, events and log row written by one statement that checks the version
    read. What that cannot do (another write, or the user changed meanwhile) raises
    `db.NeedsTransaction` before anything is written, and the PATCH runs again in an
    ordinary transaction with the user locked. Everything that can refuse it is
    decided before its write, the projection too."""
    session = db.get_session(writes=True, one_statement=True, guarded=True)
    body, expected = read_json(), if_match()
    projection = requested_projection(USER_TYPE)
    if db.writes_guarded(session):
        try:
            user = resources.patch_user(session, scim_context(), user_id,
                                        casting.copy_json(body), expected, lock=False)
            return resource_response(rendered_then_committed(USER_TYPE, user, projection),
                                     user)
        except db.NeedsTransaction:
            session = db.restart_writes()
    user = resources.patch_user(session, scim_context(), user_id, body, expected)
    return resource_response(rendered_then_committed(USER_TYPE, user, projection), user)


@bp.delete("/Users/<user_id>")
def delete_user(user_id: str) -> Response:
    session = db.get_session(writes=True)
    resources.delete_user(session, scim_context(), user_id, if_match())
    commit()
    return scim_response(None, 204)


@bp.post("/Groups")
def post_group() -> Response:
    session = db.get_session(writes=True)
    group = resources.create_group(session, scim_context(), read_json())
    return resource_response(rendered_then_committed(GROUP_TYPE, group), group, 201)


@bp.put("/Groups/<group_id>")
def put_group(group_id: str) -> Response:
    session = db.get_session(writes=True)
    group = resources.replace_group(session, scim_context(), group_id, read_json(), if_match())
    return resource_response(rendered_then_committed(GROUP_TYPE, group), group)


@bp.patch("/Groups/<group_id>")
def patch_group(group_id: str) -> Response:
    """Answer 204: the group may have 10,000 members, and Entra ID needs no body."""
    session = db.get_session(writes=True)
    group = resources.patch_group(session, scim_context(), group_id, read_json(), if_match())
    if _wants_body():
        return resource_response(rendered_then_committed(GROUP_TYPE, group), group)
    commit()
    return scim_response(None, 204, {"ETag": casting.etag(group.version)})


def _wants_body() -> bool:
    return bool(request.args.get("attributes") or request.args.get("excludedAttributes"))


@bp.delete("/Groups/<group_id>")
def delete_group(group_id: str) -> Response:
    session = db.get_session(writes=True)
    resources.delete_group(session, scim_context(), group_id, if_match())
    commit()
    return scim_response(None, 204)


@bp.post("/Bulk")
def post_bulk() -> Response:
    settings = current_app.config["SETTINGS"].scim
    if (request.content_length or 0) > settings.bulk_max_payload_bytes:
        raise PayloadTooLarge(
            f"Bulk requests may have at most {settings.bulk_max_payload_bytes:,} bytes "
            f"(maxPayloadSize in /ServiceProviderConfig); this one has "
            f"{request.content_length:,}. Send its operations in several requests.")
    body = read_json()
    result = bulk.run(db.get_session(writes=True), scim_context(), body,
                      settings.bulk_max_operations, single_renderer=_bulk_render)
    return scim_response(result)


def _bulk_render(kind: str, row: Any) -> dict[str, Any]:
    return single(USER_TYPE if kind == "Users" else GROUP_TYPE, row)


discovery.register(bp)
