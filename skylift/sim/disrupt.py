"""Things that happen to a replay from outside the policy: spot reclaims and a spend cap.

Both are deterministic (a seeded generator, plain arithmetic), so a replay with
them is as reproducible as one without; the engine's ``decide`` never sees them
except through what they do to the replicas.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class SpotInterruptions:
    """Reclaims of the spot share of the burst fleet, a Poisson process per instance.

    The fleet is ``reserved`` instances (firm) plus a burst above them, of which
    ``share`` runs on spot. Each spot instance is reclaimed with ``rate_per_hour``;
    its replicas are lost from ``ready`` and replaced after the start-up (the
    replay does that). The aggregate is a non-homogeneous Poisson process drawn
    by accumulating hazard against Exp(1) thresholds: O(1) per tick, exact for a
    spot count that is constant within a tick.
    """

    reserved: int
    share: float
    per_instance: int
    rate_per_hour: float
    seed: int = 0
    notice: float = 0.0
    """Seconds between the reclaim notice and the machine going (AWS: 120): the
    replacement starts at the notice, so a start-up shorter than it hides the loss."""
    interruptions: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _hazard: float = field(init=False, default=0.0)
    _threshold: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._threshold = self._rng.expovariate(1.0)

    def spot_instances(self, replicas: int) -> float:
        """Spot instances when ``replicas`` are paid (fractional: the cost model bills a
        partly filled instance pro rata, see skylift.cost.model)."""
        return self.share * max(0.0, replicas / self.per_instance - self.reserved)

    def lost(self, replicas: int, tick: float) -> int:
        """Replicas reclaimed during one tick of ``tick`` seconds."""
        if self.rate_per_hour <= 0.0 or self.share <= 0.0:
            return 0
        self._hazard += self.spot_instances(replicas) * self.rate_per_hour * tick / 3600.0
        lost = 0
        while self._hazard >= self._threshold:
            self._hazard -= self._threshold
            self._threshold = self._rng.expovariate(1.0)
            self.interruptions += 1
            lost += self.per_instance
        return lost


@dataclass(slots=True)
class SpendCap:
    """A hard monthly budget: once a month's spend reaches ``usd``, the fleet is held at
    ``floor`` replicas (what the reservation already pays for) until the month ends.

    Months are 730-hour windows from ``start`` (the trace start) (the clouds' billing month).
    ``usd_per_hour(replicas)`` prices the fleet; it is the cost model's, passed in.
    """

    usd: float
    floor: int
    usd_per_hour: Callable[[int], float]
    start: float = 0.0
    month_s: float = 730.0 * 3600.0
    spent: float = 0.0
    month: int = -1
    capped_seconds: float = 0.0

    def allowed(self, now: float, want: int) -> int:
        """Replicas the cap lets the fleet have at ``now``."""
        self._roll(now)
        return want if self.spent < self.usd else min(want, max(self.floor, 1))

    def pay(self, now: float, replicas: int, tick: float) -> None:
        """Add one tick of ``replicas`` to the month's spend."""
        self._roll(now)
        self.spent += self.usd_per_hour(replicas) * tick / 3600.0
        if self.spent >= self.usd:
            self.capped_seconds += tick

    def _roll(self, now: float) -> None:
        month = math.floor((now - self.start) / self.month_s)
        if month != self.month:
            self.month = month
            self.spent = 0.0
