"""The closed months' chart (billing.chart): readable months, round axes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.chart import chart, month_label, nice_step


@pytest.mark.parametrize(("month", "label"), [("2026-10", "Oct 2026"), ("2027-01", "Jan 2027"),
                                              ("2026-12", "Dec 2026")])
def test_months_read_as_people_write_them(month: str, label: str) -> None:
    assert month_label(month) == label


@pytest.mark.parametrize(("value", "step"), [("0", 1), ("0.75", 1), ("1.2", 2), ("4.875", 5),
                                             ("49.25", 50), ("250", 500), ("1999", 2000)])
def test_tick_steps_are_round(value: str, step: int) -> None:
    assert nice_step(Decimal(value)) == step


def test_every_month_has_its_label_value_and_both_axes() -> None:
    c = chart([{"month": "2026-10", "billable": 197, "total": "0.00"},
               {"month": "2026-11", "billable": 150, "total": "1234.50"}])
    assert [b["label"] for b in c["bars"]] == ["Oct 2026", "Nov 2026"]
    assert [t["users"] for t in c["ticks"]] == ["0", "50", "100", "150", "200"]
    assert [t["amount"] for t in c["ticks"]] == ["0", "500", "1,000", "1,500", "2,000"]
    tallest = c["bars"][0]
    assert tallest["y"] > c["top"] and tallest["y"] + tallest["h"] == c["base"]
    assert c["width"] >= 2 * 64  # each month has room for its label
