"""Money from a replay's timeline: packing, the reserved baseline and the mix. Pure.

Billing model (docs/cost.md):

- ``per_instance`` replicas fit on one instance, by the replicas' declared
  requests (cores and memory), never by what a machine reports.
- The fleet is billed pro rata: ``paid / per_instance`` instances in each row
  (a partly filled instance counts by its share; a cloud billing per second
  converges to this for fleets of a few instances or more, and the error is
  under one instance at any moment).
- ``reserved`` instances are paid for the whole replay, used or not; the
  instances above them (the burst) run ``spot_share`` on spot and the rest
  on demand.

Everything here reads only the timeline's ``t`` and ``paid`` columns, so the
money can be recomputed from ``skylift simulate --timeline`` alone.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from skylift.cost.prices import InstanceType, PriceList


class CostError(ValueError):
    """A request that does not fit, or a mix the price file cannot price."""


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per instance-hour of one instance type, by kind (None: not offered)."""

    on_demand: float
    reserved: float | None = None
    spot: float | None = None
    interruption_rate: float = 0.0
    notice: float = 0.0

    @classmethod
    def of(cls, instance: InstanceType) -> Rates:
        """The rates of a price-file instance type (reserved with its upfront spread)."""
        return cls(
            on_demand=instance.on_demand,
            reserved=instance.reserved.effective_hourly if instance.reserved else None,
            spot=instance.spot.price if instance.spot else None,
            interruption_rate=instance.spot.interruption_rate if instance.spot else 0.0,
            notice=instance.spot.notice if instance.spot else 0.0,
        )

    def burst(self, spot_share: float) -> float:
        """USD per burst instance-hour when ``spot_share`` of the burst runs on spot."""
        if spot_share > 0 and self.spot is None:
            raise CostError("the instance type has no spot price: add `spot:` or use no spot")
        return (1.0 - spot_share) * self.on_demand + spot_share * (self.spot or 0.0)


