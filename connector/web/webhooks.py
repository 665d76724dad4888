"""Webhook endpoints in the admin UI: a "Webhooks" tab on every tenant (its admins and
the partner admins) and the partner-wide endpoints at /admin/webhooks (partner admins).

Each page exists twice, as the API's routes do: under /tenants/<id>/webhooks for a
tenant's endpoints (endpoint names all begin `web.webhook`: the tab is current on each)
and under /webhooks for the partner-wide ones (`web.partner_webhook…`, for the partner
navigation); a view gets `tenant_id` None for the latter. Every action is
`connector.actions.webhooks` (its checks, its audit line). A new or rotated signing
secret travels to the page that shows it through `shown_once`, so a reload shows it no
more and re-issues nothing; disabling, rotating and deleting ask first. A test ping and
a redelivery answer the browser once the receiver has answered, with what it said.

/admin/webhooks/<endpoint_id> is also the "Webhook endpoint disabled" notification's
link: for a tenant's endpoint it leads to that tenant's page of it.
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any
from urllib.parse import urlencode

from flask import current_app, flash, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.wrappers import Response

from connector import db, feed
from connector.actions import webhooks as actions
from connector.errors import InvalidFields, InvalidSetting, NotFound
from connector.http import admin_call
from connector.models import WebhookAttempt, WebhookEndpoint
from connector.text import digits
from connector.web import bp, show_time, shown_once
from connector.web.pages import (
    TenantTab,
    add_tenant_tab,
    come_back_to,
    done,
    me,
    shortened,
    tenant_page,
)
from connector.webhooks import service

LOG_PER_PAGE = 50
# The action's field names (InvalidSetting.field) -> the form's, and how a person
# reads the name at the start of its message.
FORM_FIELDS = {"url": ("url", "The URL"), "description": ("description", "The description"),
               "eventTypes": ("event_types", "Event types")}
# The reason an endpoint an admin disabled carries (the dispatcher gives its own).
BY_ADMIN = inspect.signature(service.set_enabled).parameters["reason"].default
TYPE_GROUPS = {"user": "Users", "group": "Groups and memberships", "tenant": "The tenant",
               "sync": "Entra ID sync", "billing": "Billing"}


@bp.record_once
def _add_tab(state: BlueprintSetupState) -> None:
    add_tenant_tab(state.app, TenantTab("Webhooks", "web.webhooks", "web.webhook"))


def _route(rule: str, methods: tuple[str, ...] = ("GET",)
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a view for a tenant's endpoints and for the partner-wide ones."""
    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        name = view.__name__
        bp.add_url_rule("/tenants/<tenant_id>/webhooks" + rule, name, view,
                        methods=list(methods))
        bp.add_url_rule("/webhooks" + rule, f"partner_{name}", partial(view, None),
                        methods=list(methods))
        return view
    return register


def hook_url(tenant_id: str | None, name: str, **args: Any) -> str:
    """The URL of one of these pages, in the scope of `tenant_id` (None: partner-wide)."""
    if tenant_id is None:
        return url_for(f"web.partner_{name}", **args)
    return url_for(f"web.{name}", tenant_id=tenant_id, **args)


def _scope(tenant_id: str | None) -> None:
    """The page's scope: the tenant (404 for one the admin may not see), or the
    partner-wide endpoints (partner admins only)."""
    if tenant_id is None:
        me().require_partner()
    else:
        tenant_page(tenant_id)


@bp.app_template_filter("when_exact")
def when_exact(value: dt.datetime) -> str:
    """An instant to the second (a delivery log's entries are seconds apart)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("duration")
def duration(delta: dt.timedelta) -> str:
    """A stretch of time in words: "3 days", "5 hours", "12 minutes"."""
    seconds = delta.total_seconds()
    if seconds >= 2 * 86400:
        return f"{round(seconds / 86400)} days"
    if seconds >= 2 * 3600:
        return f"{round(seconds / 3600)} hours"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'' if minutes == 1 else 's'}"


def _settings() -> Any:
    return current_app.config["SETTINGS"]


def _page(template: str, tenant_id: str | None, **context: Any) -> str:
    return render_template(template, partner_wide=tenant_id is None,
                           hook_url=partial(hook_url, tenant_id),
                           disable_after=dt.timedelta(
                               hours=_settings().webhooks.disable_after_hours),
                           by_admin=BY_ADMIN,
                           retention_days=_settings().webhooks.attempt_retention_days,
                           **context)


@contextmanager
def _fields() -> Iterator[None]:
    """A refusal about one field (the URL, the description, the event types) is shown
    next to that field, in the words of its label."""
    try:
        yield
    except InvalidFields:
        raise
    except InvalidSetting as exc:
        if exc.field not in FORM_FIELDS:
            raise
        name, label = FORM_FIELDS[exc.field]
        message = exc.message
        if message.startswith(exc.field + " "):
            message = label + message[len(exc.field):]
        raise InvalidFields({name: message}) from None


def _event_types() -> list[str]:
    """The ticked event types; none ticked is every type."""
    return request.form.getlist("event_types")


def type_groups() -> list[tuple[str, list[str]]]:
    """The public event types for the filter's checkboxes, by what they are about."""
    groups: dict[str, list[str]] = {}
    for name in feed.PUBLIC_TYPES.values():
        groups.setdefault(name.split(".", 1)[0], []).append(name)
    return [(TYPE_GROUPS.get(prefix, prefix), names) for prefix, names in groups.items()]


