"""Compile filter nodes into SQLAlchemy WHERE clauses and sortBy into ORDER BY columns.

    user_clause(node)  -> ColumnElement[bool]    over connector.models.User
    group_clause(node) -> ColumnElement[bool]    over connector.models.Group
    user_sort_column(ref) / group_sort_column(ref) -> ColumnElement

The only SCIM module that builds SQL (STYLE.md §3). The caller adds the tenant
condition; every subquery here also correlates on `tenant_id`, so a filter can never
reach another tenant's rows.

Rules that keep a filter from ever widening the result (STYLE.md §6):

* Allow-list. Each attribute maps to a column, a JSON path in `data`, or an EXISTS
  over `user_values` / `memberships` / `*_modules`; anything else raises
  `InvalidFilter`. Nothing is dropped.
* Two-valued logic. Every leaf is built so it is never SQL NULL (`col IS NOT NULL AND
  …`), so `not (…)` and `ne` (compiled as `not eq`) mean what `scim.filters.evaluate`
  means: a missing attribute is "not equal", never "unknown".
* Values are always bound parameters. `co`/`sw`/`ew` use LIKE with `\\` as the escape
  character, and `%`, `_` and `\\` in the value escaped.

Case: `caseExact=false` attributes compare folded. `userName`, `displayName` and
`user_values.value_norm` hold `casefold()` of the value, so the filter value is
casefolded in Python and indexes stay usable. Other strings use SQL `lower()` on both
sides; SQLite's `lower()` folds ASCII only, so there `"ZOË"` and `"zoë"` differ in
JSON attributes and `type`/`display` (the normalised columns are not affected).
SQLite's LIKE ignores ASCII case, so `caseExact=true` attributes get an extra exact
check (`substr`/`replace`) next to the LIKE.

`meta.created`/`meta.lastModified` are rendered with millisecond precision and
stored with microseconds; comparisons work on the rendered value, so `eq` matches the
whole millisecond and `gt "<a lastModified we returned>"` excludes that resource.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import InstrumentedAttribute

from connector.models import Group, GroupModule, Membership, User, UserModule, UserValue
from scim.errors import InvalidFilter, InvalidValue
from scim.filters import (
    And,
    Compare,
    Node,
    Not,
    Or,
    Present,
    ValuePath,
    evaluate,
    evaluate_element,
)
from scim.schemas import (
    CONNECTOR_GROUP,
    CONNECTOR_USER,
    ENTERPRISE_USER,
    GROUP,
    INDEXED_MULTI_VALUED,
    USER,
    Attribute,
    AttrRef,
)

__all__ = ["group_clause", "group_sort_column", "sort_order", "user_clause", "user_sort_column"]

ESCAPE = "\\"
STRING_TYPES = frozenset({"string", "reference", "binary"})
Clause = ColumnElement[bool]
Leaf = Callable[[Node], Clause]
# What an attribute maps to: a mapped column (`User.id`) or a core expression (a JSON
# extraction); both compare and render the same way.
SqlExpr = ColumnElement[Any] | InstrumentedAttribute[Any]


@dataclass(frozen=True)
class _Column:
    """The SQL expression an attribute maps to, and how its text is compared.

    fold: "exact" (caseExact), "norm" (the column holds casefold(); fold the value in
    Python) or "lower" (SQL lower() on both sides).
    """

    expr: SqlExpr
    fold: str = "exact"


# -- entry points ----------------------------------------------------------------------


def user_clause(node: Node) -> Clause:
    """Compile a filter (RFC 7644 §3.4.2.2) into a WHERE clause over `users`."""
    return _compile(node, _user_leaf)


def group_clause(node: Node) -> Clause:
    """Compile a filter (RFC 7644 §3.4.2.2) into a WHERE clause over `groups`."""
    return _compile(node, _group_leaf)


def _compile(node: Node, leaf: Leaf) -> Clause:
    match node:
        case And(left, right):
            return and_(_compile(left, leaf), _compile(right, leaf))
        case Or(left, right):
            return or_(_compile(left, leaf), _compile(right, leaf))
        case Not(inner):
            return not_(_compile(inner, leaf))
        case Compare(ref, "ne", value):
            # `ne` is `not eq`: a missing value is "not equal" (see module docstring).
            return not_(leaf(Compare(ref, "eq", value)))
    return leaf(node)


def _unsupported(ref: AttrRef) -> InvalidFilter:
    return InvalidFilter(f"Filtering on '{ref}' is not supported.")


# -- users -----------------------------------------------------------------------------

_USER_COLUMNS: dict[tuple[str, str, str | None], _Column] = {
    ("common", "id", None): _Column(User.id),
    ("common", "externalId", None): _Column(User.external_id),
    ("common", "meta", "created"): _Column(User.created_at),
    ("common", "meta", "lastModified"): _Column(User.modified_at),
    (USER, "userName", None): _Column(User.user_name_norm, "norm"),
    (USER, "displayName", None): _Column(User.display_name_norm, "norm"),
    (USER, "active", None): _Column(User.active),
    (CONNECTOR_USER, "guest", None): _Column(User.guest),
    (CONNECTOR_USER, "externalCompanyGuest", None): _Column(User.external_company_guest),
    (CONNECTOR_USER, "admin", None): _Column(User.admin),
}

# Schemas whose single-valued attributes live in `users.data`: core at the top level,
# extensions under their URN (as scim.casting stores them).
_USER_JSON_SCHEMAS = (USER, ENTERPRISE_USER, CONNECTOR_USER)


def _key(ref: AttrRef) -> tuple[str, str, str | None]:
    sub = ref.sub_attribute.name if ref.sub_attribute else None
    return ref.schema.id, ref.attribute.name, sub


def _user_leaf(node: Node) -> Clause:
    ref = _node_ref(node)
    if _key(ref)[:2] == ("common", "meta") and _key(ref)[2] in (None, "resourceType"):
        return _constant(evaluate(node, {"meta": {"resourceType": "User"}}))
    if ref.attribute.multi_valued:
        return _user_multi_valued(node)
    if isinstance(node, Present) and ref.target.type == "complex":
        return _any_sub_present(ref, _user_column)
    return _scalar(_user_column(ref), ref.target, node)


def _user_column(ref: AttrRef) -> _Column:
    column = _USER_COLUMNS.get(_key(ref))
    if column is not None:
        return column
    if ref.schema.id not in _USER_JSON_SCHEMAS or ref.target.type in ("complex", "dateTime"):
        raise _unsupported(ref)
    return _json_column(User.data, _json_path(ref), ref.target)


def _json_path(ref: AttrRef) -> tuple[str, ...]:
    path = (ref.attribute.name,) if ref.is_core else (ref.schema.id, ref.attribute.name)
    return path + ((ref.sub_attribute.name,) if ref.sub_attribute else ())


def _json_column(data: Any, path: tuple[str, ...], attr: Attribute) -> _Column:
    """A typed JSON extraction; SQLAlchemy renders JSON_EXTRACT / `#>>` per dialect."""
    element = data[path]
    if attr.type == "boolean":
        return _Column(element.as_boolean())
    if attr.type == "integer":
        return _Column(element.as_integer())
    if attr.type == "decimal":
        return _Column(element.as_float())
    return _Column(element.as_string(), _text_fold(attr))


def _text_fold(attr: Attribute) -> str:
    return "exact" if attr.case_exact or attr.type == "binary" else "lower"


def _any_sub_present(ref: AttrRef, column_of: Callable[[AttrRef], _Column]) -> Clause:
    """`name pr`: a complex attribute is present when any sub-attribute is."""
    subs = [AttrRef(ref.schema, ref.attribute, sub) for sub in ref.attribute.sub_attributes]
    return or_(*(_present(column_of(sub).expr, sub.target) for sub in subs))


def _user_multi_valued(node: Node) -> Clause:
    ref = _node_ref(node)
    inner = _element_filter(node)
    key = (ref.schema.id, ref.attribute.name)
    if ref.schema.id == USER and ref.attribute.name in INDEXED_MULTI_VALUED:
        condition = _compile(inner, _user_value_leaf) if inner is not None else true()
        return exists().where(
            UserValue.tenant_id == User.tenant_id,
            UserValue.user_id == User.id,
            UserValue.attr == ref.attribute.name,
            condition,
        )
    if key == (USER, "groups"):
        condition = _compile(inner, _user_group_leaf) if inner is not None else true()
        return exists().where(
            Membership.tenant_id == User.tenant_id, Membership.member_id == User.id, condition
        )
    if key == (CONNECTOR_USER, "modules"):
        condition = _module_condition(UserModule.module, inner)
        return exists().where(
            UserModule.tenant_id == User.tenant_id, UserModule.user_id == User.id, condition
        )
    raise _unsupported(ref)


def _user_value_leaf(node: Node) -> Clause:
    """One element of an indexed multi-valued attribute, as a `user_values` row."""
    ref = _node_ref(node)
    sub = ref.sub_attribute
    assert sub is not None  # noqa: S101 - element filters always name a sub-attribute
    if sub.name == "primary" and isinstance(node, Present):
        # The index stores an absent `primary` as false, so only true is "present".
        return UserValue.primary.is_(True)
    return _scalar(_user_value_column(sub), sub, node)


def _user_value_column(sub: Attribute) -> _Column:
    if sub.name == "value":
        exact = _text_fold(sub) == "exact"
        return _Column(UserValue.value) if exact else _Column(UserValue.value_norm, "norm")
    if sub.name == "primary":
        return _Column(UserValue.primary)
    if sub.name in ("type", "display"):
        return _Column(getattr(UserValue, sub.name), _text_fold(sub))
    # Address parts and any other sub-attribute: the rest of the element, as JSON.
    return _json_column(UserValue.data, (sub.name,), sub)


def _user_group_leaf(node: Node) -> Clause:
    """One of the user's groups (`groups.value` = a group id), as a `memberships` row."""
    ref = _node_ref(node)
    sub = ref.sub_attribute
    if sub is not None and sub.name == "value":
        return _scalar(_Column(Membership.group_id, _text_fold(sub)), sub, node)
    if sub is not None and sub.name == "type":
        return _constant(evaluate_element(node, {"type": "direct"}))
    raise _unsupported(ref)


