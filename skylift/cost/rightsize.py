"""Right-sizing and vertical-or-horizontal advice. Pure: samples and prices in, advice out.

Right-sizing: a replica's request should cover what it uses most of the time,
not its worst second: the p95 of CPU (cores) and memory (bytes) per replica
over a window, plus headroom, rounded up to a schedulable step. The instance
type is then the one with the lowest price per replica at that request.

Vertical or horizontal: on a single VPS, more load can be met by a bigger VPS
(the same host, capacity assumed to grow with cores) or by more hosts of the
same size behind the load balancer; both are priced per month from the price
file so the choice is made on money and on failure domains, not on habit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from skylift.cost.model import CostError, per_instance
from skylift.cost.prices import HOURS_PER_MONTH, PriceList

CPU_STEP = 0.05
"""Requests are rounded up to 50 millicores ..."""
MEMORY_STEP = 64 * 2**20
"""... and 64 MiB, so a recommendation does not chase noise."""


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: the value was observed)."""
    if not values:
        raise CostError("no samples to size from: run longer or pick a longer --window")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Fit:
    """One instance type at the recommended request: replicas per instance and price."""

    instance: str
    per_instance: int
    usd_per_replica_month: float


@dataclass(frozen=True, slots=True)
class Rightsize:
    """The recommended request, the p95 it came from, and instance types cheapest first."""

    cpu: float
    memory: int
    cpu_p95: float
    memory_p95: float
    samples: int
    fits: list[Fit]


def rightsize(
    cpu_cores: Sequence[float],
    memory_bytes: Sequence[float],
    prices: PriceList,
    *,
    region: str | None = None,
    pct: float = 95.0,
    headroom: float = 0.15,
) -> Rightsize:
    """Request = p``pct`` per replica x (1 + headroom), rounded up; types by price per replica."""
    cpu_p = percentile(cpu_cores, pct)
    mem_p = percentile(memory_bytes, pct)
    cpu = max(CPU_STEP, math.ceil(cpu_p * (1 + headroom) / CPU_STEP - 1e-9) * CPU_STEP)
    memory = max(MEMORY_STEP, math.ceil(mem_p * (1 + headroom) / MEMORY_STEP) * MEMORY_STEP)
    region_name, _, _ = prices.instance(region, None)
    fits = []
    for name, instance in prices.regions[region_name].instances.items():
        label = f"{region_name}/{name}"
        try:
            k = per_instance(instance, cpu, memory, label)
        except CostError:
            continue
        fits.append(Fit(label, k, instance.on_demand * HOURS_PER_MONTH / k))
    fits.sort(key=lambda f: f.usd_per_replica_month)
    return Rightsize(
        round(cpu, 3), int(memory), cpu_p, mem_p, min(len(cpu_cores), len(memory_bytes)), fits
    )


@dataclass(frozen=True, slots=True)
class Option:
    """One way to serve ``need``: ``hosts`` x ``instance``, its capacity and monthly price."""

    way: str
    instance: str
    hosts: int
    capacity_rps: float
    usd_month: float
    note: str


def vertical_or_horizontal(
    prices: PriceList,
    instance: str,
    capacity_rps: float,
    need_rps: float,
    *,
    replicas: int = 1,
    request: tuple[float, int] | None = None,
) -> list[Option]:
    """Price more replicas on today's host, a bigger host and more hosts; cheapest first.

    ``capacity_rps`` is what today's host serves within the SLO with ``replicas``
    replicas (``skylift capacity`` once it exists, or a load test). Throughput is
    taken as proportional to the cores in use: ``replicas x request`` cores today
    when the right-sized ``request`` (cores, bytes) is given (what the replicas
    were seen to use), else the whole host. So more replicas help up to what fits
    on the host; a bigger host carries its cores' worth (an upper bound: locks,
    memory bandwidth and a single-threaded runtime scale worse); more hosts copy
    today's deployment, need a balancer, and survive the loss of one.
    """
    if capacity_rps <= 0 or need_rps <= 0 or replicas < 1:
        raise CostError("--capacity and --need must be more than 0 requests/s, --replicas >= 1")
    region, _, name = instance.rpartition("/")
    region_name, type_name, now = prices.instance(region or None, name)
    label = f"{region_name}/{type_name}"
    # The load today's replicas carry per core they use: with a measured request that is
    # replicas x request (what right-sizing saw them use), else the whole host.
    used = min(now.cores, replicas * request[0]) if request is not None else now.cores
    per_core = capacity_rps / used
    monthly = now.on_demand * HOURS_PER_MONTH
    options = [
        Option(
            "stay",
            label,
            1,
            capacity_rps,
            monthly,
            "enough" if capacity_rps >= need_rps else "short of the need",
        )
    ]
    if request is not None:
        fit = per_instance(now, request[0], request[1], label)
        per_replica = capacity_rps / replicas
        wanted = min(fit, max(replicas, math.ceil(need_rps / per_replica)))
        if wanted > replicas:
            reach = per_core * min(now.cores, wanted * request[0])
            options.append(
                Option(
                    "replicas",
                    label,
                    1,
                    reach,
                    monthly,
                    f"{wanted} replicas on today's host (room for {fit}): no new money, "
                    "if a replica is bound by its request and not the host"
                    + ("" if reach >= need_rps else "; short of the need"),
                )
            )
    bigger = [
        (n, t)
        for n, t in prices.regions[region_name].instances.items()
        if t.cores > now.cores and per_core * t.cores >= need_rps
    ]
    if bigger:
        n, t = min(bigger, key=lambda nt: nt[1].on_demand)
        options.append(
            Option(
                "vertical",
                f"{region_name}/{n}",
                1,
                per_core * t.cores,
                t.on_demand * HOURS_PER_MONTH,
                "one host: a resize restarts it; one failure domain",
            )
        )
    per_host = capacity_rps
    if request is not None:  # each host filled with as many replicas as fit
        per_host = per_core * min(now.cores, per_instance(now, *request, label) * request[0])
    hosts = max(2, math.ceil(need_rps / per_host))
    options.append(
        Option(
            "horizontal",
            f"{region_name}/{type_name}",
            hosts,
            per_host * hosts,
            monthly * hosts,
            "survives a host; needs the balancer on every host or a front",
        )
    )
    ranked = sorted(options[1:], key=lambda o: (o.capacity_rps < need_rps, o.usd_month))
    return ranked + options[:1]
