"""Which regions the DNS front counts as healthy: fall/rise hysteresis over probes, pure.

The probes themselves (HTTP to each edge's ``/_skylift/region-health``, the
path peer edges check) are I/O in :mod:`skylift.dns.front`; this module only
turns their results into the set the answers are chosen from, so a single
lost probe never moves a country's answer. Regions start healthy: the zone
a fresh front serves is the configured one, and a region it cannot reach
moves after ``fall`` failed rounds like any other outage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RegionHealth:
    """One region as the front sees it; ``streak`` probes disagree with ``up`` since ``since``."""

    up: bool = True
    streak: int = 0
    since: float | None = None


@dataclass(frozen=True, slots=True)
class Flip:
    """A region changed state at ``at``; its first disagreeing probe was at ``first_seen``."""

    region: str
    up: bool
    first_seen: float
    at: float


def step(
    book: Mapping[str, RegionHealth],
    results: Mapping[str, bool],
    *,
    fall: int,
    rise: int,
    now: float,
) -> tuple[dict[str, RegionHealth], list[Flip]]:
    """The book after one round of probes, and the regions that flipped in it.

    A region missing from ``results`` (not probed this round) keeps its state.
    """
    out = dict(book)
    flips: list[Flip] = []
    for region, ok in results.items():
        current = out.get(region, RegionHealth())
        if ok == current.up:
            out[region] = RegionHealth(up=current.up)
            continue
        streak = current.streak + 1
        since = current.since if current.since is not None else now
        if streak >= (rise if ok else fall):
            out[region] = RegionHealth(up=ok)
            flips.append(Flip(region, ok, since, now))
        else:
            out[region] = RegionHealth(up=current.up, streak=streak, since=since)
    return out, flips


def healthy(book: Mapping[str, RegionHealth]) -> frozenset[str]:
    return frozenset(name for name, state in book.items() if state.up)
