"""Apply a SCIM PATCH request to a resource's JSON representation (RFC 7644 §3.5.2).

    parse_operations(body) -> tuple[Operation, ...]                   RFC 7644 §3.5.2
    apply_patch(resource, body, resource_type) -> PatchOutcome        §3.5.2.1-§3.5.2.3

`apply_patch` works on a copy of the resource and returns it with the group member
changes the request asked for. A group's members are never part of the resource: a
group may have tens of thousands, so every operation on `members` becomes a `MemberOp`
for the storage layer to apply, in request order.

What identity providers send that the RFC does not quite say, and we accept:

* `op` in any case ("Replace", "ADD"); booleans as strings ("True", "false") wherever
  the schema says boolean (Microsoft Entra ID without `?aadOptscim062020`).
* Without a path, value keys that are paths: `name.givenName`, URN-qualified extension
  attributes, `emails[type eq "work"].value`; and `id`, `meta`, `groups`, `schemas`
  repeated as read (ignored while unchanged).
* "Create by PATCH": an add/replace through a value filter that matches no element adds
  one built from the filter's `eq` conditions, so the next operation on the same filter
  finds it (Entra sets `emails[type eq "work"].value`, then `.primary`).
* `manager` as a bare id, `{"value": id}` or `[{"value": id}]`; an empty id removes it.
* Paths and value keys in a schema we do not serve are ignored (RFC 7644 §3.3 lets a
  provider ignore extensions it does not support); unknown core attributes fail.
* Removing a value that is not there, or through a filter that matches nothing, succeeds.

Pure: no Flask, no SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from scim.casting import copy_json
from scim.errors import (
    InvalidFilter,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NoTarget,
)
from scim.filters import (
    And,
    Compare,
    Node,
    Or,
    PatchPath,
    UnknownSchemaPath,
    evaluate_element,
    parse_path,
)
from scim.schemas import GROUP, PATCH_OP, Attribute, AttrRef, ResourceType, Schema

__all__ = ["MemberOp", "Operation", "PatchOutcome", "apply_patch", "parse_operations"]

MemberAction = Literal["add", "remove", "replace"]
ACTIONS = ("add", "replace", "remove")


@dataclass(frozen=True)
class MemberOp:
    """A change to a group's members; `replace` with no values removes them all."""

    action: MemberAction
    values: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class PatchOutcome:
    """The patched resource (a new dict) and the member changes, in request order."""

    resource: dict[str, Any]
    member_ops: tuple[MemberOp, ...] = ()


@dataclass(frozen=True)
class Operation:
    """One PATCH operation, checked for shape (RFC 7644 §3.5.2); `op` is lower case."""

    op: str
    path: str | None = None
    value: object = None  # as the client sent it: unchecked JSON until `_normalize`
    has_value: bool = False


def apply_patch(resource: dict[str, Any], body: object, resource_type: ResourceType
                ) -> PatchOutcome:
    """Apply a PatchOp request to a copy of `resource` (RFC 7644 §3.5.2).

    The operations apply in order and all or nothing: the first failing one raises a
    `ScimError` and the caller keeps the original. Types are not checked beyond a value's
    shape; the caller validates the result as it would a PUT body.
    """
    patcher = _Patcher(resource, resource_type)
    for operation in parse_operations(body):
        patcher.apply(operation)
    return PatchOutcome(patcher.resource, tuple(patcher.member_ops))


# -- the request body ------------------------------------------------------------------


def parse_operations(body: object) -> tuple[Operation, ...]:
    """Check a PatchOp body and return its operations (RFC 7644 §3.5.2).

    Raises `InvalidSyntax` for a missing PatchOp schema, an empty `Operations` list or
    an unknown `op`, and `InvalidValue` for an add or replace without a value.
    """
    if not isinstance(body, dict):
        raise InvalidSyntax("The PATCH body must be a JSON object.")
    schemas = _ci_get(body, "schemas")
    if not isinstance(schemas, list) or PATCH_OP.lower() not in {
        str(s).lower() for s in schemas
    }:
        raise InvalidSyntax(f"'schemas' must be [\"{PATCH_OP}\"].")
    operations = _ci_get(body, "Operations")
    if not isinstance(operations, list) or not operations:
        raise InvalidSyntax("'Operations' must be a non-empty list of operations.")
    return tuple(_parse_operation(raw, index) for index, raw in enumerate(operations))