# -- the list and a new endpoint ----------------------------------------------------------------


@_route("")
def webhooks(tenant_id: str | None) -> str:
    _scope(tenant_id)
    return _page("admin/webhooks.html", tenant_id,
                 endpoints=actions.list_endpoints(admin_call(), tenant_id))


@_route("/new")
def webhook_new(tenant_id: str | None) -> str:
    _scope(tenant_id)
    return _page("admin/webhook_new.html", tenant_id, type_groups=type_groups())


@_route("", ("POST",))
def webhook_create(tenant_id: str | None) -> Response:
    _scope(tenant_id)
    come_back_to(hook_url(tenant_id, "webhook_new"))
    with _fields():
        endpoint, secret = actions.create_endpoint(
            admin_call(), _settings(), tenant_id, request.form.get("url", ""),
            request.form.get("description", ""), _event_types())
    db.get_session().commit()
    return redirect(hook_url(tenant_id, "webhook_secret", endpoint_id=endpoint.id,
                             shown=shown_once.stash(secret), new=1), 303)


@_route("/<endpoint_id>/secret")
def webhook_secret(tenant_id: str | None, endpoint_id: str) -> str:
    """A new endpoint's, or a rotated, signing secret: once. A reload says how to get
    a new one."""
    _scope(tenant_id)
    endpoint = actions.get_endpoint(admin_call(), tenant_id, endpoint_id)
    secret = shown_once.take(request.args.get("shown"))
    new = request.args.get("new") == "1"
    explain = ("The endpoint receives the events recorded from now on, each message "
               "signed with this secret (Standard Webhooks: the webhook-signature header). "
               "Give it to the receiver so it can check that a message comes from the "
               "connector." if new else
               "Messages are signed with this secret from now on. The previous secret "
               "signs them too (a second signature) until "
               f"{show_time(endpoint.previous_secret_until)}, so the receiver can switch "
               "without losing a message." if endpoint.previous_secret_until else
               "Messages are signed with this secret from now on; the previous one no "
               "longer signs them.")
    return _page(
        "admin/secret.html", tenant_id,
        title="Webhook endpoint created" if new else "New signing secret",
        secret=secret, label="Signing secret", explain=explain,
        kept="The connector keeps it encrypted to sign messages with",
        again="Rotate the signing secret to get a new one.",
        again_url=hook_url(tenant_id, "webhook_rotate_form", endpoint_id=endpoint.id),
        again_label="Rotate the signing secret…",
        back=hook_url(tenant_id, "webhook", endpoint_id=endpoint.id),
        back_label="Go to the endpoint")


# -- one endpoint -------------------------------------------------------------------------------


def _endpoint(tenant_id: str | None, endpoint_id: str) -> WebhookEndpoint:
    _scope(tenant_id)
    return actions.get_endpoint(admin_call(), tenant_id, endpoint_id)


def _endpoint_url(tenant_id: str | None, endpoint_id: str, anchor: str = "") -> str:
    return hook_url(tenant_id, "webhook", endpoint_id=endpoint_id) + anchor


def _before() -> int | None:
    raw = request.args.get("before", "")
    if not raw:
        return None
    if not digits(raw) or not 1 <= int(raw) <= 2**62:
        raise InvalidSetting(f"before must be a delivery-log entry number; got {raw!r}.")
    return int(raw)


