"""The edge's latency prober: which region answers this edge fastest, set live in its map.

Only anonymous requests of a topology in ``latency`` mode use it, never a
signup (jurisdiction, not speed). The choice is pure (:func:`best_region`);
the loop measures the round trip of each region's health path with httpx
(every call with a timeout) and tells the edge through ``set map`` only when
the best region changes. An unreachable region is not a candidate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import httpx
import structlog

from skylift.edge.render import REGION_HEALTH_PATH
from skylift.edge.spec import EdgeSpec
from skylift.lb.errors import HAProxyError

log = structlog.get_logger(__name__)


class LatencyTarget(Protocol):
    """What the prober drives: an :class:`skylift.edge.runner.Edge`."""

    async def set_latency_best(self, region: str) -> None: ...


def best_region(
    rtts: Mapping[str, float | None],
    order: Sequence[str],
    current: str | None = None,
    hysteresis: float = 0.0,
) -> str | None:
    """The region with the lowest measured RTT (None when nothing answered).

    Ties go to config ``order``. The ``current`` choice is kept unless another
    region is faster by more than ``hysteresis`` seconds, so two regions of
    near-equal distance do not flap the map at every probe.
    """
    rank = {name: i for i, name in enumerate(order)}
    measured = [(rtt, rank.get(r, len(rank)), r) for r, rtt in rtts.items() if rtt is not None]
    if not measured:
        return None
    best_rtt, _, best = min(measured)
    now = rtts.get(current) if current is not None else None
    if now is not None and current != best and now - best_rtt <= hysteresis:
        return current
    return best


def probe_urls(spec: EdgeSpec) -> dict[str, str]:
    """Region -> URL whose round trip stands for that region's distance from this edge."""
    urls = {spec.region: f"http://{spec.local}{spec.check.path}"}
    for region, addr in spec.peers.items():
        urls[region] = f"http://{addr}{REGION_HEALTH_PATH}"
    return urls


async def measure(client: httpx.AsyncClient, url: str, answer_within: float) -> float | None:
    """Seconds for one healthy answer from ``url``; None on an error or a non-2xx."""
    start = time.perf_counter()
    try:
        response = await client.get(url, timeout=answer_within)
    except httpx.HTTPError:
        return None
    if not response.is_success:
        return None
    return time.perf_counter() - start


class LatencyProber:
    """Measure every region from this edge each ``interval``; keep the edge's choice current."""

    def __init__(
        self,
        edge: LatencyTarget,
        spec: EdgeSpec,
        *,
        interval: float = 10.0,
        answer_within: float = 2.0,
        samples: int = 3,
        hysteresis: float = 0.005,
    ) -> None:
        self.edge = edge
        self.urls = probe_urls(spec)
        self.order = spec.topology.names
        self.interval = interval
        self.answer_within = answer_within
        self.samples = samples
        self.hysteresis = hysteresis
        self.best: str | None = None
        self.last: dict[str, float | None] = {}

    async def probe_once(self, client: httpx.AsyncClient) -> str | None:
        """One round: the fastest of ``samples`` per region, then the map if the best changed."""

        async def fastest(url: str) -> float | None:
            got = [await measure(client, url, self.answer_within) for _ in range(self.samples)]
            ok = [g for g in got if g is not None]
            return min(ok) if ok else None

        regions = list(self.urls)
        rtts = await asyncio.gather(*(fastest(self.urls[r]) for r in regions))
        self.last = dict(zip(regions, rtts, strict=True))
        best = best_region(self.last, self.order, self.best, self.hysteresis)
        if best is not None and best != self.best:
            await self.edge.set_latency_best(best)
            log.info("edge.latency_changed", best=best, rtts=self.last)
            self.best = best
        return best

    async def run(self) -> None:
        """Probe forever (cancel to stop); a failed round is logged and retried next time."""
        # A fresh connection per probe: a reused one would hide the connect round trip.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
            while True:
                try:
                    await self.probe_once(client)
                except (httpx.HTTPError, OSError, ValueError, HAProxyError) as exc:
                    log.warning("edge.latency_probe_failed", error=str(exc))
                await asyncio.sleep(self.interval)