def _parse_operation(raw: object, index: int) -> Operation:
    where = f"Operations[{index}]"
    if not isinstance(raw, dict):
        raise InvalidSyntax(f"{where} must be an object.")
    op = _ci_get(raw, "op")
    if not isinstance(op, str) or op.lower() not in ACTIONS:
        raise InvalidSyntax(f"{where}: 'op' must be add, replace or remove.")
    path = _ci_get(raw, "path")
    if path is not None and not isinstance(path, str):
        raise InvalidSyntax(f"{where}: 'path' must be a string.")
    has_value = _ci_key(raw, "value") in raw
    if op.lower() != "remove" and not has_value:
        raise InvalidValue(f"{where}: '{op}' needs a 'value' (RFC 7644 §3.5.2.1).")
    # An empty path is sent by some clients for "no path".
    return Operation(op.lower(), (path or "").strip() or None, _ci_get(raw, "value"), has_value)


# -- one PATCH -------------------------------------------------------------------------


class _Patcher:
    """The state of one PATCH: a private copy of the resource and the member changes."""

    def __init__(self, resource: dict[str, Any], resource_type: ResourceType) -> None:
        self.resource: dict[str, Any] = copy_json(resource)
        self.type = resource_type
        self.member_ops: list[MemberOp] = []

    def apply(self, op: Operation) -> None:
        """Apply one operation; without a path, each key of the value is a path."""
        if op.path is None:
            self._apply_without_path(op)
            return
        schema = self.type.schema_by_urn(op.path)
        if schema is not None:
            self._apply_section(op.op, schema, op.value)
            return
        path = self._parse(op.path)
        if path is not None:
            self._apply_parsed(op, path)

    def _apply_without_path(self, op: Operation) -> None:
        """RFC 7644 §3.5.2.1 and §3.5.2.3: the value's attributes apply to the resource."""
        if op.op == "remove":
            raise NoTarget("'remove' needs a 'path' (RFC 7644 §3.5.2.2).")
        if not isinstance(op.value, dict):
            raise InvalidValue(f"Without a 'path', '{op.op}' needs an object of attributes.")
        for key, item in op.value.items():
            self._apply_value_key(op.op, str(key), item)

    def _apply_value_key(self, action: str, key: str, item: object) -> None:
        if key.lower() == "schemas":
            if not (isinstance(item, list) and all(isinstance(s, str) for s in item)):
                raise InvalidValue("'schemas' must be a list of schema URNs.")
            return  # `schemas` follows from the attributes present, not from the request
        schema = self.type.schema_by_urn(key)
        if schema is not None:
            self._apply_section(action, schema, item)
            return
        path = self._parse(key)
        if path is None or self._echoes_read_only(path, item):
            return
        self._apply_parsed(Operation(action, key, item, True), path)

    def _apply_section(self, action: str, schema: Schema, value: object) -> None:
        """A whole schema as path or value key: `{"urn:…:enterprise:2.0:User": {…}}`."""
        if action == "remove" or value is None:
            if schema is self.type.schema:
                raise InvalidPath(f"'{schema.id}' is the core schema; name an attribute in it.")
            self._drop_section(schema.id)
            return
        if not isinstance(value, dict):
            raise InvalidValue(f"'{schema.id}' needs an object of its attributes.")
        for key, item in value.items():
            if key.lower() == "schemas":
                continue  # serialisers echo the extension's `schemas` inside its object
            self._apply_value_key(action, f"{schema.id}:{key}", item)

    def _parse(self, text: str) -> PatchPath | None:
        """Resolve a path; None for one in a schema we don't serve (RFC 7644 §3.3)."""
        try:
            return parse_path(text, self.type)
        except UnknownSchemaPath:
            return None

    def _echoes_read_only(self, path: PatchPath, item: object) -> bool:
        """True for a readOnly value repeated unchanged (Okta sends `id` back)."""
        if path.value_filter is not None or not _is_read_only(path):
            return False
        current = self._get(path.ref)
        if path.ref.sub_attribute is not None:
            current = _ci_get(current, path.ref.sub_attribute.name)
        return _echoes(item, current)

    def _apply_parsed(self, op: Operation, path: PatchPath) -> None:
        if _is_members(path.ref):
            self._apply_members(op, path)
            return
        if _is_read_only(path):
            raise Mutability(f"'{op.path}' is readOnly and cannot be changed (RFC 7643 §7).")
        if op.op == "remove":
            self._remove(path, op.value)
        else:
            self._write(op.op, path, op.value)

    # -- add and replace ---------------------------------------------------------------

    def _write(self, action: str, path: PatchPath, value: object) -> None:
        """RFC 7644 §3.5.2.1 (add) and §3.5.2.3 (replace); a null value unsets."""
        ref = path.ref
        if path.value_filter is not None:
            self._write_filtered(action, path, value)
        elif ref.sub_attribute is not None and ref.attribute.multi_valued:
            self._write_every_element(ref, value)
        elif ref.sub_attribute is not None:
            self._write_sub_attribute(ref, value)
        elif ref.attribute.multi_valued:
            self._write_multi(action, ref, value)
        else:
            self._write_single(ref, value)

    def _write_single(self, ref: AttrRef, value: object) -> None:
        """Replace a single value; a complex one is merged, a reference replaced."""
        attr = ref.attribute
        new = _normalize(attr, value)
        if attr.type == "complex" and new is not None:
            new = self._complex_value(ref, new)
        _check_immutable(attr, self._get(ref), new)
        self._put(ref, new)

    def _complex_value(self, ref: AttrRef, new: dict[str, Any]) -> dict[str, Any] | None:
        """§3.5.2.3: sub-attributes not given are left unchanged.

        Except for references (`manager`): another `value` names another object, whose
        other sub-attributes (a display name) would be stale, so it is replaced whole.
        """
        attr = ref.attribute
        if attr.sub("value") is not None:
            new = _compact(new)
            return new if _present(new.get("value")) else None
        merged = _as_dict(self._get(ref))
        for name, value in new.items():
            _check_immutable(attr.sub(name) or attr, _ci_get(merged, name), value)
        _merge_into(merged, new)
        return None if _vacant(attr, merged) else merged

    def _write_sub_attribute(self, ref: AttrRef, value: object) -> None:
        """`name.givenName`: set (or, with null, unset) one sub-attribute."""
        sub = ref.target
        new = _normalize(sub, value)
        merged = _as_dict(self._get(ref))
        _check_immutable(sub, _ci_get(merged, sub.name), new)
        _merge_into(merged, {sub.name: new})
        self._put(ref, None if _vacant(ref.attribute, merged) else merged)

    def _write_multi(self, action: str, ref: AttrRef, value: object) -> None:
        """§3.5.2.1 adds values not already there; §3.5.2.3 replaces the whole list."""
        attr = ref.attribute
        values = _normalize(attr, value)
        if action == "replace" or value is None:
            self._store_elements(ref, values, values)
            return
        items = self._elements(ref)
        touched = [_add_element(attr, items, v) for v in values]
        self._store_elements(ref, items, touched)

    def _write_every_element(self, ref: AttrRef, value: object) -> None:
        """`emails.type` without a filter: every element (one is created if none)."""
        sub = ref.target
        new = _normalize(sub, value)
        items = self._elements(ref)
        if not items and new is not None:
            items.append({})
        for element in items:
            if isinstance(element, dict):
                _merge_into(element, {sub.name: new})
        self._store_elements(ref, items, items)

    def _write_filtered(self, action: str, path: PatchPath, value: object) -> None:
        """`emails[type eq "work"].value`: write into each matching element.

        No match: "create by PATCH", a new element built from the filter, which the
        next operation on the same filter will find.
        """
        new = _filtered_value(path, value)
        items = self._elements(path.ref)
        matches = [e for e in items if _matches(path.value_filter, e)]
        if not matches and new is None:
            return  # unsetting something that is not there
        if not matches:
            matches = [_element_from_filter(path)]
            items.extend(matches)
            action = "add"  # merge into the new element: it must keep matching the filter
        for element in matches:
            _write_element(element, path.sub_attribute, action, new)
        self._store_elements(path.ref, items, matches)

    # -- remove ------------------------------------------------------------------------

    def _remove(self, path: PatchPath, value: object) -> None:
        """RFC 7644 §3.5.2.2; removing what is not there succeeds."""
        ref = path.ref
        if path.value_filter is not None:
            self._remove_filtered(path)
        elif ref.sub_attribute is not None and ref.attribute.multi_valued:
            self._write_every_element(ref, None)
        elif ref.sub_attribute is not None:
            self._write_sub_attribute(ref, None)
        elif ref.attribute.multi_valued and value is not None:
            self._remove_values(ref, value)
        elif ref.attribute.multi_valued:
            self._put(ref, None)
        else:
            self._write_single(ref, None)

    def _remove_filtered(self, path: PatchPath) -> None:
        """Remove the matching elements, or the sub-attribute after `]` from each."""
        items = self._elements(path.ref)
        matches = [e for e in items if _matches(path.value_filter, e)]
        if path.sub_attribute is None:
            items = [e for e in items if all(e is not m for m in matches)]
        else:
            for element in matches:
                _merge_into(element, {path.sub_attribute.name: None})
        self._store_elements(path.ref, items, [])

    def _remove_values(self, ref: AttrRef, value: object) -> None:
        """A remove with a value takes out only the listed values (Entra sends these)."""
        attr = ref.attribute
        given = _normalize(attr, value)
        items = [e for e in self._elements(ref)
                 if not any(_same_element(attr, g, e) for g in given)]
        self._store_elements(ref, items, [])

    # -- group members -----------------------------------------------------------------

    def _apply_members(self, op: Operation, path: PatchPath) -> None:
        """Turn an operation on a group's `members` into a `MemberOp` (never loaded)."""
        if path.ref.sub_attribute is not None or path.sub_attribute is not None:
            raise InvalidPath("Members are changed whole: use 'members' or "
                              "'members[value eq \"id\"]' as the path.")
        if path.value_filter is not None:
            if op.op != "remove":
                raise InvalidPath(f"To {op.op} members, use path 'members' and a list value.")
            self.member_ops.append(MemberOp("remove", _members_in_filter(path.value_filter)))
        elif op.op == "remove" and op.value is None:
            self.member_ops.append(MemberOp("replace", ()))  # §3.5.2.2: remove them all
        else:
            values = _member_values(op.value)
            if op.op == "replace" or values:
                self.member_ops.append(MemberOp(_member_action(op.op), values))

    # -- storage in the document -------------------------------------------------------

    def _container(self, ref: AttrRef) -> dict[str, Any] | None:
        """The top level for core attributes, the URN-keyed object for extensions."""
        if ref.is_core:
            return self.resource
        section = _ci_get(self.resource, ref.schema.id)
        return section if isinstance(section, dict) else None

    def _new_container(self, ref: AttrRef) -> dict[str, Any]:
        container = self._container(ref)
        if container is None:
            container = self.resource[_ci_key(self.resource, ref.schema.id)] = {}
            self._declare_schema(ref.schema.id)
        return container

    def _get(self, ref: AttrRef) -> Any:
        """The attribute's current value (ignoring `ref.sub_attribute`)."""
        return _ci_get(self._container(ref), ref.attribute.name)

    def _elements(self, ref: AttrRef) -> list[Any]:
        current = self._get(ref)
        if current is None:
            return []
        return list(current) if isinstance(current, list) else [current]

    def _put(self, ref: AttrRef, value: Any) -> None:
        """Set the attribute; None or an empty list unsets it (RFC 7643 §2.5)."""
        if value is None or value == []:
            self._unset(ref)
            return
        container = self._new_container(ref)
        container[_ci_key(container, ref.attribute.name)] = value

    def _unset(self, ref: AttrRef) -> None:
        if ref.attribute.required:
            # RFC 7644 §3.5.2.2: a required attribute made unassigned is a "mutability" error.
            raise Mutability(f"'{ref.attribute.name}' is required and cannot be removed.")
        container = self._container(ref)
        if container is None:
            return
        container.pop(_ci_key(container, ref.attribute.name), None)
        if not ref.is_core and not container:
            self._drop_section(ref.schema.id)

    def _store_elements(self, ref: AttrRef, items: list[Any], touched: list[Any]) -> None:
        """Store a multi-valued attribute, dropping emptied elements, one primary."""
        if ref.attribute.type == "complex":
            items = [e for e in items if not (isinstance(e, dict) and _vacant(ref.attribute, e))]
        _settle_primary(items, touched)
        self._put(ref, items)

    def _declare_schema(self, urn: str) -> None:
        """RFC 7643 §3: `schemas` lists the extensions a resource uses."""
        schemas = self.resource.get("schemas")
        if isinstance(schemas, list) and urn.lower() not in {str(s).lower() for s in schemas}:
            schemas.append(urn)

    def _drop_section(self, urn: str) -> None:
        self.resource.pop(_ci_key(self.resource, urn), None)
        schemas = self.resource.get("schemas")
        if isinstance(schemas, list):
            self.resource["schemas"] = [s for s in schemas if str(s).lower() != urn.lower()]


