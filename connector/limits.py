"""How long a stored text may be: one table for every surface (SCIM, admin API, web
forms, Entra sync), documented in docs/scim.md ("Maximum lengths").

Without limits a 100,000-character userName was stored on SQLite (which checks no
length) and answered 500 on PostgreSQL (a varchar's size, an index row's 2,704 bytes).
Every surface checks its input against these and answers its own kind of 400; the
directory checks again what any writer hands it (`check_user`, `check_group`), so a
value that got past a surface (an Entra attribute) is a refusal that names the attribute
(`ValueTooLong`), never a database error.

A limit counts characters (see `refusal` for the two cases that also count the
case-folded form).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from connector.commands import GroupFields, IndexedValue, UserFields
from connector.errors import DomainError

NAME = 256  # userName, displayName, name parts, emails, group displayName, most strings
EXTERNAL_ID = 256  # externalId (an IdP's own id: Entra's are 36 characters)
URL = 2048  # profileUrl, photos, $ref, x509 certificates (base64)
ID = 64  # the connector's ids (36 characters), member values, ids in URL paths
TYPE = 64  # the `type` of a multi-valued element (work, home, mobile...)
MODULE = 64  # a module name
TEXT = 1024  # free text with room: a formatted address, a street address, a password
# Any other text stored in a user's or group's document (an Entra attribute an admin
# mapped): the largest of the above, so no surface's own limit is undercut.
DOCUMENT_TEXT = URL


# The value of a multi-valued attribute's element (an e-mail, a photo URL) is indexed for
# filtering, case-folded; an index row holds at most 2,704 bytes on PostgreSQL, so such a
# value may also have at most this many bytes in UTF-8 once case-folded (2,048 Chinese
# characters are 6,144 bytes).
INDEXED_BYTES = 2048


class ValueTooLong(DomainError):
    """A text longer than its attribute's maximum length."""

    def __init__(self, attribute: str, limit: int, length: int, unit: str = "characters"
                 ) -> None:
        super().__init__(
            f"'{attribute}' is {length:,} {unit} long; it may have at most {limit:,}. "
            "Shorten it and send it again.")
        self.attribute = attribute
        self.limit = limit
        self.length = length
        self.unit = unit


def refusal(attribute: str, value: str, limit: int, indexed: bool = False
            ) -> ValueTooLong | None:
    """Why `value` is too long for `attribute`, or None. Names are also compared
    case-insensitively, through their case-folded form, which a few characters lengthen
    (ß → ss, ﬃ → ffi): that form may have at most twice the limit. An `indexed` value
    also at most INDEXED_BYTES bytes once case-folded."""
    if len(value) > limit:
        return ValueTooLong(attribute, limit, len(value))
    if len(value) * 3 > 2 * limit:  # only then can folding pass twice the limit
        folded = len(value.casefold())
        if folded > 2 * limit:
            return ValueTooLong(attribute, 2 * limit, folded, "characters once case-folded")
    if indexed and len(value) * 4 > INDEXED_BYTES:
        size = len(value.casefold().encode())
        if size > INDEXED_BYTES:
            return ValueTooLong(attribute, INDEXED_BYTES, size, "bytes (UTF-8, case-folded)")
    return None


def too_long(value: str, limit: int) -> bool:
    return refusal("", value, limit) is not None


def check(attribute: str, value: Any, limit: int, indexed: bool = False) -> None:
    """Refuse a text over its limit (ValueTooLong); anything else passes."""
    if isinstance(value, str):
        error = refusal(attribute, value, limit, indexed)
        if error is not None:
            raise error


def check_user(fields: UserFields) -> None:
    """What the directory stores of a user, whoever wrote it."""
    check("userName", fields.user_name, NAME)
    check("externalId", fields.external_id, EXTERNAL_ID)
    check("displayName", fields.display_name, NAME)
    check_values(fields.values)
    for module in fields.modules or ():
        check("modules", module, MODULE)
    check_document(fields.data)


def check_values(values: Iterable[IndexedValue]) -> None:
    for item in values:
        check(f"{item.attr}.value", item.value, URL, indexed=True)
        check(f"{item.attr}.type", item.type, TYPE)
        check(f"{item.attr}.display", item.display, NAME)


def check_group(fields: GroupFields) -> None:
    check("displayName", fields.display_name, NAME)
    check("externalId", fields.external_id, EXTERNAL_ID)
    for module in fields.modules or ():
        check("modules", module, MODULE)
    check_document(fields.data)


def check_document(data: Mapping[str, Any]) -> None:
    """Every text in a stored JSON document (iterative: the nesting is the writer's).
    A first pass only measures (every write of every user comes here: a few µs); the
    attribute is named only for a document that has a text too long."""
    try:  # a document that is short as a whole has no text too long (~1 µs)
        if len(orjson.dumps(data)) * 3 <= DOCUMENT_TEXT:
            return
    except TypeError:  # not plain JSON (an integer past 64 bits): walk it
        pass
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) * 3 > DOCUMENT_TEXT:  # shorter texts pass whatever they hold
                break
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    else:
        return
    named: list[tuple[str, Any]] = [("", data)]
    while named:
        path, item = named.pop()
        if isinstance(item, str):
            check(path or "value", item, DOCUMENT_TEXT)
        elif isinstance(item, Mapping):
            named.extend((f"{path}.{key}" if path else str(key), value)
                         for key, value in item.items())
        elif isinstance(item, list):
            named.extend((path, value) for value in item)
