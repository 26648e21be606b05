"""Which region's edge each country's DNS answer points at: pure, from the residency rules.

The geo-DNS front is the slow outer loop behind the edges' fast one: it only
chooses the edge a client connects to, and that edge still routes every
request by :mod:`skylift.regions.rules`. So the answer for a country is the
region the edge itself would serve an anonymous client of that country from
(:func:`rules.decide` with that country): its home region while healthy, then
the other regions of the same zone, nearest first. A client therefore lands
on the edge that serves it, with no extra hop.

When every region of a country's zone is down, the answer stays on the home
region's edge (``zone_down``): the DNS front never sees a token, so it cannot
tell the users who opted in to a cross-zone fallback from those who did not,
and sending a whole jurisdiction's clients (their addresses, their requests)
to another zone's edge is exactly the silent move the rules forbid. Those
clients see the outage; their edge's answers come back with their region.

Unknown clients (no country, or a country no region lists) get the default
answer: the default region's chain, and, only when its whole zone is down,
the healthy region nearest to it in any zone (``outside_zone``). They have no
known jurisdiction, and every edge applies the same rules (a token still goes
to its home region; anonymous requests for the down zone get the documented
503 instead of a dead address).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from skylift.regions.rules import RequestFacts, Topology, decide

Why = Literal["home", "failover", "zone_down", "outside_zone", "all_down"]
DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Answer:
    """One DNS answer: the edge of ``region``, for clients whose home region is ``home``."""

    region: str
    home: str
    why: Why


@dataclass(frozen=True, slots=True)
class GeoAnswers:
    """Every country's answer (sorted by ISO code) and the answer for unknown clients."""

    countries: tuple[tuple[str, Answer], ...]
    default: Answer

    def region_for(self, country: str | None) -> str:
        """The region whose edge a client of ``country`` is sent to (unknown: the default)."""
        code = (country or "").upper()
        return next((a.region for c, a in self.countries if c == code), self.default.region)

    def targets(self) -> dict[str, str]:
        """Country (and ``default``) -> region: what PowerDNS serves, without the reasons."""
        out = {c: a.region for c, a in self.countries}
        out[DEFAULT] = self.default.region
        return out

    def as_dict(self) -> dict[str, dict[str, str]]:
        """``{"DE": {"region", "home", "why"}, ..., "default": {...}}`` for JSON output."""
        out = {c: _answer_dict(a) for c, a in self.countries}
        out[DEFAULT] = _answer_dict(self.default)
        return out


def _answer_dict(answer: Answer) -> dict[str, str]:
    return {"region": answer.region, "home": answer.home, "why": answer.why}


def served_countries(topology: Topology) -> tuple[str, ...]:
    """Every country some region lists, sorted (the ones with an answer of their own)."""
    return tuple(sorted({c for r in topology.regions for c in r.countries}))


def country_answer(topology: Topology, country: str, healthy: Iterable[str]) -> Answer:
    """The edge for clients of ``country``: the region the edge serves them from, in-zone."""
    decision = decide(topology, RequestFacts(country=country), healthy)
    if decision.served is None:
        return Answer(decision.home, decision.home, "zone_down")
    return Answer(decision.served, decision.home, "failover" if decision.failed_over else "home")


def default_answer(topology: Topology, healthy: Iterable[str]) -> Answer:
    """The edge for clients of no known country: the default region's chain, then any zone."""
    up = frozenset(healthy)
    decision = decide(topology, RequestFacts(), up)
    if decision.served is not None:
        why: Why = "failover" if decision.failed_over else "home"
        return Answer(decision.served, decision.home, why)
    elsewhere = [r.name for r in topology.regions if r.zone != decision.zone]
    for region in topology.by_distance(decision.home, elsewhere):
        if region in up:
            return Answer(region, decision.home, "outside_zone")
    return Answer(decision.home, decision.home, "all_down")


def choose_answers(topology: Topology, healthy: Iterable[str]) -> GeoAnswers:
    """Every answer of the zone, given the regions healthy now."""
    up = frozenset(healthy)
    countries = tuple((c, country_answer(topology, c, up)) for c in served_countries(topology))
    return GeoAnswers(countries=countries, default=default_answer(topology, up))