@_route("/<endpoint_id>")
def webhook(tenant_id: str | None, endpoint_id: str) -> Response | str:
    if tenant_id is None:  # the notification's link names no tenant: go to the endpoint's
        owner = _owner(endpoint_id)
        if owner is not None:
            actions.get_endpoint(admin_call(), owner, endpoint_id)  # 404 unless allowed
            query = urlencode(list(request.args.items(multi=True)))
            return redirect(hook_url(owner, "webhook", endpoint_id=endpoint_id)
                            + ("?" + query if query else ""), 303)
    endpoint = _endpoint(tenant_id, endpoint_id)
    try:
        before = _before()
    except InvalidSetting as exc:  # typed into the address: say so, show the newest
        flash(exc.message, "error")
        return redirect(_endpoint_url(tenant_id, endpoint_id), 303)
    rows = actions.list_attempts(admin_call(), tenant_id, endpoint_id, LOG_PER_PAGE + 1,
                                 before)
    return _page("admin/webhook.html", tenant_id, endpoint=endpoint,
                 attempts=rows[:LOG_PER_PAGE], older=len(rows) > LOG_PER_PAGE,
                 before=before, type_groups=type_groups(),
                 cursor=service.position(endpoint).encode())


def _owner(endpoint_id: str) -> str | None:
    """The tenant of an endpoint (None: partner-wide, or no such endpoint)."""
    try:
        return service.get_endpoint(db.get_session(), endpoint_id, any_tenant=True).tenant_id
    except NotFound:
        return None


@_route("/<endpoint_id>/settings", ("POST",))
def webhook_update(tenant_id: str | None, endpoint_id: str) -> Response:
    endpoint = _endpoint(tenant_id, endpoint_id)
    come_back_to(_endpoint_url(tenant_id, endpoint_id, "#settings"))
    before = (endpoint.url, endpoint.description, list(endpoint.event_types))
    with _fields():
        actions.update_endpoint(admin_call(), _settings(), tenant_id, endpoint_id,
                                request.form.get("url", ""),
                                request.form.get("description", ""), _event_types())
    after = (endpoint.url, endpoint.description, list(endpoint.event_types))
    said = ("Nothing changed: the endpoint already had these settings." if after == before
            else "The endpoint's settings are saved." + (
                " Messages go to the new URL from now on, starting with any that waited."
                if after[0] != before[0] else ""))
    return done(said, _endpoint_url(tenant_id, endpoint_id))


@_route("/<endpoint_id>/rotate")
def webhook_rotate_form(tenant_id: str | None, endpoint_id: str) -> str:
    endpoint = _endpoint(tenant_id, endpoint_id)
    return _page("admin/webhook_confirm.html", tenant_id, endpoint=endpoint,
                 action="rotate", question="Rotate the signing secret?",
                 grace_hours=_settings().webhooks.secret_grace_hours)


@_route("/<endpoint_id>/rotate", ("POST",))
def webhook_rotate(tenant_id: str | None, endpoint_id: str) -> Response:
    _endpoint(tenant_id, endpoint_id)
    come_back_to(_endpoint_url(tenant_id, endpoint_id))
    endpoint, secret = actions.rotate_secret(admin_call(), _settings(), tenant_id,
                                             endpoint_id)
    db.get_session().commit()
    return redirect(hook_url(tenant_id, "webhook_secret", endpoint_id=endpoint.id,
                             shown=shown_once.stash(secret)), 303)


@_route("/<endpoint_id>/disable")
def webhook_disable_form(tenant_id: str | None, endpoint_id: str) -> str:
    endpoint = _endpoint(tenant_id, endpoint_id)
    return _page("admin/webhook_confirm.html", tenant_id, endpoint=endpoint,
                 action="disable", question="Disable this endpoint?")


@_route("/<endpoint_id>/disable", ("POST",))
def webhook_disable(tenant_id: str | None, endpoint_id: str) -> Response:
    _endpoint(tenant_id, endpoint_id)
    come_back_to(_endpoint_url(tenant_id, endpoint_id))
    actions.set_enabled(admin_call(), tenant_id, endpoint_id, False)
    return done("The endpoint is disabled: nothing is sent to it. Events wait in the feed; "
                "enabling it delivers them from where it stopped.",
                _endpoint_url(tenant_id, endpoint_id))


@_route("/<endpoint_id>/enable", ("POST",))
def webhook_enable(tenant_id: str | None, endpoint_id: str) -> Response:
    endpoint = _endpoint(tenant_id, endpoint_id)
    come_back_to(_endpoint_url(tenant_id, endpoint_id))
    was = endpoint.enabled
    actions.set_enabled(admin_call(), tenant_id, endpoint_id, True)
    said = ("Nothing changed: the endpoint is already enabled." if was else
            "The endpoint is enabled: the events that waited are delivered now, from "
            "where it stopped.")
    return done(said, _endpoint_url(tenant_id, endpoint_id))


