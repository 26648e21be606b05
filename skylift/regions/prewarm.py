"""Failover prewarm: surviving regions add replicas for the users they take over.

:func:`prewarm_extra` is pure: given the topology, which regions are down and
how many replicas each region runs, it says how many replicas each surviving
region should add. The region that takes over a failed region's users is the
first healthy region of that region's :func:`failover_chain` (no opt-in
fallback: opted-in users are few, and their fallback's autoscaler covers them).

:class:`Prewarmer` is the I/O side, run inside one region's daemon: it reads
its edge's view of region health now and then and moves the service's
desired count by the difference between what it added before and what it
should add now, so the autoscaler keeps whatever it decided in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import structlog

from skylift.lb.errors import HAProxyError
from skylift.regions.rules import Topology, failover_chain

log = structlog.get_logger("skylift.regions.prewarm")


def takeover(topology: Topology, failed: str, down: Iterable[str]) -> str | None:
    """The region that serves ``failed``'s users now: first healthy one of its chain."""
    out = frozenset(down)
    return next((r for r in failover_chain(topology, failed) if r not in out), None)


def prewarm_extra(
    topology: Topology,
    down: Iterable[str],
    replicas: Mapping[str, int],
    prewarm: float,
) -> dict[str, int]:
    """Extra replicas each surviving region should run while ``down`` regions are out.

    A failed region's ``replicas`` times ``prewarm`` (rounded up) go to the region
    taking over its users; regions that take over nobody get 0. ``prewarm == 0``
    disables it. Regions absent from ``replicas`` count as running none.
    """
    out = frozenset(r for r in down if r in topology)
    extra = {name: 0 for name in topology.names if name not in out}
    if prewarm <= 0:
        return extra
    for failed in sorted(out):
        taker = takeover(topology, failed, out)
        if taker is not None:
            extra[taker] += math.ceil(prewarm * max(0, replicas.get(failed, 0)) - 1e-9)
    return extra


class HealthSource(Protocol):
    """The edge's view of every region (``True`` = in rotation)."""

    async def region_health(self) -> dict[str, bool]: ...


class Scaler(Protocol):
    """The region's own controller, as far as prewarm touches it."""

    def desired(self, service: str) -> int: ...

    def set_desired(self, service: str, replicas: int, reason: str) -> int:
        """Set the count (clamped as a manual scale is); returns what was applied."""
        ...


class Prewarmer:
    """Keeps ``service`` at (its own count + the prewarm share) of this region.

    Level-triggered: each pass compares the extra it should add with the
    extra it added, and moves the desired count by the difference only.
    Regions that start together are not "down" while their checks first pass:
    a region counts once this edge has seen it up, or after ``grace`` seconds.
    A health source that fails leaves everything as it is (no cross-region
    call here: the edge's health comes from its own checks).
    """

    def __init__(
        self,
        region: str,
        service: str,
        topology: Topology,
        replicas: Mapping[str, int],
        prewarm: float,
        health: HealthSource,
        scaler: Scaler,
        *,
        timeout: float = 2.0,
        grace: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.region = region
        self.service = service
        self.topology = topology
        self.replicas = dict(replicas)
        self.prewarm = prewarm
        self.health = health
        self.scaler = scaler
        self.timeout = timeout
        self.grace = grace
        self.clock = clock
        self.since: float | None = None  # first pass: peers starting with us are not "down"
        self.seen_up: set[str] = set()
        self.added = 0  # replicas really added (after clamps)
        self.want = 0  # what the last pass asked for

    async def step(self) -> int:
        """One pass; returns the extra replicas this region now carries for others."""
        try:
            health = await asyncio.wait_for(self.health.region_health(), self.timeout)
        except (HAProxyError, OSError, RuntimeError, TimeoutError, ValueError) as exc:
            log.warning("prewarm_health_unavailable", region=self.region, error=str(exc))
            return self.added
        now = self.clock()
        if self.since is None:
            self.since = now
        self.seen_up.update(r for r, ok in health.items() if ok)
        settled = now - self.since >= self.grace
        # a region counts as down once this edge saw it up, or after the start-up grace
        down = frozenset(
            r
            for r, ok in health.items()
            if not ok and r != self.region and (r in self.seen_up or settled)
        )
        want = prewarm_extra(self.topology, down, self.replicas, self.prewarm).get(self.region, 0)
        if want == self.want:
            return self.added
        current = self.scaler.desired(self.service)
        base = max(0, current - self.added)
        why = (
            f"prewarm: covering {', '.join(sorted(down))} (+{want})"
            if want
            else "prewarm: the regions this one covered are back"
        )
        applied = self.scaler.set_desired(self.service, base + want, why)
        # what really landed (a clamp may eat part of it) is what is taken back later
        self.added = max(0, applied - base) if want else 0
        self.want = want
        log.info("prewarm", region=self.region, down=sorted(down), desired=applied, extra=want)
        return self.added

    async def run(self, stop: asyncio.Event, every: float) -> None:
        while not stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
