"""What a notification says: for each kind of condition, what happened, the page to act
on and what to do next; and the e-mail (plain text and HTML, every value escaped)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from markupsafe import escape

from connector import mail, urls
from connector.config import Settings
from connector.models import NotifyCondition, Tenant


@dataclass(frozen=True)
class Kind:
    title: str  # what happened, for a subject line and a notice
    page: str  # path under the admin UI, formatted with tenant and key
    next_step: str  # what the admin should do


KINDS: dict[str, Kind] = {
    "round_held": Kind(
        "Entra ID sync round held for approval", "tenants/{tenant}/entra/runs/{key}",
        "Review the round's disables and deletions, then approve or reject it. No new round "
        "runs until you decide."),
    "quarantined": Kind(
        "Entra ID sync quarantined", "tenants/{tenant}/entra",
        "Check the app registration (secret or certificate expired, permission removed) and "
        "the last error, then run a round: the sync runs only once a day until one succeeds."),
    "rounds_failing": Kind(
        "Entra ID sync rounds failing", "tenants/{tenant}/entra/runs",
        "Open the run log to see why the rounds fail, fix the cause, then run a round."),
    "scim_errors": Kind(
        "SCIM requests failing",
        "tenants/{tenant}/provisioning-log?source=scim&result=failure",
        "The provisioning log lists each failed request with its reason. A paused tenant "
        "or values the connector rejects are the usual causes; a revoked or mistyped SCIM "
        "token shows in the identity provider's own provisioning logs (the connector cannot "
        "tell whose request that was) and is replaced on the provisioning settings page."),
    "month_close_failed": Kind(
        "Billing month close failed", "tenants/{tenant}/billing",
        "Open the tenant's billing page to see the error; the close is tried again at every "
        "pass and this clears when the month closes."),
    # Raised for a tenant's endpoint, or (tenant "", partner admins only) a partner-wide one.
    "webhook_disabled": Kind(
        "Webhook endpoint disabled", "webhooks/{key}",
        "The receiver failed every delivery for days. Check the endpoint's delivery log for "
        "the answers it gave, fix the receiver or the URL, then enable the endpoint: the "
        "events that waited are delivered from where it stopped."),
}


PARTNER_WIDE_NAME = "all tenants (partner-wide)"


def partner_wide() -> Tenant:
    """What a condition of no single tenant (tenant_id "") names as its tenant."""
    return Tenant(id="", name=PARTNER_WIDE_NAME)


def link(settings: Settings, condition: NotifyCondition) -> str:
    """The absolute URL of the page to act on."""
    path = KINDS[condition.kind].page.format(tenant=condition.tenant_id, key=condition.key)
    return urls.admin_url(settings) + path


def subject(condition: NotifyCondition, tenant: Tenant, reason: str) -> str:
    what = KINDS[condition.kind].title
    suffix = f" ({condition.key})" if condition.kind == "month_close_failed" and \
        condition.key else ""
    reminder = "Reminder: " if reason == "reminder" else ""
    return f"{reminder}{what}{suffix} for {tenant.name}"


def text_body(settings: Settings, condition: NotifyCondition, tenant: Tenant,
              reason: str) -> str:
    kind = KINDS[condition.kind]
    since = condition.raised_at.strftime("%Y-%m-%d %H:%M UTC")
    still = "is still" if reason == "reminder" else "is"
    return "\n".join([
        f"{kind.title} for tenant {tenant.name} ({tenant.id}): this {still} raised "
        f"since {since}.", "", condition.detail, "", f"What to do: {kind.next_step}", "",
        f"Open: {link(settings, condition)}", "",
        "You receive this as an admin of the tenant or a partner admin; you can turn these "
        f"e-mails off on your account page: {urls.admin_url(settings)}account", ""])


def html_body(settings: Settings, condition: NotifyCondition, tenant: Tenant,
              reason: str) -> str:
    kind = KINDS[condition.kind]
    since = condition.raised_at.strftime("%Y-%m-%d %H:%M UTC")
    still = "is still" if reason == "reminder" else "is"
    url = link(settings, condition)
    return (
        "<!doctype html><html><body>"
        f"<p><strong>{escape(kind.title)}</strong> for tenant <strong>{escape(tenant.name)}"
        f"</strong> ({escape(tenant.id)}): this {still} raised since {escape(since)}.</p>"
        f"<p>{escape(condition.detail)}</p>"
        f"<p>What to do: {escape(kind.next_step)}</p>"
        f'<p><a href="{escape(url)}">Open the page to act on</a></p>'
        "<p><small>You receive this as an admin of the tenant or a partner admin; "
        f'<a href="{escape(urls.admin_url(settings))}account">turn these e-mails off</a> '
        "on your account page.</small></p></body></html>")


def compose(settings: Settings, condition: NotifyCondition, tenant: Tenant, to: str,
            reason: str, now: dt.datetime) -> EmailMessage:
    """The e-mail to one admin: plain text with an HTML alternative."""
    message = EmailMessage()
    message["Subject"] = subject(condition, tenant, reason)
    message["From"] = settings.billing.mail_from
    message["To"] = to
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("notify", domain=mail.domain_of(
        settings.billing.mail_from))
    message.set_content(text_body(settings, condition, tenant, reason))
    message.add_alternative(html_body(settings, condition, tenant, reason), subtype="html")
    return message
