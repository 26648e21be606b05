"""Which edge each country's answer points at, as regions fail: the residency rules' choice."""

from __future__ import annotations

import itertools

import pytest

from skylift.dns.answers import Answer, choose_answers, country_answer, served_countries
from skylift.dns.plan import DnsPlan
from skylift.regions.rules import RequestFacts, decide
from tests.geodns_config import REGIONS, topology

ALL = frozenset(REGIONS)


def test_every_country_is_answered_by_its_home_edge_while_all_are_healthy(plan: DnsPlan) -> None:
    answers = choose_answers(plan.topology, ALL)
    assert answers.region_for("DE") == "eu-west"  # the test config's home of German clients
    assert answers.region_for("US") == "us"
    assert answers.region_for("JP") == "asia"
    assert answers.region_for("AT") == "eu-central"
    assert answers.region_for("BR") == "us"  # no region lists BR: the default region
    assert answers.region_for(None) == "us"
    assert {a.why for _, a in answers.countries} == {"home"}


def test_an_outage_moves_the_country_to_the_in_zone_survivor(plan: DnsPlan) -> None:
    answers = choose_answers(plan.topology, ALL - {"eu-west"})
    assert dict(answers.countries)["DE"] == Answer("eu-central", "eu-west", "failover")
    assert answers.region_for("FR") == "eu-central"
    assert answers.region_for("US") == "us"  # nobody else moves
    assert answers.region_for("JP") == "asia"
    assert answers.default == Answer("us", "us", "home")


def test_a_whole_zone_down_keeps_its_countries_in_the_zone(plan: DnsPlan) -> None:
    answers = choose_answers(plan.topology, ALL - {"eu-west", "eu-central"})
    assert dict(answers.countries)["DE"] == Answer("eu-west", "eu-west", "zone_down")
    assert dict(answers.countries)["AT"] == Answer("eu-central", "eu-central", "zone_down")


def test_unknown_clients_go_to_the_nearest_healthy_zone_when_the_defaults_is_down(
    plan: DnsPlan,
) -> None:
    answers = choose_answers(plan.topology, ALL - {"us"})
    assert dict(answers.countries)["US"].why == "zone_down"  # a country never leaves its zone
    assert answers.default == Answer("eu-west", "us", "outside_zone")  # us.nearest: eu-west
    answers = choose_answers(plan.topology, {"asia"})
    assert answers.default == Answer("asia", "us", "outside_zone")
    assert choose_answers(plan.topology, ()).default == Answer("us", "us", "all_down")


def test_countries_are_those_the_regions_list(plan: DnsPlan) -> None:
    assert served_countries(plan.topology) == ("AT", "CA", "DE", "FR", "GB", "JP", "PL", "SG", "US")


TOPOLOGY = topology()


SUBSETS = [set(c) for n in range(len(REGIONS) + 1) for c in itertools.combinations(REGIONS, n)]


@pytest.mark.parametrize("up", SUBSETS, ids=lambda up: "+".join(sorted(up)) or "none")
def test_the_answer_is_the_edges_own_choice_and_never_leaves_the_zone(up: set[str]) -> None:
    """Every one of the 16 health states of the four regions."""
    for country in served_countries(TOPOLOGY):
        answer = country_answer(TOPOLOGY, country, up)
        served = decide(TOPOLOGY, RequestFacts(country=country), up).served
        # the client lands on the edge that serves it itself: no extra hop, same decision
        assert answer.region == (served if served is not None else answer.home)
        assert TOPOLOGY.zone_of(answer.region) == TOPOLOGY.zone_of(answer.home)
    default = choose_answers(TOPOLOGY, up).default
    assert default.home == "us"
    assert (default.region in up) == bool(up)  # unknown clients get a live edge if any