@_route("/<endpoint_id>/ping", ("POST",))
def webhook_ping(tenant_id: str | None, endpoint_id: str) -> Response:
    _endpoint(tenant_id, endpoint_id)
    come_back_to(_endpoint_url(tenant_id, endpoint_id))
    attempt = actions.ping(admin_call(), _settings(), tenant_id, endpoint_id)
    return _answered(tenant_id, endpoint_id, attempt, "Test ping")


@_route("/<endpoint_id>/replay", ("POST",))
def webhook_replay(tenant_id: str | None, endpoint_id: str) -> Response:
    _endpoint(tenant_id, endpoint_id)
    come_back_to(_endpoint_url(tenant_id, endpoint_id, "#replay"))
    cursor = request.form.get("cursor", "").strip()
    try:
        actions.replay(admin_call(), tenant_id, endpoint_id, cursor)
    except feed.InvalidFeedQuery as exc:
        raise InvalidFields({"cursor": exc.message}) from None
    where = "after that cursor" if cursor else "from the oldest event in the feed"
    return done(f"Replay set: every event {where} is delivered again, in order, starting "
                "now. The delivery log below shows it arrive.",
                _endpoint_url(tenant_id, endpoint_id))


@_route("/<endpoint_id>/delete")
def webhook_delete_form(tenant_id: str | None, endpoint_id: str) -> str:
    endpoint = _endpoint(tenant_id, endpoint_id)
    return _page("admin/webhook_confirm.html", tenant_id, endpoint=endpoint,
                 action="delete", question="Delete this endpoint?")


@_route("/<endpoint_id>/delete", ("POST",))
def webhook_delete(tenant_id: str | None, endpoint_id: str) -> Response:
    endpoint = _endpoint(tenant_id, endpoint_id)
    come_back_to(_endpoint_url(tenant_id, endpoint_id))
    url = endpoint.url
    actions.delete_endpoint(admin_call(), tenant_id, endpoint_id)
    return done(f"The endpoint {shortened(url)} is deleted, with its delivery log: nothing "
                "is sent to it any more.", hook_url(tenant_id, "webhooks"))


# -- the delivery log ---------------------------------------------------------------------------


def _attempt(tenant_id: str | None, endpoint_id: str, attempt_id: int) -> WebhookAttempt:
    """One entry of the endpoint's delivery log (through the log's own reading)."""
    found = actions.list_attempts(admin_call(), tenant_id, endpoint_id, 1,
                                  attempt_id + 1) if attempt_id < 2**62 else []
    if not found or found[0].id != attempt_id:
        raise NotFound(f"Delivery attempt {attempt_id} of this endpoint not found.")
    return found[0]


@_route("/<endpoint_id>/attempts/<int:attempt_id>")
def webhook_attempt(tenant_id: str | None, endpoint_id: str, attempt_id: int) -> str:
    endpoint = _endpoint(tenant_id, endpoint_id)
    return _page("admin/webhook_attempt.html", tenant_id, endpoint=endpoint,
                 attempt=_attempt(tenant_id, endpoint_id, attempt_id))


@_route("/<endpoint_id>/attempts/<int:attempt_id>/redeliver", ("POST",))
def webhook_redeliver(tenant_id: str | None, endpoint_id: str, attempt_id: int) -> Response:
    _endpoint(tenant_id, endpoint_id)
    come_back_to(hook_url(tenant_id, "webhook_attempt", endpoint_id=endpoint_id,
                          attempt_id=attempt_id))
    attempt = actions.redeliver(admin_call(), _settings(), tenant_id, endpoint_id,
                                attempt_id)
    return _answered(tenant_id, endpoint_id, attempt, "Redelivery")


def _answered(tenant_id: str | None, endpoint_id: str, attempt: WebhookAttempt,
              what: str) -> Response:
    """After a ping or a redelivery: the receiver's answer, on the attempt's page."""
    there = hook_url(tenant_id, "webhook_attempt", endpoint_id=endpoint_id,
                     attempt_id=attempt.id)
    if attempt.succeeded:
        return done(f"{what} delivered: the receiver answered {attempt.status_code} in "
                    f"{attempt.duration_ms:,} ms.", there)
    db.get_session().commit()  # the attempt is logged, failed or not
    answer = (f"The receiver answered {attempt.status_code}" if attempt.status_code
              else "No answer")
    text = f"{answer}: {attempt.error}" if attempt.error else f"{answer}."
    # flash keeps any value the session cookie can serialise, though Flask types it as text
    flash({"title": f"{what} failed.", "text": shortened(text),  # type: ignore[arg-type]
           "hint": "The receiver's answer is below; fix the receiver or the URL, then try "
                   "again."}, "problem")
    return redirect(there, 303)
