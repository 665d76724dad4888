"""The words a user is found by on the admin users page, and the words of a search.

A search matches any word of a user's name (userName, displayName, given and family
name) or e-mail address (the whole address, its local part, its domain and the domain's
parts), ignoring case and accents: `dvorak`, `example.com` and `Jiri` find Jiří Dvořák
<jiri.dvorak@example.com>. Words are folded here once, on every write of the user
(`connector.directory`), into `user_search_words`; a search folds its own words the same
way and reads each as one range of that table's index (a prefix match).

Pure: no database, no Flask.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

WORD_LENGTH = 128  # the column's size; longer words are cut (a prefix still matches)
MAX_QUERY_WORDS = 8

# Letters NFKD leaves whole although people type them without the accent.
_PLAIN = str.maketrans({"ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "đ": "d", "Đ": "d",
                        "ħ": "h", "ı": "i", "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe",
                        "þ": "th", "Þ": "th", "ð": "d", "Ð": "d"})
_PARTS = re.compile(r"[\W_]+")
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")
_SPACE = re.compile(r"\s")


def fold(text: str) -> str:
    """Casefold `text` and strip its accents (NFKD, combining marks dropped)."""
    if text.isascii():  # most names and every address: nothing to strip (~20× faster)
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.translate(_PLAIN))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _tokens(text: str) -> set[str]:
    """Each space-separated token whole (without edge punctuation) and its parts."""
    found: set[str] = set()
    for token in fold(text).split():
        if token.isalnum():  # most words of a name: nothing to strip or split (as \w)
            found.add(token)
            continue
        token = _EDGES.sub("", token)
        if token:
            found.add(token)
            found.update(p for p in _PARTS.split(token) if p)
    return found


def _email_words(address: str) -> set[str]:
    folded = _EDGES.sub("", fold(address))
    local, _, domain = folded.rpartition("@")
    if local and domain and not _SPACE.search(folded):
        # One token (every real address): the address, its local part and the local
        # part's parts, and the domain's words, made once per domain (every user of a
        # tenant shares a few). The same words as below: '@' separates parts anyway.
        found = {folded, local}
        found.update(p for p in _PARTS.split(local) if p)
        return found | _domain_words(domain)
    found = _tokens(folded)
    if local and domain:
        labels = domain.split(".")
        found.add(local)
        found.update(".".join(labels[i:]) for i in range(len(labels)) if labels[i:])
    return found


@functools.lru_cache(maxsize=1024)
def _domain_words(domain: str) -> frozenset[str]:
    """A folded domain's parts and each of its suffixes (`contoso.example`, `example`)."""
    labels = domain.split(".")
    return frozenset({p for p in _PARTS.split(domain) if p}
                     | {".".join(labels[i:]) for i in range(len(labels))})


def user_words(user_name: str, display_name: str | None, given_name: str | None,
               family_name: str | None, emails: Iterable[str]) -> set[str]:
    """The words that find this user, folded, each at most WORD_LENGTH characters.

    A word that starts another of the user's words is left out (`jiri` beside
    `jiri.dvorak@example.com`, `example` beside `example.com`): a search matches the start
    of a word, so the longer one finds the user for it. That halves the rows."""
    found = _email_words(user_name) if "@" in user_name else _tokens(user_name)
    seen = {user_name}
    for text in (display_name, given_name, family_name):
        if text and text not in seen:
            seen.add(text)
            found |= _tokens(text)
    for address in emails:
        if address not in seen:  # Entra's mail is mostly the userPrincipalName
            seen.add(address)
            found |= _email_words(address)
    ordered = sorted({w[:WORD_LENGTH] for w in found if w})
    # Sorted, the words a word starts follow it at once.
    return {w for i, w in enumerate(ordered)
            if i + 1 == len(ordered) or not ordered[i + 1].startswith(w)}


def query_words(q: str) -> list[str]:
    """A search's words, folded, longest first (the most selective drives the query).
    Empty when `q` holds no letter or digit."""
    words = {_EDGES.sub("", t)[:WORD_LENGTH] for t in fold(q).split()}
    return sorted((w for w in words if w), key=lambda w: (-len(w), w))


def profile_words(user_name: str, display_name: str | None, data: dict[str, Any]
                  ) -> set[str]:
    """`user_words` of a user as stored: its SCIM profile gives the given and family
    name (`name.givenName`, `.familyName`) and the e-mail addresses (`emails[].value`)."""
    return user_words(*profile_sources(user_name, display_name, data))


def profile_sources(user_name: str, display_name: str | None, data: dict[str, Any]
                    ) -> tuple[str, str | None, str | None, str | None, list[str]]:
    """What a user's words are made of (equal sources: equal words, without making
    them: a write that changes none of them leaves the words alone)."""
    name = data.get("name")
    name = name if isinstance(name, dict) else {}
    emails = data.get("emails")
    addresses = [e["value"] for e in emails if isinstance(e, dict)
                 and isinstance(e.get("value"), str)] if isinstance(emails, list) else []
    return (user_name, display_name, _text(name.get("givenName")),
            _text(name.get("familyName")), addresses)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
