"""Relative replica changes (``+1``, ``-2``, ``+50%``) as written in threshold and step rules."""

from __future__ import annotations

import math
import re
from typing import Any

_CHANGE_RE = re.compile(r"^\s*([+-])\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")
CHANGE_HINT = "write a change like '+1', '-2', '+50%' or '-10%'"


class Change:
    """A relative replica change: ``+2`` replicas or ``-10%`` of the current count."""

    __slots__ = ("amount", "percent")

    def __init__(self, amount: float, percent: bool) -> None:
        self.amount = amount
        self.percent = percent

    def apply(self, current: int) -> int:
        """New count; a percent change always moves by at least one replica."""
        if not self.percent:
            return current + int(self.amount)
        scaled = current * (100.0 + self.amount) / 100.0
        if self.amount > 0:
            return max(current + 1, math.ceil(scaled))
        if self.amount < 0:
            return min(current - 1, math.floor(scaled))
        return current

    def __str__(self) -> str:
        number = f"{self.amount:+g}"
        return number + ("%" if self.percent else "")

    def __repr__(self) -> str:
        return f"Change({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Change) and (self.amount, self.percent) == (
            other.amount,
            other.percent,
        )

    def __hash__(self) -> int:
        return hash((self.amount, self.percent))


def parse_change(value: Any) -> Change:
    """Accept ``+1``, ``-2``, ``+50%``, ``-10%`` or a signed integer."""
    if isinstance(value, Change):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid change {value!r}: {CHANGE_HINT}")
    if isinstance(value, int):
        return Change(float(value), False)
    if isinstance(value, str):
        match = _CHANGE_RE.match(value)
        if match is not None:
            amount = float(match.group(2)) * (1 if match.group(1) == "+" else -1)
            percent = match.group(3) == "%"
            if not percent and not amount.is_integer():
                raise ValueError(f"invalid change {value!r}: replicas are whole numbers")
            return Change(amount, percent)
    raise ValueError(f"invalid change {value!r}: {CHANGE_HINT}")