def _module_condition(column: Any, inner: Node | None) -> Clause:
    """Modules compare case-insensitively: the catalogue names them for humans."""
    if inner is None:
        return true()

    def leaf(node: Node) -> Clause:
        return _scalar(_Column(column, "lower"), _node_ref(node).target, node)

    return _compile(inner, leaf)


# -- groups ----------------------------------------------------------------------------

_GROUP_COLUMNS: dict[tuple[str, str, str | None], _Column] = {
    ("common", "id", None): _Column(Group.id),
    ("common", "externalId", None): _Column(Group.external_id),
    ("common", "meta", "created"): _Column(Group.created_at),
    ("common", "meta", "lastModified"): _Column(Group.modified_at),
    (GROUP, "displayName", None): _Column(Group.display_name_norm, "norm"),
}


def _group_leaf(node: Node) -> Clause:
    ref = _node_ref(node)
    key = _key(ref)
    if key[:2] == ("common", "meta") and key[2] in (None, "resourceType"):
        return _constant(evaluate(node, {"meta": {"resourceType": "Group"}}))
    if key[:2] == (GROUP, "members"):
        inner = _element_filter(node)
        condition = _compile(inner, _member_leaf) if inner is not None else true()
        return exists().where(
            Membership.tenant_id == Group.tenant_id, Membership.group_id == Group.id, condition
        )
    if key[:2] == (CONNECTOR_GROUP, "modules"):
        condition = _module_condition(GroupModule.module, _element_filter(node))
        return exists().where(
            GroupModule.tenant_id == Group.tenant_id, GroupModule.group_id == Group.id, condition
        )
    column = _GROUP_COLUMNS.get(key)
    if column is None:
        raise _unsupported(ref)
    return _scalar(column, ref.target, node)


