"""The one place SCIM JSON meets the domain: validate resources, cast them to the
directory's fields, and render stored rows back to SCIM (RFC 7643).

Pure: no Flask, no SQLAlchemy. The views hand in plain values and rows' attributes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connector import limits
from connector.commands import GroupFields, IndexedValue, UserFields
from connector.text import digits
from scim.errors import BadRequest, InvalidSyntax, InvalidValue
from scim.schemas import (
    CONNECTOR_GROUP,
    CONNECTOR_USER,
    CONNECTOR_USER_SCHEMA,
    GROUP,
    GROUP_TYPE,
    INDEXED_MULTI_VALUED,
    USER,
    USER_TYPE,
    Attribute,
    ResourceType,
    Schema,
)

# Attributes whose truth lives in columns or tables, not in the stored profile `data`.
USER_COLUMNS = {"id", "externalid", "meta", "schemas", "username", "displayname", "active",
                "password", "groups"}
# Stored in their own tables rather than in the user's JSON document.
CONNECTOR_USER_TABLES = {"modules"}
# Flags kept both as columns (effective value) and in the document (what the client said).
CONNECTOR_USER_FLAGS = (("guest", "guest"), ("externalCompanyGuest", "external_company_guest"),
                        ("admin", "admin"))
GROUP_COLUMNS = {"id", "externalid", "meta", "schemas", "displayname", "members"}


@dataclass(frozen=True)
class Meta:
    """What rendering needs from a stored row besides its data."""

    id: str
    resource_type: str
    created: dt.datetime
    last_modified: dt.datetime
    version: int
    location: str


def etag(version: int) -> str:
    """A weak entity tag for a resource version (RFC 7644 §3.14)."""
    return f'W/"{version}"'


def parse_etag(value: str) -> int | None:
    """Read a version back from an entity tag; None for anything we never issued."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    return int(value) if digits(value) else None


# RFC 7232 §2.3: an entity-tag is an optional weak prefix and a quoted opaque tag, which
# may itself hold a comma; a list may have empty elements (RFC 7230 §7).
_TAG = r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"'
_TAG_LIST = re.compile(rf"[ \t,]*{_TAG}(?:[ \t]*,[ \t,]*{_TAG})*[ \t,]*")


def parse_if_match(value: str) -> frozenset[int] | None:
    """The versions an If-Match header accepts (RFC 7232 §3.1): None for `*` (any
    existing version), else those of the listed tags, compared weakly as RFC 7644 §3.14's
    weak ETags need. A tag we never issued matches nothing; a header that is neither `*`
    nor a list of entity tags is refused, not read as a mismatch."""
    if value.strip() == "*":
        return None
    if _TAG_LIST.fullmatch(value) is None:
        raise BadRequest(f'If-Match must be * or a list of entity tags such as W/"3", W/"4"; '
                         f"got {value[:100]!r}.")
    versions = (parse_etag(tag) for tag in re.findall(_TAG, value))
    return frozenset(v for v in versions if v is not None)


# -- validation ----------------------------------------------------------------


def validate(body: Any, resource_type: ResourceType) -> dict[str, Any]:
    """Check a POST/PUT body against the schemas and return it in canonical form.

    Canonical: attribute names in the schema's spelling, values of the declared
    types, readOnly and null attributes dropped, extensions for schemas we do not
    serve dropped (RFC 7644 §3.3 lets a provider ignore them).
    """
    if not isinstance(body, dict):
        raise InvalidSyntax("The request body must be a JSON object.")
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas):
        raise InvalidSyntax("'schemas' must be a list of schema URNs.")
    if resource_type.schema.id.lower() not in {s.lower() for s in schemas}:
        raise InvalidSyntax(f"'schemas' must include {resource_type.schema.id}.")
    out: dict[str, Any] = {}
    for key, value in body.items():
        lowered = key.lower()
        if lowered == "schemas" or value is None:
            continue
        if lowered.startswith("urn:"):
            _validate_extension(key, value, resource_type, out)
            continue
        _put(out, resource_type.schema, key, value, "")
    return out


