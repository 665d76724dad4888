"""Totals, prices, invoices and adjustment lines: pure arithmetic on decisions.

Amounts are USD `Decimal`s rounded to cents, prices exclude tax (PRODUCT.md). A month's
totals are counts per (unit, audience, plan), where a unit is a module under the
`active_with_module` policy and `user` under the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from billing.policies import PER_USER, Decision

CURRENCY = "USD"
CENT = Decimal("0.01")
# A month over this amount may be paid by invoice instead of by card (strictly over).
INVOICE_PAYMENT_OVER = Decimal("5000")
MAX_PRICE = Decimal("1000000")  # per unit and month: anything above is a typing error

Key = tuple[str, str, str]  # (unit, audience, plan)


class InvalidPrice(ValueError):
    """A price table entry that cannot be used; the message names it."""


def parse_prices(entries: Iterable[Mapping[str, object]],
                 units: Mapping[str, str] | None = None) -> dict[tuple[str, str], Decimal]:
    """A price table from `[{"unit": "Hybrid", "plan": "standard", "price": "4.50"}, …]`.
    `units`: the units that may be priced (casefolded name to spelling), for a table
    being set; a unit outside them would never meet an invoice line, so it is refused,
    and one given in another case is stored in the catalogue's spelling."""
    table: dict[tuple[str, str], Decimal] = {}
    for entry in entries:
        unit, plan = entry.get("unit"), entry.get("plan")
        if not isinstance(unit, str) or not unit or plan not in ("standard", "frontline"):
            raise InvalidPrice("Each price needs a unit (a module name, or \"user\") and a "
                               "plan (standard or frontline).")
        if units is not None:
            unit = _known_unit(unit, units)
        raw = entry.get("price")
        try:
            price = Decimal(raw if isinstance(raw, str) else str(raw))
            fine = (price.is_finite() and 0 <= price <= MAX_PRICE
                    and price == price.quantize(Decimal("0.0001")))
        except InvalidOperation:
            fine = False
        if not fine:
            raise InvalidPrice(f"The price of {unit}/{plan} must be a number from 0 to "
                               f"{MAX_PRICE:,}, with at most 4 decimals.")
        if (unit, plan) in table:
            raise InvalidPrice(f"{unit}/{plan} is priced twice.")
        table[(unit, plan)] = price
    return table


_LISTED_UNITS = 30  # a catalogue may be long; the message names this many


def _known_unit(unit: str, units: Mapping[str, str]) -> str:
    known = units.get(unit.casefold())
    if known is not None:
        return known
    names = sorted(units.values(), key=lambda n: (n != PER_USER, n.casefold()))
    listed = ", ".join(names[:_LISTED_UNITS]) + (
        f" and {len(names) - _LISTED_UNITS} more" if len(names) > _LISTED_UNITS else "")
    raise InvalidPrice(f"{unit!r} is neither \"user\" nor a module of this tenant's "
                       f"catalogue, so no invoice line would ever use its price. Price one "
                       f"of: {listed}.")


def prices_as_json(table: Mapping[tuple[str, str], Decimal]) -> list[dict[str, str]]:
    return [{"unit": unit, "plan": plan, "price": str(price)}
            for (unit, plan), price in sorted(table.items())]


def count(decisions: Iterable[Decision], into: Counter[Key] | None = None) -> Counter[Key]:
    """Units per (unit, audience, plan) of the billable decisions."""
    totals: Counter[Key] = into if into is not None else Counter()
    for decision in decisions:
        for unit in decision.units:
            totals[(unit, decision.audience, decision.plan)] += 1
    return totals


@dataclass(frozen=True)
class Line:
    description: str
    unit: str
    audience: str
    plan: str
    quantity: int
    unit_price: Decimal
    amount: Decimal
    priced: bool
    month: str | None = None  # set on adjustment lines: the month they correct

    def as_json(self) -> dict[str, object]:
        return {"description": self.description, "unit": self.unit,
                "audience": self.audience, "plan": self.plan, "quantity": self.quantity,
                "unitPrice": str(self.unit_price), "amount": str(self.amount),
                "priced": self.priced, **({"month": self.month} if self.month else {})}


@dataclass(frozen=True)
class Invoice:
    lines: tuple[Line, ...]
    adjustments: tuple[Line, ...]
    subtotal: Decimal  # the month's own lines
    adjustments_total: Decimal
    total: Decimal
    po_number: str | None
    non_profit: bool

    @property
    def invoice_payment_eligible(self) -> bool:
        return self.subtotal > INVOICE_PAYMENT_OVER

    def as_json(self) -> dict[str, object]:
        return {"currency": CURRENCY, "taxIncluded": False,
                "lines": [line.as_json() for line in self.lines],
                "adjustments": [line.as_json() for line in self.adjustments],
                "subtotal": str(self.subtotal),
                "adjustmentsTotal": str(self.adjustments_total), "total": str(self.total),
                "poNumber": self.po_number, "nonProfit": self.non_profit,
                "invoicePaymentEligible": self.invoice_payment_eligible}


def describe(unit: str, audience: str, plan: str) -> str:
    what = "Users" if unit == PER_USER else unit
    return f"{what}, {audience}, {plan} plan"


def price_line(key: Key, quantity: int, prices: Mapping[tuple[str, str], Decimal],
               non_profit: bool, month: str | None = None) -> Line:
    unit, audience, plan = key
    price = prices.get((unit, plan))
    unit_price = Decimal(0) if non_profit or price is None else price
    amount = (unit_price * quantity).quantize(CENT, rounding=ROUND_HALF_UP)
    return Line(describe(unit, audience, plan), unit, audience, plan, quantity, unit_price,
                amount, price is not None or non_profit, month)


def make_invoice(totals: Mapping[Key, int], prices: Mapping[tuple[str, str], Decimal],
                 non_profit: bool, po_number: str | None,
                 adjustments: Iterable[Line] = ()) -> Invoice:
    lines = tuple(price_line(key, qty, prices, non_profit)
                  for key, qty in sorted(totals.items()) if qty)
    adjusted = tuple(adjustments)
    subtotal = sum((line.amount for line in lines), Decimal("0.00"))
    adjustments_total = sum((line.amount for line in adjusted), Decimal("0.00"))
    return Invoice(lines, adjusted, subtotal, adjustments_total, subtotal + adjustments_total,
                   po_number or None, non_profit)


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A correction to a closed month: a reversal (-1) of what was billed, or the corrected
    line (+1), for one user."""

    month: str
    user_id: str
    sign: int
    units: tuple[str, ...]
    audience: str
    plan: str
    reason: str


def adjustments_for(month: str, billed: Decision | None, corrected: Decision | None,
                    reason: str) -> list[Adjustment]:
    """What to add to a later invoice when a closed month's line for a user turns out
    wrong: nothing if what is billed stays the same."""
    def billed_as(d: Decision | None) -> tuple[tuple[str, ...], str, str] | tuple[()]:
        return (d.units, d.audience, d.plan) if d is not None and d.units else ()

    if billed_as(billed) == billed_as(corrected):
        return []
    lines = []
    if billed is not None and billed.units:
        lines.append(Adjustment(month, billed.user_id, -1, billed.units, billed.audience,
                                billed.plan, reason))
    if corrected is not None and corrected.units:
        lines.append(Adjustment(month, corrected.user_id, +1, corrected.units,
                                corrected.audience, corrected.plan, reason))
    return lines