def _member_leaf(node: Node) -> Clause:
    """One direct member of a group, as a `memberships` row."""
    ref = _node_ref(node)
    sub = ref.sub_attribute
    if sub is not None and sub.name == "value":
        return _scalar(_Column(Membership.member_id, _text_fold(sub)), sub, node)
    if sub is not None and sub.name == "type":
        return _scalar(_Column(Membership.member_type, "lower"), sub, node)
    raise _unsupported(ref)


# -- shared pieces ---------------------------------------------------------------------


def _node_ref(node: Node) -> AttrRef:
    if isinstance(node, Compare | Present | ValuePath):
        return node.ref
    raise TypeError(f"not a leaf: {node!r}")


def _element_filter(node: Node) -> Node | None:
    """The per-element condition of a multi-valued leaf; None means "any element".

    `emails[type eq "work"]` -> its inner filter; `emails.value eq "x"` -> itself
    (its ref names the sub-attribute); `emails pr` -> None.
    """
    if isinstance(node, ValuePath):
        return node.node
    if isinstance(node, Present) and node.ref.sub_attribute is None:
        return None
    return node


def _constant(matches: bool) -> Clause:
    return true() if matches else false()


def _scalar(column: _Column, attr: Attribute, node: Node) -> Clause:
    """A single value compared or tested for presence; never NULL."""
    expr = column.expr
    if isinstance(node, Present):
        return _present(expr, attr)
    if not isinstance(node, Compare):
        raise InvalidFilter("Value filters cannot be nested.")
    if isinstance(node.value, dt.datetime):
        condition = _datetime_condition(expr, node.op, node.value)
    elif isinstance(node.value, str):
        condition = _text_condition(column, node.op, node.value)
    else:
        condition = _ORDERING[node.op](expr, literal(node.value))
    return and_(expr.is_not(None), condition)


def _present(expr: SqlExpr, attr: Attribute) -> Clause:
    """RFC 7644 §3.4.2.2 `pr`: non-null and, for strings, non-empty."""
    if attr.type in STRING_TYPES:
        return and_(expr.is_not(None), expr != "")
    return expr.is_not(None)


