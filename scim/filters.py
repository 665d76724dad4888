"""SCIM filters, PATCH paths and sortBy, resolved against our schemas (RFC 7644 §3.4.2).

    parse_filter(text, resource_type) -> Node      RFC 7644 §3.4.2.2
    parse_path(text, resource_type)   -> PatchPath RFC 7644 §3.5.2
    compile_sort(sort_by, resource_type) -> AttrRef RFC 7644 §3.4.2.3
    evaluate(node, resource)          -> bool      (in-memory documents)
    evaluate_element(node, element)   -> bool      (one element of a value path)

scim2-filter-parser's LALR grammar builds the syntax tree; everything else is ours:

* Tokens. Its lexer only knows one-digit numbers, no JSON string escapes (`"a\\"b"`),
  no decimals, and reads `trueName` as `true` + `Name`. We feed its parser tokens from
  our own JSON-faithful tokenizer instead.
* Precedence. Its grammar gives `and` and `or` the same precedence, so
  `a or b and c` parses as `(a or b) and c`. RFC 7644 §3.4.2.2 says `and` binds
  tighter; we re-associate each unparenthesised chain (`_logical_chain`).
* Meaning. Every attribute path goes through `ResourceType.resolve()`, the same
  allow-list that drives /Schemas; anything unknown, unfilterable or ill-typed raises
  `InvalidFilter` (STYLE.md §6: input we don't understand narrows nothing, it fails).

Normalisations callers can rely on:

* `x eq null` becomes `Not(Present(x))` and `x ne null` becomes `Present(x)`, so a
  `Compare` never carries None.
* A comparison on a multi-valued complex attribute without a sub-attribute
  (`emails co "@x"`) means its `value` sub-attribute (`emails.value co "@x"`).
* `ne` is the negation of `eq` everywhere: a missing attribute is "not equal", and a
  multi-valued attribute is "not equal" when none of its values is equal.
* Comparison values are typed for the attribute: str, bool, int, float, or an aware
  UTC datetime. Booleans also accept the strings "true"/"false" in any case (sloppy
  identity providers send `active eq "True"`).

Pure: no Flask, no SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from scim2_filter_parser import ast
from scim2_filter_parser.parser import SCIMParser
from sly.lex import Token

from connector.text import storable_text
from scim.errors import InvalidFilter, InvalidPath, InvalidValue
from scim.schemas import Attribute, AttrRef, ResourceType

__all__ = [
    "And",
    "AttrRef",
    "Compare",
    "MAX_CLAUSES",
    "MAX_DEPTH",
    "MAX_FILTER_LENGTH",
    "Node",
    "Not",
    "Or",
    "PatchPath",
    "Present",
    "UnknownSchemaPath",
    "ValuePath",
    "compile_sort",
    "evaluate",
    "evaluate_element",
    "format_filter",
    "parse_datetime",
    "parse_filter",
    "parse_path",
]

MAX_FILTER_LENGTH = 4096
MAX_DEPTH = 16  # nested parentheses / brackets
MAX_CLAUSES = 200  # comparisons and presence tests in one filter

EQUALITY_OPS = frozenset({"eq", "ne"})
SUBSTRING_OPS = frozenset({"co", "sw", "ew"})
ORDER_OPS = frozenset({"gt", "ge", "lt", "le"})
COMPARE_OPS = EQUALITY_OPS | SUBSTRING_OPS | ORDER_OPS

STRING_TYPES = frozenset({"string", "reference"})

Value = str | bool | int | float | dt.datetime | None
# What a token carries: a JSON scalar from the filter text, or a keyword or name.
Scalar = str | int | float | bool | None


# -- the nodes -------------------------------------------------------------------------


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    node: Node


@dataclass(frozen=True)
class Compare:
    """`ref op value`; `op` is one of eq ne co sw ew gt ge lt le (lower case)."""

    ref: AttrRef
    op: str
    value: Value


@dataclass(frozen=True)
class Present:
    """`ref pr`: the attribute has a non-empty value (RFC 7644 §3.4.2.2, Table 3)."""

    ref: AttrRef


@dataclass(frozen=True)
class ValuePath:
    """`ref[node]`: one element of the multi-valued complex `ref` matches all of `node`.

    The refs inside `node` are `AttrRef(ref.schema, ref.attribute, <sub-attribute>)`.
    """

    ref: AttrRef
    node: Node


Node = And | Or | Not | Compare | Present | ValuePath


@dataclass(frozen=True)
class PatchPath:
    """A PATCH `path` (RFC 7644 §3.5.2): `attrPath` / `valuePath [ "." subAttr ]`.

    `ref` is the attribute, with `ref.sub_attribute` set for a plain `a.b`;
    `value_filter` selects elements for `a[filter]` (its refs are scoped like a
    `ValuePath`'s; test one element with `evaluate_element`); `sub_attribute` is the
    part after `]`.
    """

    ref: AttrRef
    value_filter: Node | None = None
    sub_attribute: Attribute | None = None


class UnknownSchemaPath(InvalidPath):
    """A PATCH path qualified by a schema URN this resource type does not serve.

    Still `invalidPath`; a separate class so the PATCH engine can choose to ignore
    such operations (some identity providers send extensions we don't publish).
    """


# -- tokens ----------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
      (?P<space>[ \t\r\n]+)
    | (?P<LPAREN>\() | (?P<RPAREN>\)) | (?P<LBRACKET>\[) | (?P<RBRACKET>\])
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)(?![\w.$])
    | (?P<subattr>\.[A-Za-z$][\w$-]*)
    | (?P<word>[A-Za-z$][\w$:.-]*)
    """,
    re.VERBOSE | re.ASCII,
)
_ATTRNAME_RE = re.compile(r"[A-Za-z$][\w$-]*", re.ASCII)

# Operator keywords are case-insensitive (RFC 7644 §3.4.2.2); the JSON literals we
# also accept in any case, for tolerance.
_KEYWORDS: dict[str, tuple[str, Scalar]] = {
    **{op: (op.upper(), op) for op in (*COMPARE_OPS, "pr")},
    "and": ("AND", "and"),
    "or": ("OR", "or"),
    "not": ("NOT", "not"),
    "true": ("TRUE", True),
    "false": ("FALSE", False),
    "null": ("NULL", None),
}


class _Token(Token):
    """A sly token whose repr reads well inside the parser's error message."""

    __slots__ = ("text",)
    text: str

    def __repr__(self) -> str:
        return f"{self.text!r} at position {self.index}"


def _token(kind: str, value: Scalar, text: str, index: int) -> _Token:
    tok = _Token()
    tok.type, tok.value, tok.text = kind, value, text
    tok.lineno, tok.index, tok.end = 1, index, index + len(text)
    return tok


def _tokenize(text: str) -> list[_Token]:
    """Split a filter into the parser's tokens; strings and numbers are JSON (RFC 7159)."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise InvalidFilter(f"Unexpected character {text[pos]!r} at position {pos}.")
        kind, lexeme = match.lastgroup or "", match.group()
        if kind == "word":
            tokens.extend(_word_tokens(lexeme, pos))
        elif kind != "space":
            tokens.append(_literal_token(kind, lexeme, pos))
        pos = match.end()
    return tokens


def _literal_token(kind: str, lexeme: str, pos: int) -> _Token:
    if kind == "string":
        try:
            value = json.loads(lexeme)
        except ValueError:
            raise InvalidFilter(
                f'Invalid string at position {pos}: use JSON escapes (\\" and \\\\).'
            ) from None
        if not storable_text(value):
            # No stored value can hold NUL (PostgreSQL rejects it outright) or an
            # unpaired surrogate (not UTF-8).
            raise InvalidFilter(f"The string at position {pos} contains a NUL character or "
                                "an unpaired surrogate.")
        return _token("COMP_VALUE", value, lexeme, pos)
    if kind == "number":
        number = float(lexeme) if any(c in lexeme for c in ".eE") else int(lexeme)
        return _token("NUMBER", number, lexeme, pos)
    if kind == "subattr":
        return _token("SUBATTR", lexeme[1:], lexeme, pos)
    return _token(kind, lexeme, lexeme, pos)


def _word_tokens(word: str, pos: int) -> Iterator[_Token]:
    """A keyword, or an attribute path `[URI ":"] ATTRNAME *1subAttr` split into parts."""
    keyword = _KEYWORDS.get(word.lower())
    if keyword is not None:
        yield _token(keyword[0], keyword[1], word, pos)
        return
    uri, colon, path = word.rpartition(":")
    if colon:
        yield _token("SCHEMA_URI", uri, uri, pos)
        pos += len(uri) + 1
    name, *subs = path.split(".")
    for index, part in enumerate((name, *subs)):
        if not _ATTRNAME_RE.fullmatch(part):
            raise InvalidFilter(f"Invalid attribute path {word!r} at position {pos}.")
        yield _token("ATTRNAME" if index == 0 else "SUBATTR", part, part, pos)
        pos += len(part) + 1


# `userName eq "…"` / `externalId eq "…"` and nothing else: what identity providers send
# before every create. Recognised without the parser; the string follows the same JSON
# rules as `_literal_token`, and a test checks both paths agree.
_SIMPLE_EQ = re.compile(
    r'[ \t\r\n]*(?P<attr>username|externalid)[ \t\r\n]+eq[ \t\r\n]+'
    r'(?P<value>"(?:[^"\\]|\\.)*")[ \t\r\n]*',
    re.IGNORECASE | re.ASCII)  # ASCII: no Unicode case folding of the names (ſ, K)
_SIMPLE_NAMES = {"username": "userName", "externalid": "externalId"}


def simple_user_lookup(text: str) -> tuple[str, str] | None:
    """(attribute, value) when a Users filter is exactly `userName|externalId eq "…"`."""
    if len(text) > MAX_FILTER_LENGTH:
        return None
    match = _SIMPLE_EQ.fullmatch(text)
    if match is None:
        return None
    try:
        value = json.loads(match.group("value"))
    except ValueError:
        return None  # the full parser says what is wrong with it
    if not isinstance(value, str) or not storable_text(value):
        return None
    return _SIMPLE_NAMES[match.group("attr").lower()], value


def _check_limits(text: str, tokens: list[_Token]) -> None:
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(f"The filter is longer than {MAX_FILTER_LENGTH} characters.")
    if not tokens:
        raise InvalidFilter("The filter is empty.")
    depth = 0
    for tok in tokens:
        depth += tok.type in ("LPAREN", "LBRACKET")
        depth -= tok.type in ("RPAREN", "RBRACKET")
        if depth > MAX_DEPTH:
            raise InvalidFilter(f"The filter nests deeper than {MAX_DEPTH} levels.")
    clauses = sum(tok.type in ("PR", *(op.upper() for op in COMPARE_OPS)) for tok in tokens)
    if clauses > MAX_CLAUSES:
        raise InvalidFilter(f"The filter has more than {MAX_CLAUSES} comparisons.")


def _syntax_tree(tokens: list[_Token]) -> ast.Filter:
    """Run scim2-filter-parser's grammar; every failure becomes InvalidFilter."""
    try:
        tree = SCIMParser().parse(iter(tokens))
    except Exception as exc:  # noqa: BLE001 - its errors are bare; none may escape as 500
        where = str(exc).removeprefix("Parsing error at: ")
        if where == "None":
            where = "the end of the filter"
        raise InvalidFilter(f"Invalid filter syntax near {where}.") from None
    if not isinstance(tree, ast.Filter):
        raise InvalidFilter("Invalid filter syntax.")
    return tree


# -- from syntax tree to nodes ---------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    resource_type: ResourceType
    scope: AttrRef | None = None  # inside `attr[...]`: names are sub-attributes of attr


def parse_filter(text: str, resource_type: ResourceType) -> Node:
    """Parse a `filter` parameter into nodes resolved against our schemas.

    RFC 7644 §3.4.2.2. Raises `InvalidFilter` for bad syntax, unknown attributes or
    sub-attributes, `password`, and operator/value combinations the attribute's type
    does not support.
    """
    if len(text) > MAX_FILTER_LENGTH:  # before tokenizing: don't do work for abuse
        raise InvalidFilter(f"The filter is longer than {MAX_FILTER_LENGTH} characters.")
    tokens = _tokenize(text)
    _check_limits(text, tokens)
    return _convert(_syntax_tree(tokens), _Context(resource_type))


def _convert(f: ast.Filter, ctx: _Context) -> Node:
    if f.namespace is not None:
        return _value_path(f, ctx)
    inner = f.expr
    if isinstance(inner, ast.Filter):  # `(…)` or `not (…)`
        node = _convert(inner, ctx)
        return Not(node) if f.negated else node
    if f.negated:  # the grammar negates parentheses only
        raise InvalidFilter("Invalid filter syntax.")
    if isinstance(inner, ast.LogExpr):
        return _logical_chain(f, ctx)
    if isinstance(inner, ast.AttrExpr):
        return _attr_expr(inner, ctx)
    raise InvalidFilter("Invalid filter syntax.")


def _logical_chain(f: ast.Filter, ctx: _Context) -> Node:
    """Rebuild `a or b and c …` with `and` binding tighter than `or` (RFC 7644 §3.4.2.2).

    The library's grammar parses an unparenthesised chain left to right with one
    precedence level; a parenthesised group arrives wrapped in an extra Filter, so
    the chain's operands and operators can be recovered in source order.
    """
    operands: list[ast.Filter] = []
    operators: list[str] = []
    _flatten_chain(f, operands, operators)
    disjuncts: list[list[Node]] = [[_convert(operands[0], ctx)]]
    for op, operand in zip(operators, operands[1:], strict=True):
        if op == "or":
            disjuncts.append([])
        disjuncts[-1].append(_convert(operand, ctx))
    return _balanced(Or, [_balanced(And, terms) for terms in disjuncts])


def _flatten_chain(f: ast.Filter, operands: list[ast.Filter], operators: list[str]) -> None:
    chain = f.expr
    if f.namespace is not None or f.negated or not isinstance(chain, ast.LogExpr):
        operands.append(f)  # not a bare chain: an operand
        return
    _flatten_chain(chain.expr1, operands, operators)
    operators.append(str(chain.op).lower())
    _flatten_chain(chain.expr2, operands, operators)


def _balanced(kind: type[And] | type[Or], nodes: list[Node]) -> Node:
    """Join nodes with a balanced tree, so long chains stay shallow for SQL compilers."""
    if len(nodes) == 1:
        return nodes[0]
    middle = len(nodes) // 2
    return kind(_balanced(kind, nodes[:middle]), _balanced(kind, nodes[middle:]))


def _value_path(f: ast.Filter, ctx: _Context, *, trailing_sub: bool = False) -> ValuePath:
    """`attr[valFilter]`: the filter applies to each element of `attr`."""
    path, inner = f.namespace, f.expr
    if path is None or not isinstance(inner, ast.Filter):  # the grammar builds neither
        raise InvalidFilter("Invalid filter syntax.")
    if ctx.scope is not None:
        raise InvalidFilter("Value filters cannot be nested.")
    if path.sub_attr is not None and not trailing_sub:
        raise InvalidFilter("A value filter ending in a sub-attribute needs an operator.")
    ref = _resolve(ast.AttrPath(path.attr_name, None, path.uri), ctx)
    if ref.attribute.type != "complex" or not ref.attribute.multi_valued:
        raise InvalidFilter(
            f"'{ref}' is not a multi-valued complex attribute; use '{ref}.<sub-attribute>'."
        )
    return ValuePath(ref, _convert(inner, _Context(ctx.resource_type, scope=ref)))


def _attr_expr(expr: ast.AttrExpr, ctx: _Context) -> Node:
    op = str(expr.value).lower()
    path = expr.attr_path
    if isinstance(path.attr_name, ast.Filter):
        return _value_path_compare(expr, path.attr_name, op, ctx)
    ref = _resolve(path, ctx)
    if op == "pr":
        return Present(ref)
    return _compare(_compare_ref(ref), op, _comp_value(expr))


def _value_path_compare(expr: ast.AttrExpr, value_filter: ast.Filter, op: str, ctx: _Context
                        ) -> Node:
    """`emails[type eq "work"].value eq "x"`: not RFC grammar, but Entra sends it.

    The library moves the trailing `.value` onto the bracket's attribute path
    (`value_filter`, the attribute path's name).
    """
    namespace = value_filter.namespace
    sub_attr = namespace.sub_attr if namespace is not None else None
    if sub_attr is None:
        raise InvalidFilter("Compare a sub-attribute of the value filter's elements.")
    outer = _value_path(value_filter, ctx, trailing_sub=True)
    sub_ref = _scoped_ref(outer.ref, sub_attr.value)
    condition = Present(sub_ref) if op == "pr" else _compare(sub_ref, op, _comp_value(expr))
    return ValuePath(outer.ref, And(outer.node, condition))


def _comp_value(expr: ast.AttrExpr) -> Scalar:
    if expr.comp_value is None:  # only `pr` has none
        raise InvalidFilter("Invalid filter syntax.")
    return expr.comp_value.value


def _resolve(path: ast.AttrPath, ctx: _Context) -> AttrRef:
    if isinstance(path.attr_name, ast.Filter):
        raise InvalidFilter("Value filters cannot be nested.")
    if ctx.scope is not None:
        if path.uri is not None or path.sub_attr is not None:
            raise InvalidFilter(f"Inside '{ctx.scope}[...]' name sub-attributes only, e.g. 'type'.")
        return _scoped_ref(ctx.scope, path.attr_name)
    text = path.attr_name
    if path.sub_attr is not None:
        text += "." + path.sub_attr.value
    if path.uri is not None:
        text = f"{path.uri}:{text}"
    ref = ctx.resource_type.resolve(text)
    if ref is None:
        raise InvalidFilter(f"Unknown attribute '{text}' for {ctx.resource_type.name} resources.")
    _check_filterable(ref)
    return ref


def _scoped_ref(scope: AttrRef, name: str) -> AttrRef:
    sub = scope.attribute.sub(name)
    if sub is None:
        raise InvalidFilter(f"Unknown sub-attribute '{name}' of '{scope}'.")
    ref = AttrRef(scope.schema, scope.attribute, sub)
    _check_filterable(ref)
    return ref


def _check_filterable(ref: AttrRef) -> None:
    if ref.attribute.returned == "never" or ref.target.returned == "never":
        raise InvalidFilter(f"'{ref}' is never returned and cannot be filtered on.")


def _compare_ref(ref: AttrRef) -> AttrRef:
    """The attribute a comparison applies to; `emails` alone means `emails.value`."""
    if ref.target.type != "complex":
        return ref
    value = ref.attribute.sub("value") if ref.attribute.multi_valued else None
    if value is None:
        raise InvalidFilter(f"'{ref}' is complex: compare one of its sub-attributes.")
    return AttrRef(ref.schema, ref.attribute, value)


def _compare(ref: AttrRef, op: str, raw: Scalar) -> Node:
    if raw is None:
        return _compare_null(ref, op)
    attr = ref.target
    if op in ORDER_OPS and attr.type in ("boolean", "binary"):
        raise InvalidFilter(f"'{op}' is not supported on {attr.type} attribute '{ref}'.")
    if op in SUBSTRING_OPS and attr.type not in STRING_TYPES:
        raise InvalidFilter(f"'{op}' needs a string attribute; '{ref}' is {attr.type}.")
    return Compare(ref, op, _typed_value(ref, raw))


def _compare_null(ref: AttrRef, op: str) -> Node:
    """`eq null` means "not present" and `ne null` means "present" (RFC 7643 §2.5)."""
    if op == "eq":
        return Not(Present(ref))
    if op == "ne":
        return Present(ref)
    raise InvalidFilter(f"'{op} null' is not a meaningful comparison.")


def _typed_value(ref: AttrRef, raw: Scalar) -> Value:
    try:
        return _coerce(ref.target, raw)
    except (TypeError, ValueError):
        raise InvalidFilter(
            f"{json.dumps(raw)} is not a valid {ref.target.type} value for '{ref}'."
        ) from None


def _coerce(attr: Attribute, raw: object) -> Value:
    """Type a JSON value for `attr`, raising ValueError when it does not fit."""
    kind = attr.type
    if kind in STRING_TYPES or kind == "binary":
        if isinstance(raw, str):
            return raw
    elif kind == "boolean":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
    elif kind == "integer":
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        # Bounded to 64 bits: the databases compare nothing larger.
        if isinstance(raw, int) and not isinstance(raw, bool) and -(2**63) <= raw < 2**63:
            return raw
    elif kind == "decimal":
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
    elif kind == "dateTime":
        if isinstance(raw, str):
            return parse_datetime(raw)
        if isinstance(raw, dt.datetime):
            return _as_utc(raw)
    raise ValueError(kind)


def parse_datetime(text: str) -> dt.datetime:
    """Parse an xsd:dateTime (RFC 7643 §2.3.5) into an aware UTC datetime.

    Values without an offset are taken as UTC: we store and publish UTC only.
    """
    if not text or not text[0].isdigit():
        raise ValueError(text)
    return _as_utc(dt.datetime.fromisoformat(text))


def _as_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


# -- PATCH paths and sortBy ------------------------------------------------------------


def parse_path(text: str, resource_type: ResourceType) -> PatchPath:
    """Parse a PATCH operation's `path` (RFC 7644 §3.5.2).

    `PATH = attrPath / valuePath [subAttr]`. An unknown attribute, sub-attribute or
    malformed path raises `InvalidPath` (`UnknownSchemaPath` when the URN names a schema
    we don't serve); a bad filter inside `[...]` raises `InvalidFilter`, which RFC 7644
    §3.12 lists for PATCH path filters.
    """
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidPath(f"The path is longer than {MAX_FILTER_LENGTH} characters.")
    _reject_unknown_schema(text, resource_type)
    try:
        tokens = _tokenize(text)
    except InvalidFilter as exc:
        raise InvalidPath(exc.detail) from None
    bracket = next((i for i, t in enumerate(tokens) if t.type == "LBRACKET"), None)
    if bracket is None:
        return PatchPath(_resolve_path(tokens, text, resource_type))
    return _value_patch_path(tokens, bracket, text, resource_type)


def _reject_unknown_schema(text: str, resource_type: ResourceType) -> None:
    lowered = text.lower()
    if not lowered.startswith("urn:"):
        return
    if resource_type.schema_by_urn(text) is not None:
        raise InvalidPath(f"'{text}' names a schema, not an attribute.")
    if not any(lowered.startswith(s.id.lower() + ":") for s in resource_type.all_schemas):
        raise UnknownSchemaPath(f"'{text}' names a schema {resource_type.name} does not use.")


def _resolve_path(tokens: list[_Token], text: str, resource_type: ResourceType) -> AttrRef:
    kinds = [t.type for t in tokens]
    if kinds not in (
        ["ATTRNAME"],
        ["ATTRNAME", "SUBATTR"],
        ["SCHEMA_URI", "ATTRNAME"],
        ["SCHEMA_URI", "ATTRNAME", "SUBATTR"],
    ):
        raise InvalidPath(f"'{text}' is not a valid attribute path.")
    ref = resource_type.resolve("".join(_path_text(t) for t in tokens))
    if ref is None:
        raise InvalidPath(f"Unknown attribute '{text}' for {resource_type.name} resources.")
    return ref


def _path_text(tok: _Token) -> str:
    if tok.type == "SCHEMA_URI":
        return f"{tok.value}:"
    if tok.type == "SUBATTR":
        return f".{tok.value}"
    return str(tok.value)  # ATTRNAME: a str already


def _value_patch_path(
    tokens: list[_Token], bracket: int, text: str, resource_type: ResourceType
) -> PatchPath:
    """`attr[filter]` or `attr[filter].sub`."""
    ref = _resolve_path(tokens[:bracket], text, resource_type)
    if ref.sub_attribute is not None or not (
        ref.attribute.type == "complex" and ref.attribute.multi_valued
    ):
        raise InvalidPath(f"'{text}': a value filter needs a multi-valued complex attribute.")
    sub_attribute = None
    end = len(tokens)
    if tokens[-1].type == "SUBATTR":
        end -= 1
        sub_attribute = ref.attribute.sub(tokens[-1].value)
        if sub_attribute is None:
            raise InvalidPath(f"Unknown sub-attribute '{tokens[-1].value}' in '{text}'.")
    if end - bracket < 3 or tokens[end - 1].type != "RBRACKET":
        raise InvalidPath(f"'{text}' is not a valid value path.")
    filter_tokens = tokens[bracket + 1 : end - 1]
    if any(t.type in ("LBRACKET", "RBRACKET") for t in filter_tokens):
        raise InvalidPath(f"'{text}' is not a single value path.")
    _check_limits(text, filter_tokens)
    scoped = _Context(resource_type, scope=AttrRef(ref.schema, ref.attribute))
    node = _convert(_syntax_tree(filter_tokens), scoped)
    return PatchPath(AttrRef(ref.schema, ref.attribute), node, sub_attribute)


def compile_sort(sort_by: str, resource_type: ResourceType) -> AttrRef:
    """Resolve `sortBy` (RFC 7644 §3.4.2.3) to the attribute to order by.

    A multi-valued complex attribute sorts by its `value` (the store picks the primary
    element's value, as §3.4.2.3 says). Unknown attributes raise `InvalidValue`.
    """
    ref = resource_type.resolve(sort_by.strip())
    if ref is None:
        raise InvalidValue(f"Cannot sort by unknown attribute '{sort_by}'.")
    if ref.attribute.returned == "never":
        raise InvalidValue(f"Cannot sort by '{ref}'.")
    if ref.target.type == "complex":
        value = ref.attribute.sub("value") if ref.attribute.multi_valued else None
        if value is None:
            raise InvalidValue(f"'{ref}' is complex: sort by one of its sub-attributes.")
        return AttrRef(ref.schema, ref.attribute, value)
    return ref


# -- evaluation in memory --------------------------------------------------------------

# The values a document holds for an attribute (JSON of any shape: checked as used).
Lookup = Callable[[AttrRef], list[object]]


def evaluate(node: Node, resource: dict[str, object]) -> bool:
    """Test a SCIM resource (its JSON document) against a filter (RFC 7644 §3.4.2.2).

    Attribute names match case-insensitively; multi-valued attributes match when any
    value does; strings compare case-insensitively unless the attribute is caseExact.
    """
    return _evaluate(node, lambda ref: _resource_values(resource, ref))


def evaluate_element(node: Node, element: dict[str, object]) -> bool:
    """Test one element of a multi-valued attribute against a value filter.

    For `PatchPath.value_filter` and `ValuePath.node`, whose refs name sub-attributes.
    """
    return _evaluate(node, lambda ref: _element_values(element, ref))


def _evaluate(node: Node, lookup: Lookup) -> bool:
    match node:
        case And(left, right):
            return _evaluate(left, lookup) and _evaluate(right, lookup)
        case Or(left, right):
            return _evaluate(left, lookup) or _evaluate(right, lookup)
        case Not(inner):
            return not _evaluate(inner, lookup)
        case Present(ref):
            return any(_is_present(v) for v in lookup(ref))
        case Compare(ref, "ne", value):
            return not _evaluate(Compare(ref, "eq", value), lookup)
        case Compare(ref, op, value):
            return any(_compare_one(ref.target, op, v, value) for v in lookup(ref))
        case ValuePath(ref, inner):
            return any(
                evaluate_element(inner, element)
                for element in lookup(AttrRef(ref.schema, ref.attribute))
                if isinstance(element, dict)
            )
    raise TypeError(f"not a filter node: {node!r}")


def _ci_get(mapping: object, key: str) -> object:
    """`mapping[key]` with SCIM's case-insensitive attribute names (RFC 7643 §2.1)."""
    if not isinstance(mapping, dict):
        return None
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    return next((v for k, v in mapping.items() if str(k).lower() == lowered), None)


def _resource_values(resource: dict[str, object], ref: AttrRef) -> list[object]:
    container = resource if ref.is_core else _ci_get(resource, ref.schema.id)
    value = _ci_get(container, ref.attribute.name)
    if ref.sub_attribute is None:
        return list(_flatten(value))
    return [
        sub
        for element in _flatten(value)
        for sub in _flatten(_ci_get(element, ref.sub_attribute.name))
    ]


def _element_values(element: dict[str, object], ref: AttrRef) -> list[object]:
    name = (ref.sub_attribute or ref.attribute).name
    return list(_flatten(_ci_get(element, name)))


def _flatten(value: object) -> Iterable[object]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _is_present(value: object) -> bool:
    if isinstance(value, dict):
        return any(_is_present(v) for v in value.values())
    return value not in (None, "", [])


def _compare_one(attr: Attribute, op: str, actual: object, expected: Value) -> bool:
    try:
        left = _coerce(attr, actual)
    except (TypeError, ValueError):
        return False  # a stored value of the wrong type matches nothing
    right = expected
    if isinstance(left, str) and isinstance(right, str) and not _is_exact(attr):
        left, right = left.casefold(), right.casefold()
    try:
        return _OPERATORS[op](left, right)
    except TypeError:
        return False


def _is_exact(attr: Attribute) -> bool:
    # Binary values are base64: letter case is data.
    return attr.case_exact or attr.type == "binary"


# Any: operands of mismatched types raise TypeError, which `_compare_one` turns into
# "no match".
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b),
    "co": lambda a, b: b in a,
    "sw": lambda a, b: a.startswith(b),
    "ew": lambda a, b: a.endswith(b),
    "gt": lambda a, b: bool(a > b),
    "ge": lambda a, b: bool(a >= b),
    "lt": lambda a, b: bool(a < b),
    "le": lambda a, b: bool(a <= b),
}


# -- rendering -------------------------------------------------------------------------


def format_filter(node: Node) -> str:
    """Render a node as canonical filter text: fully parenthesised, for logs and tests."""
    match node:
        case And(left, right):
            return f"({format_filter(left)} and {format_filter(right)})"
        case Or(left, right):
            return f"({format_filter(left)} or {format_filter(right)})"
        case Not(inner):
            return f"not ({format_filter(inner)})"
        case Present(ref):
            return f"{ref} pr"
        case Compare(ref, op, value):
            return f"{ref} {op} {_format_value(value)}"
        case ValuePath(ref, inner):
            return f"{ref}[{format_filter(inner)}]"
    raise TypeError(f"not a filter node: {node!r}")


def _format_value(value: Value) -> str:
    if isinstance(value, dt.datetime):
        return json.dumps(value.isoformat().replace("+00:00", "Z"))
    return json.dumps(value, ensure_ascii=False)