def _validate_extension(key: str, value: Any, resource_type: ResourceType,
                        out: dict[str, Any]) -> None:
    schema = resource_type.schema_by_urn(key)
    if schema is None:
        if key.lower().startswith(resource_type.schema.id.lower() + ":"):
            # A core attribute written with its URN: urn:...:core:2.0:User:userName
            _put(out, resource_type.schema, key[len(resource_type.schema.id) + 1:], value, "")
        return  # an extension we do not serve: ignored, not an error
    if not isinstance(value, dict):
        raise InvalidValue(f"'{schema.id}' must be an object of extension attributes.")
    section: dict[str, Any] = {}
    for name, item in value.items():
        if item is not None:
            _put(section, schema, name, item, schema.id + ":")
    if section:
        out[schema.id] = section


def _put(out: dict[str, Any], schema: Schema, name: str, value: Any, prefix: str) -> None:
    attr = schema.attribute(name)
    if attr is None:
        if schema.id in (USER, GROUP) and name.lower() in {"id", "externalid", "meta"}:
            attr = _COMMON_ATTRS[name.lower()]
        else:
            raise InvalidValue(f"Unknown attribute '{prefix}{name}' for {schema.name}.")
    if attr.mutability == "readOnly":
        return  # RFC 7643 §7: readOnly values in a request are ignored
    cast = cast_value(attr, value, prefix + attr.name)
    if cast is not None:
        out[attr.name] = cast


def cast_value(attr: Attribute, value: Any, path: str) -> Any:
    """Check one attribute value against its definition; return it canonicalised."""
    if value is None:
        return None
    if attr.multi_valued:
        items = value if isinstance(value, list) else [value]
        cast = [c for c in (_cast_single(attr, v, path) for v in items) if c not in (None, {})]
        return _one_primary(_without_repeats(attr, cast)) if cast else None
    if isinstance(value, list):
        # Entra sends single-valued complex attributes (manager) as one-element arrays.
        if len(value) > 1:
            raise InvalidValue(f"'{path}' is single-valued; got a list of {len(value)}.")
        value = value[0] if value else None
        if value is None:
            return None
    return _cast_single(attr, value, path)


def _cast_single(attr: Attribute, value: Any, path: str) -> Any:
    if value is None:
        return None
    if attr.type == "complex":
        return _cast_complex(attr, value, path)
    caster = _CASTERS[attr.type]
    try:
        cast = caster(value)
    except (TypeError, ValueError) as exc:
        # A value never returned (the password) is not repeated either: the message goes
        # into the provisioning log, for every admin of the tenant to read.
        got = (f"a {type(value).__name__}" if attr.returned == "never"
               else f"{value!r:.80}")
        raise InvalidValue(f"'{path}' must be of type {attr.type}; got {got}.") from exc
    if isinstance(cast, str):
        indexed = path.split(".")[0] in INDEXED_MULTI_VALUED and attr.name == "value"
        refused = limits.refusal(path, cast, max_length(attr, path), indexed)
        if refused is not None:
            raise InvalidValue(refused.message)
    return cast


def max_length(attr: Attribute, path: str) -> int:
    """The most characters a text attribute may have (docs/scim.md, "Maximum lengths")."""
    lowered = path.lower()
    if attr.type in ("reference", "binary"):
        return limits.URL
    if lowered.endswith("members.value"):
        return limits.ID
    if attr.name == "type":
        return limits.TYPE
    if attr.name == "externalId" or lowered.endswith("manager.value"):
        return limits.EXTERNAL_ID
    if attr.name == "modules":
        return limits.MODULE
    if attr.name == "password" or (lowered.startswith("addresses.")
                                   and attr.name in ("formatted", "streetAddress")):
        return limits.TEXT
    return limits.NAME


def _cast_complex(attr: Attribute, value: Any, path: str) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        value_attr = attr.sub("value")
        # Only a single-valued reference (manager) may come as a bare id; a bare string
        # where a list of objects belongs (emails) is a client error, not a shorthand.
        if value_attr is None or attr.multi_valued or isinstance(value, (list, dict)):
            raise InvalidValue(f"'{path}' must be an object.")
        value = {"value": value}  # e.g. manager given as a bare id
    out: dict[str, Any] = {}
    for name, item in value.items():
        sub = attr.sub(name)
        if sub is None and name.lower() == "display" and attr.name == "members":
            continue  # Okta sends the member's name; it is not ours to store
        if sub is None:
            raise InvalidValue(f"Unknown sub-attribute '{path}.{name}'.")
        if sub.mutability == "readOnly" or item is None:
            continue
        cast = _cast_single(sub, item, f"{path}.{sub.name}")
        if cast is not None and cast != "":
            out[sub.name] = cast
    return out or None


