"""A fake Microsoft Graph v1.0 for delta queries over users and groups, on loopback HTTPS.

Endpoints (learn.microsoft.com/graph/api/user-delta, /group-delta, /user-get):

- `GET /v1.0/users/delta` and `GET /v1.0/groups/delta` (also spelled `/delta()` and
  `/microsoft.graph.delta`), with `$select`, `$skiptoken`, `$deltatoken` (`latest` too),
  `Prefer: odata.maxpagesize=N` and `Prefer: return=minimal`; see tests/fakes/delta.py;
- `GET /v1.0/users/{id or userPrincipalName}` with `$select`;
- `GET /v1.0/groups/{id}/members` and `/transitiveMembers` (learn.microsoft.com/graph/api/
  group-list-members, group-list-transitivemembers), optionally cast with
  `/microsoft.graph.user` or `/microsoft.graph.group`, with `$select` (properties of users
  and groups), `$top` (1-999, default 100) and `@odata.nextLink` paging by `$skiptoken`;
  each item carries its `@odata.type`; an unknown group answers 404
  `Request_ResourceNotFound`. A listing is a snapshot taken at its first page.

Every request needs `Authorization: Bearer <token>` issued by the bound FakeTokenEndpoint
for the Graph resource: the token's tenant picks the directory (`graph.directory(tid)`),
its roles must allow the call (User.Read.All for users, GroupMember.Read.All for groups,
or a Directory.* role), else 401 `InvalidAuthenticationToken` / 403
`Authorization_RequestDenied` with Graph's error body. Skip and delta tokens are opaque
random strings standing for server-side state, bound to the tenant and resource; a
delta token older than `knobs.delta_token_lifetime` (7 simulated days) answers
`knobs.expired_token_status`/`expired_token_code` (410 `syncStateNotFound` by default,
with a Location header for a fresh round, as Graph documents).

Faults are queued with `throttle()`, `fail()`, `hang()`, `corrupt()`,
`expire_token_after()`, `resync()`, `deny()`; standing behaviours are `knobs` fields.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakes.clock import DAY
from tests.fakes.delta import (
    DEFAULT_GROUP_SELECT,
    DEFAULT_USER_SELECT,
    GROUPS,
    USERS,
    Cursor,
    DeltaState,
    build_page,
    start_change_round,
    start_full_round,
)
from tests.fakes.directory import (
    GROUP_PROPERTIES,
    GROUP_TYPE,
    USER_PROPERTIES,
    USER_TYPE,
    Directory,
)
from tests.fakes.entra_token import FakeTokenEndpoint, IssuedToken, TokenRejected
from tests.fakes.faults import Fault, FaultPlan
from tests.fakes.server import LoopbackService, Request, Response
from tests.fakes.tls import LOOPBACK, LoopbackTLS

ODATA_JSON = ("application/json;odata.metadata=minimal;odata.streaming=true;"
              "IEEE754Compatible=false;charset=utf-8")
USER_ROLES = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All",
                        "Directory.ReadWrite.All"})
GROUP_ROLES = frozenset({"GroupMember.Read.All", "Group.Read.All", "Group.ReadWrite.All",
                         "Directory.Read.All", "Directory.ReadWrite.All"})
DEFAULT_CODES = {400: "BadRequest", 401: "InvalidAuthenticationToken",
                 403: "Authorization_RequestDenied", 404: "Request_ResourceNotFound",
                 429: "TooManyRequests", 500: "generalException", 502: "BadGateway",
                 503: "serviceNotAvailable", 504: "GatewayTimeout"}
RESYNC_MESSAGES = {
    "syncstatenotfound": "The sync state generation is not found. The delta token is expired "
                         "and data must be synchronized again.",
    "resyncrequired": "The delta token is no longer valid, and the app must reset the sync "
                      "state.",
}
WWW_AUTHENTICATE = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/'
                    'common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"')
MEMBER_PATH = re.compile(r"/v1\.0/groups/([^/]+)/(members|transitiveMembers)"
                         r"(?:/microsoft\.graph\.(user|group))?/?", re.IGNORECASE)
# A user's direct groups: learn.microsoft.com/graph/api/user-list-memberof
MEMBER_OF_PATH = re.compile(r"/v1\.0/users/([^/]+)/memberOf(?:/microsoft\.graph\.group)?/?",
                            re.IGNORECASE)
MEMBER_PAGE_SIZE, MEMBER_MAX_PAGE_SIZE = 100, 999
DELTA_PATHS = {f"/v1.0/{r}/{d}": r for r in (USERS, GROUPS)
               for d in ("delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()")}


@dataclass
class GraphKnobs:
    """Standing behaviours; tests may change any of them at any time."""

    page_size: int = 200  # Graph's default for users; Prefer: odata.maxpagesize overrides
    max_page_size: int = 999
    member_chunk_size: int = 100  # members@delta entries per group item
    empty_pages_between: int = 0  # empty pages (value [] + nextLink) before each next page
    replay_last_object: bool = False  # each page starts with the previous page's last item
    loop_next_link: bool = False  # nextLink points back to the page just served
    next_link_host: str | None = None  # e.g. "graph.evil.example": links to another host
    latency: float = 0.0  # seconds slept per request (benchmarks)
    delta_token_lifetime: float = 7 * DAY
    expired_token_status: int = 410
    expired_token_code: str = "syncStateNotFound"
    minimal_by_default: bool = False  # answer as if every request had Prefer: return=minimal


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # authorization, prefer, client-request-id, consistencylevel...
    status: int
    at: float


@dataclass(frozen=True)
class _TokenEntry:
    tenant_id: str
    serial: int
    issued_at: float
    state: Cursor | DeltaState


@dataclass(frozen=True)
class _Listing:
    """A members listing in progress: the snapshot and where the next page starts."""

    tenant_id: str
    path: str  # /v1.0/groups/{id}/members[/cast], for the nextLink
    entries: tuple[tuple[str, str], ...]  # (member id, @odata.type)
    position: int
    top: int
    select: tuple[str, ...] | None  # None: Graph's default properties
    select_param: str | None


@dataclass
class _Call:
    """One request in flight, with the ids Graph echoes in headers and error bodies."""

    request: Request
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def client_request_id(self) -> str:
        return self.request.header("client-request-id") or self.request_id


class FakeGraph(LoopbackService):
    """Microsoft Graph's delta endpoints over per-tenant directories; see the docstring."""

    LOGGED_HEADERS = ("authorization", "prefer", "client-request-id", "consistencylevel",
                      "user-agent", "accept")

    def __init__(self, tls: LoopbackTLS, token_endpoint: FakeTokenEndpoint) -> None:
        super().__init__(tls)
        self.entra = token_endpoint
        self.clock = token_endpoint.clock
        self.resource = token_endpoint.graph_resource
        self.knobs = GraphKnobs()
        self.faults = FaultPlan()
        self.log: list[LoggedRequest] = []
        self.counters: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._directories: dict[str, Directory] = {}
        self._tokens: dict[str, _TokenEntry] = {}
        self._serial = 0
        self._invalid_tokens: dict[str, tuple[int, str]] = {}
        self._invalid_below: tuple[int, int, str] | None = None
        self._denied: set[str] = set()
        self._listings: dict[str, _Listing] = {}

    def directory(self, tenant_id: str) -> Directory:
        """The tenant's directory (created empty on first use); mutate it directly."""
        with self._lock:
            key = tenant_id.lower()
            if key not in self._directories:
                self._directories[key] = Directory(key, self.clock.now, self._lock)
            return self._directories[key]

    # -- fault knobs ------------------------------------------------------------------

    def throttle(self, count: int = 1, *, retry_after: str | None = "1", after: int = 0,
                 path: str = "/v1.0/") -> Fault:
        """429 Too Many Requests; `retry_after` in seconds ("0.5") or an HTTP-date."""
        return self.fail(429, count, retry_after=retry_after, after=after, path=path)

    def fail(self, status: int, count: int = 1, *, retry_after: str | None = None,
             after: int = 0, path: str = "/v1.0/", code: str | None = None,
             message: str | None = None) -> Fault:
        """Answer `count` requests under `path` with `status` and Graph's error body."""
        def answer(request: Request) -> Response:
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            said = message or ("Please retry again later." if status in (429, 503, 504)
                               else "Failed.")
            return self._error(_Call(request), status, code or DEFAULT_CODES.get(status,
                               "UnknownError"), said, headers)
        return self.faults.add(Fault(answer, count, after, path))

    def hang(self, count: int = 1, *, seconds: float = 30.0, after: int = 0,
             path: str = "/v1.0/") -> Fault:
        """Answer only after `seconds` (a client timeout should fire first)."""
        def answer(request: Request) -> Response:
            response = self._serve(_Call(request))
            response.delay = seconds
            return response
        return self.faults.add(Fault(answer, count, after, path))

    def corrupt(self, count: int = 1, *, mode: str = "truncate", after: int = 0,
                path: str = "/v1.0/") -> Fault:
        """A 200 whose body is cut in half ("truncate"), not JSON ("garbage"), or a proxy's
        HTML page ("html")."""
        if mode not in ("truncate", "garbage", "html"):
            raise ValueError(mode)

        def answer(request: Request) -> Response:
            response = self._serve(_Call(request))
            if mode == "truncate":
                response.body = response.body[: len(response.body) // 2]
            elif mode == "garbage":
                response.body = b'{"@odata.context":"x","value":[{"id":'
            else:
                response.body = b"<html><body>The service is unavailable.</body></html>"
                response.headers["Content-Type"] = "text/html"
            return response
        return self.faults.add(Fault(answer, count, after, path))

    def expire_token_after(self, requests: int, *, path: str = "/v1.0/") -> Fault:
        """After `requests` more requests, expire the access token the next one presents:
        that request and any later use of the token get 401 InvalidAuthenticationToken."""
        def answer(request: Request) -> Response:
            self.entra.expire_token(_bearer(request))
            return self._serve(_Call(request))
        return self.faults.add(Fault(answer, 1, requests, path))

    def resync(self, status: int = 410, code: str = "syncStateNotFound",
               link: str | None = None) -> None:
        """Make one nextLink/deltaLink, or every skip/delta token issued so far, answer
        `status` with error `code` (e.g. 400 "resyncRequired")."""
        with self._lock:
            if link is None:
                self._invalid_below = (self._serial, status, code)
                return
            query = {k.lower(): v for k, v in parse_qsl(urlsplit(link).query)}
            token = query.get("$skiptoken") or query.get("$deltatoken")
            if token is None:
                raise ValueError(f"no token in {link}")
            self._invalid_tokens[token] = (status, code)

    def deny(self, client_id: str) -> None:
        """403 Authorization_RequestDenied for this app, as if its consent were revoked."""
        with self._lock:
            self._denied.add(client_id.lower())

    def allow(self, client_id: str) -> None:
        with self._lock:
            self._denied.discard(client_id.lower())

    # -- observations -----------------------------------------------------------------

    def requests_to(self, path: str = "/v1.0/", status: int | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if r.path.startswith(path)
                    and status in (None, r.status)]

    # -- HTTP -------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        call = _Call(request)
        fault = self.faults.take(request)
        response = fault.answer(request) if fault else self._serve(call)
        if self.knobs.latency and not response.delay:
            response.delay = self.knobs.latency
        response.headers.setdefault("request-id", call.request_id)
        response.headers.setdefault("client-request-id", call.client_request_id)
        with self._lock:
            self.counters["requests"] += 1
            self.counters[f"status:{response.status}"] += 1
            self.log.append(LoggedRequest(
                request.method, request.path, dict(request.query),
                {h: request.headers[h] for h in self.LOGGED_HEADERS if h in request.headers},
                response.status, self.clock.now()))
        return response

    def _serve(self, call: _Call) -> Response:
        request = call.request
        token = _bearer(request)
        if not token:
            return self._unauthorized(call, "Access token is empty.")
        try:
            grant = self.entra.validate(token, self.resource)
        except TokenRejected as rejected:
            return self._unauthorized(call, str(rejected))
        if request.method != "GET":
            return self._error(call, 405, "Request_BadRequest",
                               "Specified HTTP method is not allowed for the request target.")
        resource = DELTA_PATHS.get(request.path)
        if resource is None and MEMBER_PATH.fullmatch(request.path):
            if refused := self._refuse(call, grant, GROUP_ROLES):
                return refused
            return self._members(call, self.directory(grant.tenant_id))
        if resource is None and MEMBER_OF_PATH.fullmatch(request.path):
            if refused := self._refuse(call, grant, GROUP_ROLES):
                return refused
            return self._members(call, self.directory(grant.tenant_id))
        if resource is None and request.path.startswith("/v1.0/users/"):
            resource = "user"
        if resource is None:
            segment = request.path.rstrip("/").rsplit("/", 1)[-1]
            return self._error(call, 400, "BadRequest",
                               f"Resource not found for the segment '{segment}'.")
        if refused := self._refuse(call, grant, GROUP_ROLES if resource == GROUPS else USER_ROLES):
            return refused
        directory = self.directory(grant.tenant_id)
        directory.purge_expired()
        if resource == "user":
            return self._get_user(call, directory)
        return self._delta(call, directory, resource)

    def _refuse(self, call: _Call, grant: IssuedToken, roles: frozenset[str]) -> Response | None:
        with self._lock:
            denied = grant.client_id.lower() in self._denied
        if denied or not grant.roles & roles:
            return self._error(call, 403, "Authorization_RequestDenied",
                               "Insufficient privileges to complete the operation.")
        return None

    # -- delta ------------------------------------------------------------------------

    def _delta(self, call: _Call, directory: Directory, resource: str) -> Response:
        request = call.request
        prefer = _preferences(request.header("Prefer"))
        page_size = self.knobs.page_size
        if (wanted := prefer.get("odata.maxpagesize", "")).isdigit() and int(wanted) > 0:
            page_size = min(int(wanted), self.knobs.max_page_size)
        minimal = prefer.get("return") == "minimal" or self.knobs.minimal_by_default
        skip, delta = request.param("$skiptoken"), request.param("$deltatoken")
        select_param = request.param("$select")
        with self._lock:
            if skip:
                found = self._lookup(call, skip, directory.tenant_id, resource, Cursor)
                if isinstance(found, Response):
                    return found
                assert isinstance(found, Cursor)
                return self._answer_page(directory, found, page_size, minimal, skip, None)
            select = _parse_select(select_param, resource)
            if isinstance(select, str):
                return self._error(call, 400, "Request_BadRequest", select)
            if delta and delta.lower() == "latest":
                state = DeltaState(resource, select, directory.seq, self.clock.now())
                return self._answer(directory.tenant_id, resource, [], None, state,
                                    select_param)
            if delta:
                found = self._lookup(call, delta, directory.tenant_id, resource, DeltaState)
                if isinstance(found, Response):
                    return found
                assert isinstance(found, DeltaState)
                cursor = start_change_round(directory, found,
                                            select if select_param else found.select)
            else:
                cursor = start_full_round(directory, resource, select)
            return self._answer_page(directory, cursor, page_size, minimal, None, select_param)

    def _answer_page(self, directory: Directory, cursor: Cursor, page_size: int,
                     minimal: bool, own_token: str | None,
                     select_param: str | None) -> Response:
        """Serve the cursor's page, applying the page-shape knobs, with its next link."""
        knobs = self.knobs
        if cursor.empties_left:
            items: list[dict[str, Any]] = []
            following: Cursor | None = dataclasses.replace(
                cursor, empties_left=cursor.empties_left - 1)
        else:
            page = build_page(directory, cursor, page_size=page_size,
                              member_chunk=knobs.member_chunk_size, minimal=minimal)
            items, following = page.items, page.next
            if cursor.replay is not None:
                items.insert(0, cursor.replay)
            if following and knobs.replay_last_object and items:
                following = dataclasses.replace(following, replay=items[-1])
            if following and knobs.empty_pages_between:
                following = dataclasses.replace(following, empties_left=knobs.empty_pages_between)
        self.counters[f"pages:{cursor.resource}"] += 1
        self.counters[f"objects:{cursor.resource}"] += len(items)
        if knobs.loop_next_link:
            token = own_token or self._mint(directory.tenant_id, cursor)
        elif following is not None:
            token = self._mint(directory.tenant_id, following)
        else:
            token = None
        state = None if token else DeltaState(cursor.resource, cursor.select,
                                              cursor.delta_seq, self.clock.now())
        return self._answer(directory.tenant_id, cursor.resource, items, token, state,
                            select_param)

    def _answer(self, tenant_id: str, resource: str, items: list[dict[str, Any]],
                next_token: str | None, final: DeltaState | None,
                select_param: str | None) -> Response:
        context = f"{self.url}/v1.0/$metadata#{resource}"
        if select_param:
            context += f"({select_param})"
        body: dict[str, Any] = {"@odata.context": context}
        if next_token is not None:
            body["@odata.nextLink"] = self._link(resource, "$skiptoken", next_token)
        if final is not None:
            delta_token = self._mint(tenant_id, final)
            body["@odata.deltaLink"] = self._link(resource, "$deltatoken", delta_token)
        body["value"] = items
        return Response.json(200, body, content_type=ODATA_JSON)

    def _link(self, resource: str, name: str, token: str) -> str:
        host = self.knobs.next_link_host or f"{LOOPBACK}:{self.port}"
        return f"https://{host}/v1.0/{resource}/delta?{name}={token}"

    def _mint(self, tenant_id: str, state: Cursor | DeltaState) -> str:
        token = uuid.uuid4().hex + uuid.uuid4().hex
        with self._lock:
            self._serial += 1
            self._tokens[token] = _TokenEntry(tenant_id, self._serial, self.clock.now(), state)
        return token

    def _lookup(self, call: _Call, token: str, tenant_id: str, resource: str,
                kind: type) -> Cursor | DeltaState | Response:
        entry = self._tokens.get(token)
        if (entry is None or entry.tenant_id != tenant_id or not isinstance(entry.state, kind)
                or entry.state.resource != resource):
            return self._error(call, 400, "Request_BadRequest",
                               "The provided skip or delta token is not valid.")
        invalid = self._invalid_tokens.get(token)
        if invalid is None and self._invalid_below and entry.serial <= self._invalid_below[0]:
            invalid = self._invalid_below[1:]
        if invalid is None and self.clock.now() - entry.issued_at > self.knobs.delta_token_lifetime:
            invalid = (self.knobs.expired_token_status, self.knobs.expired_token_code)
        if invalid is not None:
            return self._resync_error(call, resource, entry.state.select, *invalid)
        return entry.state

    def _resync_error(self, call: _Call, resource: str, select: tuple[str, ...], status: int,
                      code: str) -> Response:
        headers = {}
        if status == 410:  # Graph: "a Location header ... with an empty $deltaToken"
            headers["Location"] = (f"{self.url}/v1.0/{resource}/delta?$select="
                                   f"{','.join(select)}&$deltatoken=")
        message = RESYNC_MESSAGES.get(code.lower(), "Resync required.")
        return self._error(call, status, code, message, headers)

    # -- single user ------------------------------------------------------------------

    def _get_user(self, call: _Call, directory: Directory) -> Response:
        key = unquote(call.request.path.removeprefix("/v1.0/users/")).strip("/")
        select_param = call.request.param("$select")
        select = _parse_select(select_param, USERS)
        if isinstance(select, str):
            return self._error(call, 400, "Request_BadRequest", select)
        user = directory.get_user(key)
        if user is None:
            return self._error(call, 404, "Request_ResourceNotFound",
                               f"Resource '{key}' does not exist or one of its queried "
                               "reference-property objects are not present.")
        context = f"{self.url}/v1.0/$metadata#users"
        context += f"({select_param})/$entity" if select_param else "/$entity"
        body = {"@odata.context": context, **{n: user.get(n) for n in select}, "id": user["id"]}
        return Response.json(200, body, content_type=ODATA_JSON)

    # -- group members ----------------------------------------------------------------

    def _members(self, call: _Call, directory: Directory) -> Response:
        request = call.request
        skip = request.param("$skiptoken")
        with self._lock:
            if skip:
                listing = self._listings.get(skip)
                if listing is None or listing.tenant_id != directory.tenant_id:
                    return self._error(call, 400, "Request_BadRequest",
                                       "The provided skip token is not valid.")
                return self._members_page(directory, listing)
            match = MEMBER_PATH.fullmatch(request.path)
            if match is not None:
                group_id, kind, cast = unquote(match.group(1)), match.group(2), match.group(3)
                entries = directory.member_listing(group_id,
                                                   kind.lower() == "transitivemembers")
            else:  # /users/{id}/memberOf
                user_match = MEMBER_OF_PATH.fullmatch(request.path)
                assert user_match is not None
                group_id, cast = unquote(user_match.group(1)), None
                entries = directory.member_of_listing(group_id)
            if entries is None:
                return self._error(call, 404, "Request_ResourceNotFound",
                                   f"Resource '{group_id}' does not exist or one of its "
                                   "queried reference-property objects are not present.")
            if cast:
                wanted = USER_TYPE if cast.lower() == "user" else GROUP_TYPE
                entries = [e for e in entries if e[1] == wanted]
            top_param = request.param("$top")
            top = MEMBER_PAGE_SIZE
            if top_param is not None:
                if not top_param.isdigit() or not 1 <= int(top_param) <= MEMBER_MAX_PAGE_SIZE:
                    return self._error(call, 400, "Request_BadRequest",
                                       f"Invalid page size specified: '{top_param}'. Must be "
                                       f"between 1 and {MEMBER_MAX_PAGE_SIZE} inclusive.")
                top = int(top_param)
            select_param = request.param("$select")
            select = None
            if select_param:
                select = _parse_member_select(select_param)
                if isinstance(select, str):
                    return self._error(call, 400, "Request_BadRequest", select)
            listing = _Listing(directory.tenant_id, request.path.rstrip("/"), tuple(entries),
                               0, top, select, select_param)
            return self._members_page(directory, listing)

    def _members_page(self, directory: Directory, listing: _Listing) -> Response:
        end = listing.position + listing.top
        items = [self._member_item(directory, member_id, member_type, listing.select)
                 for member_id, member_type in listing.entries[listing.position:end]]
        self.counters["pages:members"] += 1
        body: dict[str, Any] = {"@odata.context": f"{self.url}/v1.0/$metadata#directoryObjects"}
        if end < len(listing.entries):
            token = uuid.uuid4().hex
            self._listings[token] = dataclasses.replace(listing, position=end)
            host = self.knobs.next_link_host or f"{LOOPBACK}:{self.port}"
            query = f"$top={listing.top}"
            if listing.select_param:
                query += f"&$select={listing.select_param}"
            body["@odata.nextLink"] = f"https://{host}{listing.path}?{query}&$skiptoken={token}"
        body["value"] = items
        return Response.json(200, body, content_type=ODATA_JSON)

    @staticmethod
    def _member_item(directory: Directory, member_id: str, member_type: str,
                     select: tuple[str, ...] | None) -> dict[str, Any]:
        if member_type == USER_TYPE:
            props = directory.get_user(member_id) or {}
            names = select if select is not None else DEFAULT_USER_SELECT
            allowed = USER_PROPERTIES
        else:
            record = directory.get_group(member_id)
            props = dict(record.props) if record else {}
            names = select if select is not None else DEFAULT_GROUP_SELECT
            allowed = GROUP_PROPERTIES
        # Graph returns a selected property of the member's own type (null when unset),
        # and leaves out those of other types.
        return {"@odata.type": member_type, "id": member_id,
                **{n: props.get(n) for n in names if n in allowed}}

    # -- errors -----------------------------------------------------------------------

    def _unauthorized(self, call: _Call, message: str) -> Response:
        return self._error(call, 401, "InvalidAuthenticationToken", message,
                           {"WWW-Authenticate": WWW_AUTHENTICATE})

    def _error(self, call: _Call, status: int, code: str, message: str,
               headers: dict[str, str] | None = None) -> Response:
        inner = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                 "request-id": call.request_id, "client-request-id": call.client_request_id}
        return Response.json(status, {"error": {"code": code, "message": message,
                                                "innerError": inner}},
                             {"request-id": call.request_id, **(headers or {})})


