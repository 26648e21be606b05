"""Sliding-window quantiles with a stated relative error, in bounded memory.

Values go into log-spaced buckets (the DDSketch mapping): bucket ``i`` holds
``(gamma**(i-1), gamma**i]`` with ``gamma = (1 + a) / (1 - a)``, and a
quantile answers ``2 * gamma**i / (gamma + 1)``, which is within relative
error ``a`` of every value in the bucket. The window is a ring of
sub-windows, each with its own sparse counts; a running total over the ring
makes a record O(1) and a quantile O(buckets), and a sub-window that falls
out of the window is subtracted once. See docs/metrics.md for the choice.
"""

from __future__ import annotations

import math


class SlidingQuantiles:
    """Quantiles of the values recorded in the last ``window`` seconds.

    ``window`` is covered by ``slots`` sub-windows, so the effective window
    is between ``window - window/slots`` and ``window`` seconds. Values are
    clamped to ``[min_value, max_value]`` (relative error holds inside);
    zero and negative values are counted as exactly 0.
    """

    __slots__ = (
        "_count",
        "_epochs",
        "_gamma",
        "_head",
        "_inv_log_gamma",
        "_offset",
        "_slot_counts",
        "_slot_zeros",
        "_totals",
        "_width",
        "_zeros",
        "max_value",
        "min_value",
        "relative_error",
        "slots",
        "window",
    )

    def __init__(
        self,
        window: float = 60.0,
        slots: int = 12,
        relative_error: float = 0.02,
        min_value: float = 1e-4,
        max_value: float = 3600.0,
    ) -> None:
        if not window > 0 or slots < 1:
            raise ValueError("window must be > 0 and slots >= 1")
        if not 0 < relative_error < 1:
            raise ValueError("relative_error must be in (0, 1)")
        if not 0 < min_value < max_value:
            raise ValueError("need 0 < min_value < max_value")
        self.window = window
        self.slots = slots
        self.relative_error = relative_error
        self.min_value = min_value
        self.max_value = max_value
        self._width = window / slots
        self._gamma = (1 + relative_error) / (1 - relative_error)
        self._inv_log_gamma = 1.0 / math.log(self._gamma)
        self._offset = math.ceil(math.log(min_value) * self._inv_log_gamma)
        size = math.ceil(math.log(max_value) * self._inv_log_gamma) - self._offset + 1
        self._totals = [0] * size
        self._zeros = 0
        self._count = 0
        self._slot_counts: list[dict[int, int]] = [{} for _ in range(slots)]
        self._slot_zeros = [0] * slots
        self._epochs = [-1] * slots  # sub-window number each slot holds
        self._head = -1  # newest sub-window number seen

    @property
    def buckets(self) -> int:
        """Number of value buckets (memory and query cost are proportional to it)."""
        return len(self._totals)

    def _advance(self, epoch: int) -> None:
        """Drop every slot older than the ``slots`` sub-windows ending at ``epoch``."""
        if epoch <= self._head:
            return
        oldest_kept = epoch - self.slots + 1
        for slot in range(self.slots):
            held = self._epochs[slot]
            if 0 <= held < oldest_kept:
                counts = self._slot_counts[slot]
                totals = self._totals
                for index, n in counts.items():
                    totals[index] -= n
                    self._count -= n
                counts.clear()
                self._zeros -= self._slot_zeros[slot]
                self._count -= self._slot_zeros[slot]
                self._slot_zeros[slot] = 0
                self._epochs[slot] = -1
        self._head = epoch

    def record(self, value: float, now: float) -> None:
        """Add one value observed at ``now`` (values older than the window are dropped)."""
        epoch = int(now // self._width)
        if epoch > self._head:
            self._advance(epoch)
        elif epoch <= self._head - self.slots:
            return  # late beyond the window
        slot = epoch % self.slots
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch  # empty: _advance cleared it, or it was never used
        self._count += 1
        if value <= 0.0:
            self._zeros += 1
            self._slot_zeros[slot] += 1
            return
        if value < self.min_value:
            value = self.min_value
        elif value > self.max_value:
            value = self.max_value
        index = math.ceil(math.log(value) * self._inv_log_gamma) - self._offset
        counts = self._slot_counts[slot]
        counts[index] = counts.get(index, 0) + 1
        self._totals[index] += 1

    def count(self, now: float) -> int:
        """How many values the window ending at ``now`` holds."""
        self._advance(int(now // self._width))
        return self._count

    def quantile(self, q: float, now: float) -> float | None:
        """The ``q`` quantile (0..1) of the window ending at ``now``; None when empty.

        Rank ``floor(q * (n - 1))`` of the sorted values (numpy's ``lower``),
        answered within ``relative_error`` of the true value.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within 0..1, got {q}")
        self._advance(int(now // self._width))
        if self._count <= 0:
            return None
        rank = math.floor(q * (self._count - 1))
        if rank < self._zeros:
            return 0.0
        seen = self._zeros
        for index, n in enumerate(self._totals):
            seen += n
            if seen > rank:
                upper = self._gamma ** (index + self._offset)
                return 2.0 * upper / (self._gamma + 1.0)
        return self.max_value  # not reached: the totals hold every counted value
