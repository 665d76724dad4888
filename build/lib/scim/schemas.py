"""The schemas this service provider publishes and enforces (RFC 7643 §4, §7, §8.7).

One declaration drives discovery (`/Schemas`), validation of incoming resources, the
filter allow-list and the `attributes`/`excludedAttributes` projection, so what we
publish is exactly what we store. Pure: no Flask, no SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CONNECTOR_USER = "urn:connector:params:scim:schemas:extension:2.0:User"
CONNECTOR_GROUP = "urn:connector:params:scim:schemas:extension:2.0:Group"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
SERVICE_PROVIDER_CONFIG = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"


@dataclass(frozen=True)
class Attribute:
    """One attribute definition, as RFC 7643 §7 describes it."""

    name: str
    type: str = "string"  # string boolean decimal integer dateTime reference complex binary
    multi_valued: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"  # readOnly readWrite immutable writeOnly
    returned: str = "default"  # always never default request
    uniqueness: str = "none"
    description: str = ""
    sub_attributes: tuple[Attribute, ...] = ()
    canonical_values: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()

    def sub(self, name: str) -> Attribute | None:
        """Find a sub-attribute by name, case-insensitively (RFC 7643 §2.1)."""
        lowered = name.lower()
        for attr in self.sub_attributes:
            if attr.name.lower() == lowered:
                return attr
        return None

    def to_scim(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi_valued,
            "description": self.description or self.name,
            "required": self.required,
            "mutability": self.mutability,
            "returned": self.returned,
        }
        if self.type in {"string", "reference", "binary"}:
            out["caseExact"] = self.case_exact
        if self.type in {"string", "reference", "binary"} or self.uniqueness != "none":
            out["uniqueness"] = self.uniqueness
        if self.canonical_values:
            out["canonicalValues"] = list(self.canonical_values)
        if self.reference_types:
            out["referenceTypes"] = list(self.reference_types)
        if self.sub_attributes:
            out["subAttributes"] = [a.to_scim() for a in self.sub_attributes]
        return out


@dataclass(frozen=True)
class Schema:
    id: str
    name: str
    description: str
    attributes: tuple[Attribute, ...]

    def attribute(self, name: str) -> Attribute | None:
        lowered = name.lower()
        for attr in self.attributes:
            if attr.name.lower() == lowered:
                return attr
        return None

    def to_scim(self, location: str) -> dict[str, Any]:
        return {
            "schemas": [SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [a.to_scim() for a in self.attributes],
            "meta": {"resourceType": "Schema", "location": f"{location}/Schemas/{self.id}"},
        }


@dataclass(frozen=True)
class AttrRef:
    """A resolved attribute path: schema, attribute, optional sub-attribute."""

    schema: Schema
    attribute: Attribute
    sub_attribute: Attribute | None = None

    @property
    def target(self) -> Attribute:
        return self.sub_attribute or self.attribute

    @property
    def is_core(self) -> bool:
        return self.schema.id in (USER, GROUP, "common")

    def __str__(self) -> str:
        path = self.attribute.name
        if self.sub_attribute is not None:
            path += "." + self.sub_attribute.name
        return path if self.is_core else f"{self.schema.id}:{path}"


@dataclass(frozen=True)
class ResourceType:
    name: str
    endpoint: str
    description: str
    schema: Schema
    extensions: tuple[Schema, ...] = field(default=())

    @property
    def all_schemas(self) -> tuple[Schema, ...]:
        return (self.schema, *self.extensions)

    def schema_by_urn(self, urn: str) -> Schema | None:
        lowered = urn.lower()
        for schema in self.all_schemas:
            if schema.id.lower() == lowered:
                return schema
        return None

    def resolve(self, path: str) -> AttrRef | None:
        """Resolve `name`, `name.sub`, or a URN-qualified path; None if not ours.

        Common attributes (`id`, `externalId`, `meta.*`) resolve against COMMON.
        """
        schema, rest = self._split_urn(path)
        if not rest:
            return None
        name, _, sub = rest.partition(".")
        if schema is None:
            common = COMMON.attribute(name)
            if common is not None:
                return _ref(COMMON, common, sub)
            schema = self.schema
        attr = schema.attribute(name)
        if attr is None:
            return None
        return _ref(schema, attr, sub)

    def _split_urn(self, path: str) -> tuple[Schema | None, str]:
        if not path.lower().startswith("urn:"):
            return None, path
        # Longest schema URN that prefixes the path, then ":" then the attribute path.
        for schema in sorted(self.all_schemas, key=lambda s: -len(s.id)):
            prefix = schema.id.lower() + ":"
            if path.lower().startswith(prefix):
                return schema, path[len(prefix) :]
            if path.lower() == schema.id.lower():
                return schema, ""
        return UNKNOWN_SCHEMA, ""

    def to_scim(self, location: str) -> dict[str, Any]:
        return {
            "schemas": [RESOURCE_TYPE],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description,
            "schema": self.schema.id,
            "schemaExtensions": [{"schema": s.id, "required": False} for s in self.extensions],
            "meta": {"resourceType": "ResourceType",
                     "location": f"{location}/ResourceTypes/{self.name}"},
        }


def _ref(schema: Schema, attr: Attribute, sub: str) -> AttrRef | None:
    if not sub:
        return AttrRef(schema, attr)
    sub_attr = attr.sub(sub)
    if sub_attr is None:
        return None
    return AttrRef(schema, attr, sub_attr)


def _s(name: str, **kw: Any) -> Attribute:
    return Attribute(name, "string", **kw)


def _b(name: str, **kw: Any) -> Attribute:
    return Attribute(name, "boolean", **kw)


def _multi(name: str, types: tuple[str, ...], description: str, value: Attribute | None = None,
           extra: tuple[Attribute, ...] = ()) -> Attribute:
    """A multi-valued complex attribute of the usual value/display/type/primary shape."""
    return Attribute(
        name,
        "complex",
        multi_valued=True,
        description=description,
        sub_attributes=(
            value or _s("value"),
            _s("display"),
            *extra,
            _s("type", canonical_values=types),
            _b("primary", description="The primary value; at most one is true."),
        ),
    )



COMMON = Schema(
    "common",
    "Common",
    "Attributes every resource has (RFC 7643 §3.1).",
    (
        _s("id", case_exact=True, mutability="readOnly", returned="always", uniqueness="server"),
        _s("externalId", case_exact=True),
        Attribute(
            "meta",
            "complex",
            mutability="readOnly",
            sub_attributes=(
                _s("resourceType", case_exact=True, mutability="readOnly"),
                Attribute("created", "dateTime", mutability="readOnly"),
                Attribute("lastModified", "dateTime", mutability="readOnly"),
                Attribute("location", "reference", mutability="readOnly", case_exact=True,
                          reference_types=("uri",)),
                _s("version", case_exact=True, mutability="readOnly"),
            ),
        ),
    ),
)

# A placeholder returned when a path names a schema URN we do not serve.
UNKNOWN_SCHEMA = Schema("unknown", "Unknown", "", ())

USER_SCHEMA = Schema(
    USER,
    "User",
    "User Account",
    (
        _s("userName", required=True, uniqueness="server",
           description="Unique identifier for the user, case-insensitive within the tenant."),
        Attribute(
            "name",
            "complex",
            description="The components of the user's name.",
            sub_attributes=(
                _s("formatted"),
                _s("familyName"),
                _s("givenName"),
                _s("middleName"),
                _s("honorificPrefix"),
                _s("honorificSuffix"),
            ),
        ),
        _s("displayName"),
        _s("nickName"),
        Attribute("profileUrl", "reference", reference_types=("external",)),
        _s("title"),
        _s("userType", description="e.g. Employee, Contractor, Guest. 'Guest' marks a guest."),
        _s("preferredLanguage"),
        _s("locale"),
        _s("timezone"),
        _b("active", description="Whether the user may use the workspace; status rules apply."),
        _s("password", mutability="writeOnly", returned="never",
           description="Accepted and discarded: the connector authenticates no one."),
        _multi("emails", ("work", "home", "other"), "Email addresses."),
        _multi("phoneNumbers", ("work", "home", "mobile", "fax", "pager", "other"),
               "Phone numbers."),
        _multi("ims", ("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"),
               "Instant messaging addresses."),
        _multi("photos", ("photo", "thumbnail"), "Photo URLs.",
               value=Attribute("value", "reference", reference_types=("external",))),
        Attribute(
            "addresses",
            "complex",
            multi_valued=True,
            description="Physical mailing addresses.",
            sub_attributes=(
                _s("formatted"),
                _s("streetAddress"),
                _s("locality"),
                _s("region"),
                _s("postalCode"),
                _s("country"),
                _s("type", canonical_values=("work", "home", "other")),
                _b("primary"),
            ),
        ),
        Attribute(
            "groups",
            "complex",
            multi_valued=True,
            mutability="readOnly",
            description="Groups the user is a direct member of; change through /Groups.",
            sub_attributes=(
                _s("value", mutability="readOnly"),
                Attribute("$ref", "reference", mutability="readOnly",
                          reference_types=("Group",)),
                _s("display", mutability="readOnly"),
                _s("type", mutability="readOnly", canonical_values=("direct",)),
            ),
        ),
        _multi("entitlements", (), "Entitlements."),
        _multi("roles", (), "Roles."),
        _multi("x509Certificates", (), "Certificates.",
               value=Attribute("value", "binary")),
    ),
)

ENTERPRISE_USER_SCHEMA = Schema(
    ENTERPRISE_USER,
    "EnterpriseUser",
    "Enterprise User",
    (
        _s("employeeNumber"),
        _s("costCenter"),
        _s("organization"),
        _s("division"),
        _s("department"),
        Attribute(
            "manager",
            "complex",
            sub_attributes=(
                _s("value", description="The manager's id."),
                Attribute("$ref", "reference", reference_types=("User",)),
                _s("displayName", mutability="readOnly"),
            ),
        ),
    ),
)

FRONTLINE_ROLES = ("customerFacing", "backstage", "publicService", "medical", "other")

CONNECTOR_USER_SCHEMA = Schema(
    CONNECTOR_USER,
    "ConnectorUser",
    "The workplace's own user attributes: guest, admin, modules, frontline plan.",
    (
        _b("guest", description="A guest user. Defaults to userType eq \"Guest\" when unset."),
        _b("externalCompanyGuest",
           description="A guest invited from another company into a multi-company group."),
        _b("admin", description="A workspace admin."),
        Attribute("modules", "string", multi_valued=True,
                  description="Modules assigned to the user directly (from the tenant catalogue)."),
        Attribute("desklessPercent", "integer",
                  description="Share of working time spent away from a desk, 0-100."),
        _b("paidHourly"),
        _b("hasEmail", description="False for staff without an e-mail address."),
        _s("frontlineRole", canonical_values=FRONTLINE_ROLES,
           description="Role category for the frontline plan."),
    ),
)

GROUP_SCHEMA = Schema(
    GROUP,
    "Group",
    "Group",
    (
        _s("displayName", required=True, uniqueness="server"),
        Attribute(
            "members",
            "complex",
            multi_valued=True,
            description="Direct members: users or groups of this tenant.",
            sub_attributes=(
                _s("value", mutability="immutable", case_exact=True),
                Attribute("$ref", "reference", mutability="immutable",
                          reference_types=("User", "Group")),
                _s("type", mutability="immutable", canonical_values=("User", "Group")),
            ),
        ),
    ),
)

CONNECTOR_GROUP_SCHEMA = Schema(
    CONNECTOR_GROUP,
    "ConnectorGroup",
    "The workplace's own group attributes.",
    (
        Attribute("modules", "string", multi_valued=True,
                  description="Modules every member gets through this group."),
    ),
)

USER_TYPE = ResourceType(
    "User", "/Users", "User Account", USER_SCHEMA, (ENTERPRISE_USER_SCHEMA, CONNECTOR_USER_SCHEMA)
)
GROUP_TYPE = ResourceType("Group", "/Groups", "Group", GROUP_SCHEMA, (CONNECTOR_GROUP_SCHEMA,))
RESOURCE_TYPES = (USER_TYPE, GROUP_TYPE)
PUBLISHED_SCHEMAS = (USER_SCHEMA, ENTERPRISE_USER_SCHEMA, CONNECTOR_USER_SCHEMA, GROUP_SCHEMA,
                     CONNECTOR_GROUP_SCHEMA)

# Multi-valued user attributes indexed in the user_values table for filtering.
INDEXED_MULTI_VALUED = ("emails", "phoneNumbers", "ims", "photos", "addresses", "entitlements",
                        "roles", "x509Certificates")
