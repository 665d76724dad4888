"""The closed months' chart on the billing page, as numbers for an inline SVG
(server-rendered: no script, no library): bars of billable users against a left axis,
the invoice total as a line against a right axis, each bar's value above it and its
month below it as people write it ("Oct 2026").

Pure: no Flask, no database.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
          "Dec")
SLOT = 64  # px per month: wide enough for "Oct 2026" under its bar
LEFT, RIGHT, TOP, BOTTOM = 56, 72, 22, 30
HEIGHT = 220
TICKS = 4  # gridlines above the zero line, on both axes


def month_label(month: str) -> str:
    """"2026-10" as "Oct 2026"."""
    year, number = month.split("-")
    return f"{MONTHS[int(number) - 1]} {year}"


def nice_step(value: Decimal) -> Decimal:
    """The smallest 1, 2 or 5 × 10ⁿ (n ≥ 0) at or above `value`: a tick step that reads
    as a round number (whole users, whole dollars)."""
    step = Decimal(1)
    while step < value:
        for factor in (2, Decimal("2.5"), 2):  # 1 → 2 → 5 → 10 → 20 …
            step *= factor
            if step >= value:
                break
    return step


def _number(value: Decimal) -> str:
    return f"{value:,.0f}" if value == value.to_integral() else f"{value:,.2f}"


def chart(series: list[dict[str, Any]]) -> dict[str, Any]:
    """Layout of the chart of `series` (oldest first: month, billable, total): the
    SVG's size, bars, ticks of both axes and the total's line, in pixels."""
    width = LEFT + SLOT * max(1, len(series)) + RIGHT
    base, plot = HEIGHT - BOTTOM, HEIGHT - BOTTOM - TOP
    top_users = TICKS * nice_step(Decimal(max((s["billable"] for s in series), default=0))
                                  / TICKS)
    top_amount = TICKS * nice_step(max((Decimal(s["total"] or "0") for s in series),
                                       default=Decimal(0)) / TICKS)
    bars, points = [], []
    for i, s in enumerate(series):
        h = plot * s["billable"] / float(top_users)
        x = LEFT + i * SLOT
        amount = Decimal(s["total"] or "0")
        y_amount = base - plot * float(amount / top_amount)
        bars.append({"x": x + SLOT * 0.15, "y": round(base - h, 1), "w": SLOT * 0.7,
                     "h": round(h, 1), "mid": x + SLOT / 2, "month": s["month"],
                     "label": month_label(s["month"]), "users": s["billable"],
                     "total": s["total"], "amount_y": round(y_amount, 1)})
        points.append(f"{x + SLOT / 2},{round(y_amount, 1)}")
    ticks = [{"y": round(base - plot * k / TICKS, 1),
              "users": _number(top_users * k / TICKS),
              "amount": _number(top_amount * k / TICKS)} for k in range(TICKS + 1)]
    return {"width": width, "height": HEIGHT, "left": LEFT, "right": width - RIGHT,
            "top": TOP, "base": base, "bars": bars, "ticks": ticks,
            "points": " ".join(points)}