# -- paths -----------------------------------------------------------------------------


def _is_members(ref: AttrRef) -> bool:
    return ref.schema.id == GROUP and ref.attribute.name == "members"


def _is_read_only(path: PatchPath) -> bool:
    attrs = (path.ref.attribute, path.ref.sub_attribute, path.sub_attribute)
    return any(a is not None and a.mutability == "readOnly" for a in attrs)


def _check_immutable(attr: Attribute, current: object, new: object) -> None:
    """RFC 7644 §3.5.2: an immutable attribute may be set when unset, never changed."""
    if attr.mutability == "immutable" and _present(current) and current != new:
        raise Mutability(f"'{attr.name}' is immutable: it can be set once, not changed.")


def _matches(node: Node | None, element: object) -> bool:
    return node is not None and isinstance(element, dict) and evaluate_element(node, element)


def _element_from_filter(path: PatchPath) -> dict[str, Any]:
    """The element "create by PATCH" adds: the filter's `eq` conditions as values."""
    conditions = _eq_conditions(path.value_filter)
    if not conditions:
        raise NoTarget(f"No value of '{path.ref}' matches the filter, and a new one can only "
                       "be built from 'eq' conditions joined by 'and'.")
    return conditions


def _eq_conditions(node: Node | None) -> dict[str, Any] | None:
    match node:
        case Compare(ref, "eq", (str() | bool() | int() | float()) as value) if (
            ref.sub_attribute is not None
        ):
            return {ref.sub_attribute.name: value}
        case And(left, right):
            first, second = _eq_conditions(left), _eq_conditions(right)
            if first is None or second is None or first.keys() & second.keys():
                return None
            return {**first, **second}
    return None