def per_instance(instance: InstanceType, cpu: float, memory: int, name: str = "") -> int:
    """Replicas of a (cpu cores, memory bytes) request that fit on one instance."""
    if cpu <= 0 or memory <= 0:
        raise CostError("a replica's request needs cpu > 0 and memory > 0")
    fit = min(math.floor(instance.cores / cpu + 1e-9), instance.memory // memory)
    if fit < 1:
        raise CostError(
            f"a replica (cpu {cpu:g}, memory {memory / 2**20:g}Mi) does not fit instance type "
            f"{name or '?'} ({instance.cores:g} cores, {instance.memory / 2**30:g}Gi): pick a "
            "bigger type (--instance) or a smaller request (--cpu / --memory)"
        )
    return int(fit)


@dataclass(frozen=True, slots=True)
class Mix:
    """``reserved`` instances always paid; ``spot_share`` of the burst above them on spot."""

    reserved: int = 0
    spot_share: float = 0.0


@dataclass(frozen=True, slots=True)
class Cost:
    """USD of one replay, by kind."""

    reserved: float
    on_demand: float
    spot: float

    @property
    def usd(self) -> float:
        """Total."""
        return self.reserved + self.on_demand + self.spot

    def to_dict(self) -> dict[str, Any]:
        """The ``cost`` object of ``-o json``."""
        return {
            "usd": round(self.usd, 2),
            "by_kind": {
                "reserved": round(self.reserved, 2),
                "on_demand": round(self.on_demand, 2),
                "spot": round(self.spot, 2),
            },
        }


def fleet_hours(
    t: Sequence[int], paid: Sequence[float], step: int, k: int
) -> list[tuple[float, float]]:
    """Per timeline row: (average instances, hours the row covers, its gap included)."""
    out = []
    end = t[0]
    for t_row, p in zip(t, paid, strict=True):
        span = t_row + step - end
        end = t_row + step
        out.append((p * step / span / k, span / 3600.0))
    return out


def price(rows: Sequence[tuple[float, float]], rates: Rates, mix: Mix) -> Cost:
    """Money of a fleet (``fleet_hours``) under a mix."""
    hours = sum(h for _, h in rows)
    burst = sum(max(0.0, n - mix.reserved) * h for n, h in rows)
    if mix.reserved and rates.reserved is None:
        raise CostError("the instance type has no reserved price: add `reserved:` or reserve 0")
    spot = mix.spot_share * burst * (rates.spot or 0.0) if mix.spot_share else 0.0
    return Cost(
        reserved=mix.reserved * hours * (rates.reserved or 0.0),
        on_demand=(1.0 - mix.spot_share) * burst * rates.on_demand,
        spot=spot,
    )


def usd_per_hour(replicas: int, k: int, rates: Rates, mix: Mix) -> float:
    """USD/h of a fleet of ``replicas`` right now (the spend cap's meter)."""
    burst = max(0.0, replicas / k - mix.reserved)
    return mix.reserved * (rates.reserved or 0.0) + burst * rates.burst(mix.spot_share)


@dataclass(frozen=True, slots=True)
class Baseline:
    """The cheapest reservation: ``instances``, which the fleet stays above ``above_pct``
    of the time; ``breakeven_pct`` is reserved / burst price, the closed-form answer."""

    instances: int
    above_pct: float
    breakeven_pct: float


def level_above(rows: Sequence[tuple[float, float]], pct: float) -> int:
    """The whole number of instances the fleet stays at or above ``pct`` % of the time."""
    total = sum(h for _, h in rows)
    ordered = sorted(rows, key=lambda r: -r[0])
    acc = 0.0
    for n, h in ordered:
        acc += h
        if acc >= total * pct / 100.0 - 1e-12:
            return math.floor(n + 1e-9)
    return 0


def reserved_search(rows: Sequence[tuple[float, float]], reserved: float, burst: float) -> Baseline:
    """Cheapest whole number of reserved instances, by exhaustive search over levels.

    cost(R) = R * hours * reserved + sum(max(0, n - R) * h) * burst, convex in R;
    every R from 0 to the peak is priced (prefix sums over the sorted fleet sizes,
    O(n log n)), so the answer does not rest on the convexity argument. Its
    closed form: the level the fleet stays above ``reserved / burst`` of the time.
    """
    total = sum(h for _, h in rows)
    ordered = sorted(rows)
    values = [n for n, _ in ordered]
    # suffix sums of h and n*h: the part of the fleet above a level
    suf_h = list(itertools.accumulate((h for _, h in reversed(ordered)), initial=0.0))[::-1]
    suf_nh = list(itertools.accumulate((n * h for n, h in reversed(ordered)), initial=0.0))[::-1]
    best, best_cost = 0, math.inf
    for level in range(math.ceil(max(values)) + 1):
        i = bisect.bisect_right(values, level)
        over = suf_nh[i] - level * suf_h[i]
        cost = level * total * reserved + over * burst
        if cost < best_cost - 1e-9:
            best, best_cost = level, cost
    above = sum(h for n, h in rows if n >= best) / total if total else 0.0
    return Baseline(best, 100.0 * above, 100.0 * reserved / burst)


def choose_instance(
    prices: PriceList, spec: str | None, cpu: float, memory: int
) -> tuple[str, InstanceType, int]:
    """("region/type", type, replicas per instance) for ``--instance``.

    ``spec`` is ``REGION/TYPE``, a ``TYPE`` of the first region, or None: the type of
    the first region with the lowest on-demand price per replica that fits.
    """
    if spec is not None:
        region_name, type_name, instance = prices.find(spec)
        label = f"{region_name}/{type_name}"
        return label, instance, per_instance(instance, cpu, memory, label)
    region_name = next(iter(prices.regions))
    fits = []
    for type_name, instance in prices.regions[region_name].instances.items():
        label = f"{region_name}/{type_name}"
        try:
            k = per_instance(instance, cpu, memory, label)
        except CostError:
            continue
        fits.append((instance.on_demand / k, label, instance, k))
    if not fits:
        raise CostError(
            f"no instance type in {region_name} holds a replica (cpu {cpu:g}, memory "
            f"{memory / 2**20:g}Mi): lower --cpu / --memory or add a bigger type"
        )
    _, label, instance, k = min(fits, key=lambda f: f[0])
    return label, instance, k