def _without_repeats(attr: Attribute, items: list[Any]) -> list[Any]:
    """Drop values given twice: an element whose (type, value) came earlier, compared as
    the schema says (caseExact), is merged into that one (RFC 7643 §2.4: a service
    provider SHOULD NOT return the same (type, value) combination more than once)."""
    value_attr = attr.sub("value")
    kept: dict[Any, Any] = {}
    for item in items:
        key = _repeat_key(item, value_attr)
        first = kept.setdefault(key, item)
        if first is not item and isinstance(first, dict):
            for name, value in item.items():
                if name == "primary":
                    first["primary"] = first.get("primary") is True or value is True
                else:
                    first.setdefault(name, value)
    return list(kept.values()) if len(kept) < len(items) else items


def _repeat_key(item: Any, value_attr: Attribute | None) -> Any:
    if not isinstance(item, dict):
        return ("simple", item)
    if value_attr is None or "value" not in item:  # addresses: only a whole repeat
        return ("element", json.dumps(item, sort_keys=True))
    value, kind = item["value"], item.get("type")
    if isinstance(value, str) and not value_attr.case_exact:
        value = value.casefold()
    return ("value", value, kind.casefold() if isinstance(kind, str) else kind)


def _one_primary(items: list[Any]) -> list[Any]:
    """Keep at most one `primary: true` (RFC 7643 §2.4): the first one wins."""
    seen = False
    for item in items:
        if isinstance(item, dict) and item.get("primary") is True:
            if seen:
                item["primary"] = False
            seen = True
    return items


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"  # Entra ID sends "True"/"False"
    raise TypeError


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError
    return value