def _filtered_value(path: PatchPath, value: object) -> Any:
    """The value for a filtered path: a sub-attribute's value, or a whole element."""
    if path.sub_attribute is not None:
        return _normalize(path.sub_attribute, value)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]  # one element given as a one-element list
    if isinstance(value, list):
        raise InvalidValue(f"'{path.ref}[…]' selects elements: give one object, not a list.")
    element = _normalize_one(path.ref.attribute, value)
    return None if element is None else _compact(element)


def _write_element(element: dict[str, Any], sub: Attribute | None, action: str,
                   new: Any) -> None:
    """§3.5.2.3: a replace without a sub-attribute replaces the element; add merges."""
    if sub is not None:
        _merge_into(element, {sub.name: new})
    elif action == "replace":
        element.clear()
        element.update(new or {})
    else:
        _merge_into(element, new or {})


# -- group members ---------------------------------------------------------------------


def _member_action(op: str) -> MemberAction:
    return "add" if op == "add" else "replace" if op == "replace" else "remove"


def _member_values(value: object) -> tuple[dict[str, Any], ...]:
    items = [] if value is None else value if isinstance(value, list) else [value]
    return tuple(_member(item) for item in items)


def _member(item: object) -> dict[str, Any]:
    """`{"value": id}` plus `type` and `$ref` when given; `display` is readOnly."""
    value = _ci_get(item, "value") if isinstance(item, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue("Each member must be an object with a string 'value' (an id).")
    member = {"value": value}
    for name in ("type", "$ref"):
        extra = _ci_get(item, name)
        if isinstance(extra, str):
            member[name] = extra
    return member


def _members_in_filter(node: Node) -> tuple[dict[str, Any], ...]:
    """`members[value eq "a" or value eq "b"]`: the only member filters we accept."""
    match node:
        case Or(left, right):
            return _members_in_filter(left) + _members_in_filter(right)
        case Compare(ref, "eq", str() as value) if ref.target.name == "value":
            return ({"value": value},)
    raise InvalidFilter("Members are selected by id only: 'members[value eq \"id\"]', "
                        "several joined with 'or'.")


# -- values ----------------------------------------------------------------------------


def _normalize(attr: Attribute, value: object) -> Any:
    """Shape a request value for `attr`, or raise `InvalidValue` when plainly wrong.

    Multi-valued attributes give a list (empty for null); single-valued ones a value or
    None. Entra's one-element arrays for single complex values (`manager`) are unwrapped.
    """
    if attr.multi_valued:
        items = value if isinstance(value, list) else [value]
        shaped = (_normalize_one(attr, item) for item in items)
        return [_compact(v) if isinstance(v, dict) else v for v in shaped if _present(v)]
    if isinstance(value, list):
        if attr.type != "complex" or len(value) > 1:
            raise InvalidValue(f"'{attr.name}' is single-valued; a list is not a valid value.")
        value = value[0] if value else None
    return _normalize_one(attr, value)


def _normalize_one(attr: Attribute, value: object) -> Any:
    if value is None:
        return None
    if attr.type == "complex":
        return _normalize_complex(attr, value)
    if isinstance(value, dict | list):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise InvalidValue(f"'{attr.name}' takes a {attr.type} value, not {kind}.")
    if attr.type == "boolean" and isinstance(value, str) and value.strip().lower() in (
        "true", "false"
    ):
        return value.strip().lower() == "true"  # Entra ID sends "True" / "False"
    return value


def _normalize_complex(attr: Attribute, value: object) -> dict[str, Any]:
    """Sub-attributes by their schema names; None kept (it unsets when merged)."""
    if not isinstance(value, dict):
        if isinstance(value, list) or attr.sub("value") is None:
            raise InvalidValue(f"'{attr.name}' takes an object of sub-attributes.")
        value = {"value": value}  # a bare id, as Entra sends `manager`
    out: dict[str, Any] = {}
    for name, item in value.items():
        sub = attr.sub(str(name))
        if sub is None:
            if item is None:
                continue
            raise InvalidValue(f"Unknown sub-attribute '{attr.name}.{name}'.")
        if sub.mutability != "readOnly":  # clients echo display names; RFC 7643 §7
            out[sub.name] = _normalize_one(sub, item)
    return out


def _add_element(attr: Attribute, items: list[Any], value: Any) -> Any:
    """Append `value` unless it is already there, then merge into that one instead."""
    for existing in items:
        if _same_element(attr, value, existing):
            if isinstance(existing, dict) and isinstance(value, dict):
                _merge_into(existing, value)
            return existing
    items.append(value)
    return value


def _same_element(attr: Attribute, given: object, existing: object) -> bool:
    """Whether `given` names `existing`: same `value` (and `type` when both have one),
    or, for elements without a `value`, the same given sub-attributes."""
    if attr.type != "complex":
        return _equal(attr, given, existing)
    if not isinstance(given, dict) or not isinstance(existing, dict):
        return False
    keys = [k for k in given if given[k] is not None]
    if "value" in keys:
        keys = [k for k in ("value", "type") if k in keys and _ci_get(existing, k) is not None]
    return bool(keys) and all(
        _equal(attr.sub(k) or attr, given[k], _ci_get(existing, k)) for k in keys
    )


def _equal(attr: Attribute, left: object, right: object) -> bool:
    """SCIM equality: strings ignore case unless the attribute is caseExact."""
    if isinstance(left, str) and isinstance(right, str) and not attr.case_exact:
        return left.casefold() == right.casefold()
    return bool(left == right)


def _settle_primary(items: list[Any], touched: list[Any]) -> None:
    """RFC 7643 §2.4: at most one primary value; the one this operation set wins."""
    winner = next((e for e in touched if isinstance(e, dict) and e.get("primary") is True),
                  None)
    if winner is None:
        return
    for element in items:
        if element is not winner and isinstance(element, dict) and element.get("primary") is True:
            element["primary"] = False


def _echoes(given: object, current: object) -> bool:
    """Whether `given` repeats `current` (objects may leave sub-attributes out)."""
    if isinstance(given, dict):
        return isinstance(current, dict) and all(
            _echoes(v, _ci_get(current, k)) for k, v in given.items()
        )
    if isinstance(given, list):
        return (isinstance(current, list) and len(given) == len(current)
                and all(map(_echoes, given, current)))
    return bool(given == current)


def _vacant(attr: Attribute, element: dict[str, Any]) -> bool:
    """True when nothing a client can write is left (readOnly display names don't count)."""
    for name, value in element.items():
        sub = attr.sub(str(name))
        if _present(value) and (sub is None or sub.mutability != "readOnly"):
            return False
    return True


def _present(value: object) -> bool:
    return value not in (None, "", [], {})


def _compact(element: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in element.items() if v is not None}


def _as_dict(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _merge_into(target: dict[str, Any], changes: dict[str, Any]) -> None:
    """Set each change in place, matching names case-insensitively; None removes."""
    for name, value in changes.items():
        key = _ci_key(target, name)
        target.pop(key, None)
        if value is not None:
            target[name] = value


# -- case-insensitive names (RFC 7643 §2.1) ----------------------------------------------


def _ci_key(mapping: dict[str, Any], name: str) -> str:
    """The key `mapping` already uses for `name`, else `name`."""
    if name in mapping:
        return name
    lowered = name.lower()
    return next((k for k in mapping if isinstance(k, str) and k.lower() == lowered), name)


def _ci_get(mapping: object, name: str) -> Any:
    if not isinstance(mapping, dict):
        return None
    return mapping.get(_ci_key(mapping, name))
