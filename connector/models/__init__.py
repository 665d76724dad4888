"""The storage schema: current-state tables and the append-only event log.

Every table is keyed by tenant first, so tenants can later be spread over several
database servers by tenant id. The current-state tables are what SCIM, the UI and the
API read; the event log is what billing and history read. Only the directory service
(`connector.directory`) writes users, groups, memberships, modules and events.

One module per owner, all on one declarative base (`base`); import the classes from
here. Which code writes each table is said in its module.
"""

from connector.models.admins import (
    AdminAccount,
    AdminSession,
    AdminToken,
    AuditEntry,
    InstanceKey,
)
from connector.models.base import NAMING, Base, EventId, UTCDateTime
from connector.models.billing import (
    Activity,
    BillingAdjustment,
    BillingClose,
    BillingLine,
    BillingMailOutbox,
    BillingProfile,
    EventArchive,
    ReportingKey,
)
from connector.models.directory import (
    Event,
    Group,
    GroupModule,
    Membership,
    User,
    UserModule,
    UserSearchWord,
    UserValue,
)
from connector.models.entra_mappings import EntraAttributeMap, EntraManagerWait
from connector.models.notify import (
    NotifyCondition,
    NotifyOptOut,
    NotifyOutbox,
    ScimMinuteCount,
)
from connector.models.provlog import ProvisioningEntry
from connector.models.sync import (
    AppThrottle,
    EntraRegistration,
    SyncPending,
    SyncPendingMember,
    SyncRequest,
    SyncRun,
    SyncStaged,
    SyncState,
)
from connector.models.tenants import Module, ScimToken, Tenant, TenantCounter
from connector.models.webhooks import WebhookAttempt, WebhookEndpoint
from connector.models.workers import WorkerBeat

__all__ = [
    "Activity",
    "AdminAccount",
    "AdminSession",
    "AdminToken",
    "AppThrottle",
    "AuditEntry",
    "Base",
    "BillingAdjustment",
    "BillingClose",
    "BillingLine",
    "BillingMailOutbox",
    "BillingProfile",
    "EntraAttributeMap",
    "EntraManagerWait",
    "EntraRegistration",
    "Event",
    "EventArchive",
    "EventId",
    "Group",
    "GroupModule",
    "InstanceKey",
    "Membership",
    "Module",
    "ProvisioningEntry",
    "NAMING",
    "NotifyCondition",
    "NotifyOptOut",
    "NotifyOutbox",
    "ReportingKey",
    "ScimMinuteCount",
    "ScimToken",
    "SyncPending",
    "SyncPendingMember",
    "SyncRequest",
    "SyncRun",
    "SyncStaged",
    "SyncState",
    "Tenant",
    "TenantCounter",
    "UTCDateTime",
    "User",
    "UserModule",
    "UserSearchWord",
    "UserValue",
    "WebhookAttempt",
    "WebhookEndpoint",
    "WorkerBeat",
]
