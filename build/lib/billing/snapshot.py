"""Content hashes of closed months: the same inputs give the same hash.

The hash covers what went in (tenant, month, zone, window, cut-off, the last event and
activity row read, the policy and its version, prices, trial, non-profit, the billing
info printed on the invoice) and what came out (every line in order, the totals and the
adjustments), so a re-run close proves it reproduced the month exactly. Pure.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ENGINE_VERSION = 2  # bumped when the fold (or the hashed line format) changes


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


class ContentHash:
    """SHA-256 over a stream of JSON values, each framed by its length."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, value: Any) -> None:
        data = canonical(value)
        self._sha.update(len(data).to_bytes(8, "big"))
        self._sha.update(data)

    def add_text(self, text: str) -> None:
        data = text.encode()
        self._sha.update(len(data).to_bytes(8, "big"))
        self._sha.update(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