def http_date(when: dt.datetime) -> str:
    """An HTTP-date for a Retry-After header (RFC 9110 §10.2.3)."""
    return email.utils.format_datetime(when.astimezone(dt.UTC), usegmt=True)


def _bearer(request: Request) -> str:
    scheme, _, token = request.header("Authorization").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _preferences(header: str) -> dict[str, str]:
    prefs = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            prefs[name.strip().lower()] = value.strip().strip('"').lower()
    return prefs


def _parse_member_select(param: str) -> tuple[str, ...] | str:
    """Selected properties of a directoryObject listing: any user or group property."""
    by_lower = {name.lower(): name for name in USER_PROPERTIES | GROUP_PROPERTIES}
    selected: list[str] = []
    for raw in param.split(","):
        name = raw.strip()
        if name.lower() == "id" or not name:
            continue
        if name.lower() not in by_lower:
            return (f"Could not find a property named '{name}' on type "
                    "'microsoft.graph.directoryObject'.")
        if by_lower[name.lower()] not in selected:
            selected.append(by_lower[name.lower()])
    return tuple(selected)


def _parse_select(param: str | None, resource: str) -> tuple[str, ...] | str:
    """The selected property names in Graph's spelling, or the 400 message."""
    if not param:
        return DEFAULT_USER_SELECT if resource == USERS else DEFAULT_GROUP_SELECT
    allowed = USER_PROPERTIES if resource == USERS else GROUP_PROPERTIES | {"members"}
    by_lower = {name.lower(): name for name in allowed}
    selected: list[str] = []
    for raw in param.split(","):
        name = raw.strip()
        if name.lower() == "id" or not name:
            continue
        if name.lower() not in by_lower:
            kind = "user" if resource == USERS else "group"
            return f"Could not find a property named '{name}' on type 'microsoft.graph.{kind}'."
        if by_lower[name.lower()] not in selected:
            selected.append(by_lower[name.lower()])
    return tuple(selected)
