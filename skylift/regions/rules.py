"""Where a request is served and who may serve a user: pure rules, no I/O.

These functions are the single source of truth for residency. The edge's
HAProxy configuration is rendered from them (:func:`failover_chain` becomes
each home region's backend, primary first then backups), the platform guards
its rows with :func:`serving_verdict`, and the property tests drive both
with random outages. Nothing here reads a clock, a socket or a file.

Order in which the home region of a request is chosen (the reason is kept):
a verified token's ``home_region`` claim, the manual selector, the client's
country, the edge's measured nearest region (``latency`` mode only), the
configured default. The request is then served by the first healthy region of
its failover chain: the home region, the other regions of the same zone
(nearest first), and, only for a user who opted in (token claim ``xr``), their
fallback region. Anything else is a documented 503, never a silent move
across a jurisdiction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Route = Literal["token", "selector", "geo", "latency", "default", "failover"]
Mode = Literal["geo", "latency"]
Verdict = Literal["serve", "read_only", "misdirected"]
ROUTES: tuple[Route, ...] = ("token", "selector", "geo", "latency", "default", "failover")


@dataclass(frozen=True, slots=True)
class RegionFacts:
    """What the rules need to know of one region."""

    name: str
    zone: str
    countries: frozenset[str] = frozenset()
    #: other regions, nearest first (measured or configured); absent ones go last
    nearest: tuple[str, ...] = ()
    #: the region whose database this region holds an in-zone streaming standby of
    standby_of: str | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    """Every region, in config order, and how anonymous requests are placed."""

    regions: tuple[RegionFacts, ...]
    default: str
    mode: Mode = "geo"
    _by_name: dict[str, RegionFacts] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {r.name: r for r in self.regions}
        if len(by_name) != len(self.regions):
            raise ValueError("region names must be unique")
        if self.default not in by_name:
            raise ValueError(f"default region {self.default!r} is not a region")
        for region in self.regions:
            if region.standby_of is not None:
                primary = by_name.get(region.standby_of)
                if primary is None or primary.zone != region.zone or primary is region:
                    raise ValueError(
                        f"{region.name} holds the standby of {region.standby_of!r}: it must be "
                        "another region of the same zone"
                    )
        object.__setattr__(self, "_by_name", by_name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def region(self, name: str) -> RegionFacts:
        return self._by_name[name]

    def zone_of(self, name: str) -> str:
        return self._by_name[name].zone

    def country_region(self, country: str | None) -> str | None:
        """The first region (config order) that serves ``country`` by default."""
        if not country:
            return None
        code = country.upper()
        return next((r.name for r in self.regions if code in r.countries), None)

    def standby_holder(self, primary: str) -> str | None:
        """The region holding ``primary``'s in-zone standby, if any."""
        return next((r.name for r in self.regions if r.standby_of == primary), None)

    def by_distance(self, origin: str, candidates: Iterable[str]) -> list[str]:
        """``candidates`` ordered nearest to ``origin`` first (unknown ones in config order)."""
        rank = {name: i for i, name in enumerate(self._by_name[origin].nearest)}
        order = {name: i for i, name in enumerate(self.names)}
        return sorted(candidates, key=lambda n: (rank.get(n, len(rank)), order[n]))


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the edge knows of one request; every field is already verified.

    ``token_home``/``fallback`` come only from a token whose signature, algorithm
    and expiry were checked; ``selector`` only after the whitelist; ``country``
    from the offline IP map; ``latency_best`` from the edge's own probes.
    """

    token_home: str | None = None
    fallback: str | None = None  # the token's ``xr`` claim: opted in to cross-zone failover
    selector: str | None = None
    country: str | None = None
    latency_best: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one request goes, and why; ``served is None`` means the documented 503."""

    home: str
    zone: str
    route: Route
    served: str | None
    reason: str = ""

    @property
    def failed_over(self) -> bool:
        return self.served is not None and self.served != self.home


def choose_home(topology: Topology, facts: RequestFacts) -> tuple[str, Route]:
    """The region a request belongs to, and which rule decided it."""
    if facts.token_home in topology:
        return str(facts.token_home), "token"
    if facts.selector in topology:
        return str(facts.selector), "selector"
    by_country = topology.country_region(facts.country)
    if by_country is not None:
        return by_country, "geo"
    if topology.mode == "latency" and facts.latency_best in topology:
        return str(facts.latency_best), "latency"
    return topology.default, "default"


def failover_chain(topology: Topology, home: str, fallback: str | None = None) -> tuple[str, ...]:
    """Regions that may serve ``home``'s users, in order of preference.

    Home first, then the other regions of its zone nearest first, then the
    opted-in fallback region (any zone). Never a region of another zone
    otherwise: this is the residency rule the whole edge is built from.
    """
    zone = topology.zone_of(home)
    same_zone = [r.name for r in topology.regions if r.zone == zone and r.name != home]
    chain = [home, *topology.by_distance(home, same_zone)]
    if fallback in topology and fallback not in chain:
        chain.append(str(fallback))
    return tuple(chain)


def decide(topology: Topology, facts: RequestFacts, healthy: Iterable[str]) -> Decision:
    """The region that serves this request given which regions are healthy now."""
    up = frozenset(healthy)
    home, route = choose_home(topology, facts)
    zone = topology.zone_of(home)
    fallback = facts.fallback if route == "token" else None
    for region in failover_chain(topology, home, fallback):
        if region in up:
            return Decision(home, zone, route if region == home else "failover", region)
    reason = f"home region {home} and every other region of zone {zone} are down"
    if fallback in topology:
        reason += f"; the fallback region {fallback} is down too"
    else:
        reason += "; the user has not opted in to cross-zone failover"
    return Decision(home, zone, route, None, reason)


def serving_verdict(
    topology: Topology,
    *,
    region: str,
    home: str,
    home_failed_over: bool,
    promoted: Mapping[str, str] | None = None,
    opt_in_copy: bool = False,
) -> Verdict:
    """May ``region`` serve a user whose home is ``home``? The platform's own guard.

    ``serve`` when it is the user's home (or holds the promoted primary of
    it); ``read_only`` when it holds the in-zone standby and the home is failed
    over (writes wait for ``region promote``); ``read_only`` too for an
    authorised opt-in copy during a failover (a copy is a logical-replication
    subscriber: writes wait for the home); otherwise ``misdirected`` (421), so a
    routing bug can never write a row outside the user's jurisdiction.
    ``promoted`` maps a home region to the region whose standby was promoted.
    """
    if home not in topology or region not in topology:
        return "misdirected"
    owner = (promoted or {}).get(home, home)
    if region == owner:
        return "serve"
    if not home_failed_over:
        return "misdirected"
    if owner == home and topology.standby_holder(home) == region:
        return "read_only"
    if opt_in_copy:
        return "read_only"
    return "misdirected"
