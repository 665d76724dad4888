"""Bulk-seeded users: ids and properties computed from an index, so a million cost O(1).

A seeded user exists only as a position in a SeedBlock until a test changes it; the
directory then keeps a real record for it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.fakes.changes import ALL_FIELDS, Change, UserChange


@dataclass(frozen=True, slots=True)
class SeedBlock:
    """`count` virtual users at positions start..start+count-1 of the creation order."""

    start: int
    count: int
    high: int  # the upper 96 bits shared by the block's object ids
    prefix: str
    domain: str
    account_enabled: bool
    user_type: str

    def user_id(self, index: int) -> str:
        return str(uuid.UUID(int=(self.high << 32) | index))

    def props(self, index: int) -> dict[str, Any]:
        n = self.start + index
        upn = f"{self.prefix}{n}@{self.domain}"
        return {"userPrincipalName": upn, "mail": upn, "givenName": f"Given{n}",
                "surname": f"Surname{n}", "displayName": f"Given{n} Surname{n}",
                "accountEnabled": self.account_enabled, "userType": self.user_type,
                "employeeId": f"E{n:08d}", "mailNickname": f"{self.prefix}{n}",
                "department": f"Dept{n % 50}", "jobTitle": f"Title{n % 200}",
                "mobilePhone": f"+1 555 {n:07d}", "businessPhones": [f"+1 444 {n:07d}"],
                "officeLocation": f"Building {n % 20}", "companyName": "Contoso"}

    def index_of_upn(self, upn: str) -> int | None:
        found = re.fullmatch(rf"{re.escape(self.prefix)}(\d+)@{re.escape(self.domain)}", upn,
                             re.IGNORECASE)
        index = int(found.group(1)) - self.start if found else -1
        return index if 0 <= index < self.count else None


class SeededUsers(Sequence[str]):
    """The ids (and UPNs) of one `seed_users` call, computed on demand."""

    def __init__(self, block: SeedBlock) -> None:
        self.block = block

    def __len__(self) -> int:
        return self.block.count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.block.user_id(i) for i in range(*index.indices(self.block.count))]
        if index < 0:
            index += self.block.count
        if not 0 <= index < self.block.count:
            raise IndexError(index)
        return self.block.user_id(index)

    def upn(self, index: int) -> str:
        return str(self.block.props(index)["userPrincipalName"])


class SeedLog(Sequence[Change]):
    """A block's creation entries for the change log, built only when read."""

    def __init__(self, block: SeedBlock) -> None:
        self.block = block

    def __len__(self) -> int:
        return self.block.count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.block.count))]
        return UserChange(self.block.user_id(index), ALL_FIELDS)