def _decimal(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError
    return float(value)


def _datetime(value: Any) -> str:
    parsed = dt.datetime.fromisoformat(_string(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("no time zone")
    return parsed.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _binary(value: Any) -> str:
    text = _string(value)
    try:
        base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc
    return text


_CASTERS = {"string": _string, "reference": _string, "boolean": _boolean,
            "integer": _integer, "decimal": _decimal, "dateTime": _datetime, "binary": _binary}
_COMMON_ATTRS = {"externalid": Attribute("externalId", case_exact=True),
                 "id": Attribute("id", mutability="readOnly"),
                 "meta": Attribute("meta", "complex", mutability="readOnly")}


# -- resource -> directory fields ------------------------------------------------


def copy_json(value: Any) -> Any:
    """A copy of a JSON document (dicts and lists copied all the way down; strings,
    numbers, booleans and None shared, being immutable): what `copy.deepcopy` gives for
    one, several times faster, on every write's body."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def user_fields(doc: Mapping[str, Any], complete: bool = False,
                cleared: frozenset[str] = frozenset(),
                stored_frontline: Mapping[str, Any] | None = None) -> UserFields:
    """Split a validated User into what the directory stores where.

    `complete` says the document is the whole resource (the result of a PATCH applied to
    the stored user, rendered with every flag and frontline attribute in effect): an
    attribute missing from it was removed. A POST or PUT body is not complete: IdPs that
    PUT (Okta) omit attributes they do not map, and an attribute the IdP does not send
    is not one it set to nothing. So a PUT leaves the connector's own attributes (guest,
    externalCompanyGuest, admin, modules, the frontline plan's) as they are unless it
    gives a value, or gives null (`cleared`, from `cleared_attributes`). A PUT's
    frontline attributes are merged into `stored_frontline` one by one.
    """
    user_name = doc.get("userName")
    if not isinstance(user_name, str) or not user_name.strip():
        raise InvalidValue("'userName' is required and must be a non-empty string.")
    ext = dict(doc.get(CONNECTOR_USER, {}))
    data = {k: copy_json(v) for k, v in doc.items()
            if k.lower() not in USER_COLUMNS and k != CONNECTOR_USER}
    kept_ext = {k: v for k, v in ext.items() if k.lower() not in CONNECTOR_USER_TABLES}
    if kept_ext:
        data[CONNECTOR_USER] = kept_ext
    modules = ext.get("modules")
    if modules is None and (complete or "modules" in cleared):
        modules = []
    if complete:
        frontline: dict[str, Any] | None = frontline_attributes(ext, data)
    else:
        frontline = _merged_frontline(stored_frontline, ext, data, cleared)
    return UserFields(
        user_name=user_name,
        external_id=doc.get("externalId") or None,
        display_name=doc.get("displayName") or None,
        data=data,
        values=tuple(indexed_values(data)),
        active=doc.get("active"),
        guest=_guest(doc, ext, complete or "guest" in cleared),
        external_company_guest=_flag(ext, "externalCompanyGuest",
                                     complete or "externalCompanyGuest" in cleared),
        admin=_flag(ext, "admin", complete or "admin" in cleared),
        modules=tuple(modules) if modules is not None else None,
        frontline=frontline,
    )


def _flag(ext: Mapping[str, Any], name: str, absent_is_false: bool) -> bool | None:
    """An extension flag as given; absent: False or None (leave it)."""
    value = ext.get(name)
    if value is None:
        return False if absent_is_false else None
    return bool(value)


def _guest(doc: Mapping[str, Any], ext: Mapping[str, Any], absent_is_false: bool
           ) -> bool | None:
    """A guest is marked by either the extension flag or Entra's userType "Guest". Only
    the flag unmarks one: a userType such as "Member" (which IdPs send with every PUT)
    does not undo an admin's guest flag."""
    said = ext.get("guest")
    if said is True or str(doc.get("userType") or "").strip().lower() == "guest":
        return True
    if said is not None:
        return False
    return False if absent_is_false else None


def cleared_attributes(body: Any) -> frozenset[str]:
    """The workplace extension's attributes a POST/PUT body gives as null (RFC 7643
    §2.5: unassigned): those, unlike the ones it leaves out, it asks to clear. A null
    extension object clears all of them."""
    if not isinstance(body, dict):
        return frozenset()
    names = {a.name.lower(): a.name for a in CONNECTOR_USER_SCHEMA.attributes}
    for key, value in body.items():
        if key.lower() != CONNECTOR_USER.lower():
            continue
        if value is None:
            return frozenset(names.values())
        if isinstance(value, dict):
            return frozenset(names[k.lower()] for k, v in value.items()
                             if v is None and k.lower() in names)
    return frozenset()


def _merged_frontline(stored: Mapping[str, Any] | None, ext: Mapping[str, Any],
                      data: Mapping[str, Any], cleared: frozenset[str]
                      ) -> dict[str, Any] | None:
    """A POST/PUT's frontline attributes over the stored ones, attribute by attribute;
    None when it mentions none of them (nothing to change)."""
    given = {k: ext[k] for k in FRONTLINE_KEYS if ext.get(k) is not None}
    if not given and not cleared.intersection(FRONTLINE_KEYS):
        return None
    merged = {k: v for k, v in (stored or {}).items() if k not in cleared}
    merged.update(given)
    if given and "hasEmail" not in merged:
        merged["hasEmail"] = bool(data.get("emails"))
    return merged


FRONTLINE_KEYS = ("desklessPercent", "paidHourly", "hasEmail", "frontlineRole")


def frontline_attributes(ext: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The frontline plan's attributes a SCIM user carries (billing). Without any of them
    there is nothing to classify; with some, a missing hasEmail is read off `emails`."""
    given = {k: ext[k] for k in FRONTLINE_KEYS if ext.get(k) is not None}
    if given and "hasEmail" not in given:
        given["hasEmail"] = bool(data.get("emails"))
    return given


def indexed_values(data: Mapping[str, Any]) -> Iterable[IndexedValue]:
    """The elements of multi-valued attributes, for the filter index table."""
    for attr in INDEXED_MULTI_VALUED:
        for position, item in enumerate(data.get(attr, ())):
            yield IndexedValue(
                attr=attr, position=position, value=_str_or_none(item.get("value")),
                type=item.get("type"), primary=bool(item.get("primary", False)),
                display=item.get("display"),
                data={k: v for k, v in item.items() if k not in {"value", "type", "primary",
                                                                 "display"}})


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def group_fields(doc: Mapping[str, Any], complete: bool = False
                 ) -> tuple[GroupFields, list[str] | None]:
    """Split a validated Group into fields and the member ids it lists (None: absent).

    `complete` as for `user_fields`: after a PATCH, absent modules were removed.
    """
    name = doc.get("displayName")
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue("'displayName' is required and must be a non-empty string.")
    ext = doc.get(CONNECTOR_GROUP, {})
    data = {k: copy_json(v) for k, v in doc.items()
            if k.lower() not in GROUP_COLUMNS and k != CONNECTOR_GROUP}
    members = doc.get("members")
    member_ids = None if members is None else [member_id(m) for m in members]
    modules = ext.get("modules")
    if modules is None and complete:
        modules = []
    fields = GroupFields(display_name=name, external_id=doc.get("externalId") or None,
                         data=data, modules=tuple(modules) if modules is not None else None)
    return fields, member_ids


def member_id(member: Any) -> str:
    if not isinstance(member, dict) or not isinstance(member.get("value"), str):
        raise InvalidValue("Each member must be an object with a string 'value' (an id).")
    value = str(member["value"])
    refused = limits.refusal("members.value", value, limits.ID)
    if refused is not None:
        raise InvalidValue(refused.message)
    return value


# -- rows -> resources -------------------------------------------------------------


def render_user(meta: Meta, columns: Mapping[str, Any], data: Mapping[str, Any],
                modules: list[str] | None, groups: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The full SCIM representation of a stored user (before projection)."""
    out: dict[str, Any] = {"schemas": [USER], "id": meta.id}
    if columns.get("external_id") is not None:
        out["externalId"] = columns["external_id"]
    out["userName"] = columns["user_name"]
    if columns.get("display_name") is not None:
        out["displayName"] = columns["display_name"]
    out["active"] = columns["active"]
    for key, value in data.items():
        if not key.startswith("urn:"):
            out[key] = value
    if groups:
        out["groups"] = groups
    for key, value in data.items():
        if key.startswith("urn:") and key != CONNECTOR_USER:
            out[key] = value
            out["schemas"].append(key)
    ext = dict(data.get(CONNECTOR_USER, {}))
    # A flag shows when the client set it or when it is in effect anyway (a userType
    # "Guest", an admin's decision); the column, not the document, has the last word.
    for name, column in CONNECTOR_USER_FLAGS:
        if name in ext or columns[column]:
            ext[name] = columns[column]
    # The frontline plan's attributes in effect are the column's (an admin may have set
    # them); what the document says of them may be out of date.
    for key in FRONTLINE_KEYS:
        ext.pop(key, None)
    ext.update(columns.get("frontline") or {})
    if modules:
        ext["modules"] = modules
    if ext:
        out[CONNECTOR_USER] = ext
        out["schemas"].append(CONNECTOR_USER)
    out["meta"] = _meta(meta)
    return out


def render_group(meta: Meta, columns: Mapping[str, Any], data: Mapping[str, Any],
                 modules: list[str] | None, members: list[dict[str, Any]] | None
                 ) -> dict[str, Any]:
    out: dict[str, Any] = {"schemas": [GROUP], "id": meta.id}
    if columns.get("external_id") is not None:
        out["externalId"] = columns["external_id"]
    out["displayName"] = columns["display_name"]
    if members is not None:
        out["members"] = members
    out.update({k: v for k, v in data.items() if not k.startswith("urn:")})
    if modules:
        out[CONNECTOR_GROUP] = {"modules": modules}
        out["schemas"].append(CONNECTOR_GROUP)
    out["meta"] = _meta(meta)
    return out


def _meta(meta: Meta) -> dict[str, Any]:
    return {
        "resourceType": meta.resource_type,
        "created": _iso(meta.created),
        "lastModified": _iso(meta.last_modified),
        "location": meta.location,
        "version": etag(meta.version),
    }


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = ["GROUP_TYPE", "USER_TYPE", "Meta", "cleared_attributes", "etag", "group_fields",
           "parse_etag", "parse_if_match",
           "render_group", "render_user", "user_fields", "validate"]