_ORDERING: dict[str, Callable[[Any, Any], Clause]] = {
    "eq": lambda a, b: a == b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def _datetime_condition(expr: SqlExpr, op: str, value: dt.datetime) -> Clause:
    """Compare at the millisecond precision we render (casting._iso)."""
    low = value.replace(microsecond=value.microsecond // 1000 * 1000)
    high = low + dt.timedelta(milliseconds=1)
    conditions: dict[str, Clause] = {
        "eq": and_(expr >= low, expr < high),
        "gt": expr >= high,
        "ge": expr >= low,
        "lt": expr < low,
        "le": expr < high,
    }
    if op not in conditions:
        raise InvalidFilter(f"'{op}' is not supported on dateTime attributes.")
    return conditions[op]


def _text_condition(column: _Column, op: str, value: str) -> Clause:
    expr = column.expr
    if column.fold == "norm":
        value = value.casefold()
    elif column.fold == "lower":
        expr = func.lower(expr)
    if op in _ORDERING:
        return _ORDERING[op](expr, _bound(value, column.fold))
    if value == "":
        return true()  # every string contains, starts and ends with ""
    pattern = _like_pattern(op, value)
    condition: Clause = expr.like(_bound(pattern, column.fold), escape=ESCAPE)
    if column.fold == "exact":
        # SQLite's LIKE ignores ASCII case; this keeps caseExact attributes exact.
        condition = and_(condition, _exact_substring(column.expr, op, value))
    return condition


def _bound(value: str, fold: str) -> ColumnElement[Any]:
    bound = literal(value)
    return func.lower(bound) if fold == "lower" else bound


def _like_pattern(op: str, value: str) -> str:
    escaped = value.replace(ESCAPE, ESCAPE * 2).replace("%", ESCAPE + "%")
    escaped = escaped.replace("_", ESCAPE + "_")
    return {"co": f"%{escaped}%", "sw": f"{escaped}%", "ew": f"%{escaped}"}[op]


def _exact_substring(expr: SqlExpr, op: str, value: str) -> Clause:
    """Case-sensitive co/sw/ew from functions SQLite and PostgreSQL share."""
    size = literal(len(value))
    if op == "sw":
        return func.substr(expr, 1, size) == literal(value)
    if op == "ew":
        start = func.length(expr) - size + 1
        return and_(func.length(expr) >= size, func.substr(expr, start) == literal(value))
    return func.replace(expr, literal(value), literal("")) != expr


# -- sortBy ----------------------------------------------------------------------------


def user_sort_column(ref: AttrRef) -> SqlExpr:
    """The ORDER BY expression for a resolved `sortBy` (RFC 7644 §3.4.2.3) on users.

    Strings sort case-insensitively unless caseExact. An indexed multi-valued attribute
    (`emails`, resolved to `emails.value`) sorts by its primary element's value, else its
    first; other multi-valued attributes raise `InvalidValue`.
    """
    if ref.attribute.multi_valued:
        return _user_value_sort(ref)
    try:
        column = _user_column(ref)
    except InvalidFilter:
        raise InvalidValue(f"Sorting by '{ref}' is not supported.") from None
    return _sort_expr(column)


def group_sort_column(ref: AttrRef) -> SqlExpr:
    """The ORDER BY expression for a resolved `sortBy` (RFC 7644 §3.4.2.3) on groups."""
    column = _GROUP_COLUMNS.get(_key(ref))
    if column is None:
        raise InvalidValue(f"Sorting by '{ref}' is not supported.")
    return _sort_expr(column)


def sort_order(expr: SqlExpr, descending: bool) -> ColumnElement[Any]:
    """`expr` in the direction asked, resources without a value last when ascending and
    first when descending (RFC 7644 §3.4.2.3), on every database: SQLite puts NULL first
    and PostgreSQL last in both directions' default."""
    return expr.desc().nulls_first() if descending else expr.asc().nulls_last()


def _sort_expr(column: _Column) -> SqlExpr:
    return func.lower(column.expr) if column.fold == "lower" else column.expr


def _user_value_sort(ref: AttrRef) -> ColumnElement[Any]:
    sub = ref.sub_attribute
    if ref.schema.id != USER or ref.attribute.name not in INDEXED_MULTI_VALUED or sub is None:
        raise InvalidValue(f"Sorting by '{ref}' is not supported.")
    column = _sort_expr(_user_value_column(sub))
    return (
        select(column)
        .where(
            UserValue.tenant_id == User.tenant_id,
            UserValue.user_id == User.id,
            UserValue.attr == ref.attribute.name,
        )
        .order_by(UserValue.primary.desc(), UserValue.position)
        .limit(1)
        .correlate(User)
        .scalar_subquery()
    )
