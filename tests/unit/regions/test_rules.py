"""The residency rules as pure code: fixed cases, then random outage sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skylift.regions.rules import (
    RegionFacts,
    RequestFacts,
    Topology,
    choose_home,
    decide,
    failover_chain,
    serving_verdict,
)

TOPOLOGY = Topology(
    regions=(
        RegionFacts("us", "us", frozenset({"US", "CA"}), ("eu-west", "eu-central", "asia")),
        RegionFacts("eu-west", "eu", frozenset({"FR", "GB"}), ("eu-central", "us", "asia")),
        RegionFacts(
            "eu-central", "eu", frozenset({"DE"}), ("eu-west", "asia", "us"), standby_of="eu-west"
        ),
        RegionFacts("asia", "asia", frozenset({"JP", "SG"}), ("eu-central", "eu-west", "us")),
    ),
    default="us",
)
ALL = frozenset(TOPOLOGY.names)


def test_order_token_selector_geo_latency_default() -> None:
    latency = Topology(TOPOLOGY.regions, default="us", mode="latency")
    facts = RequestFacts(token_home="eu-west", selector="asia", country="US", latency_best="asia")
    assert choose_home(TOPOLOGY, facts) == ("eu-west", "token")
    assert choose_home(TOPOLOGY, RequestFacts(selector="asia", country="DE")) == (
        "asia",
        "selector",
    )
    assert choose_home(TOPOLOGY, RequestFacts(selector="mars", country="de")) == (
        "eu-central",
        "geo",
    )
    assert choose_home(TOPOLOGY, RequestFacts(latency_best="asia")) == ("us", "default")
    assert choose_home(latency, RequestFacts(latency_best="asia")) == ("asia", "latency")
    assert choose_home(latency, RequestFacts(country="ZZ")) == ("us", "default")


def test_failover_stays_in_zone_unless_opted_in() -> None:
    assert failover_chain(TOPOLOGY, "eu-west") == ("eu-west", "eu-central")
    assert failover_chain(TOPOLOGY, "us") == ("us",)
    assert failover_chain(TOPOLOGY, "eu-west", "us") == ("eu-west", "eu-central", "us")
    user = RequestFacts(token_home="eu-west")
    assert decide(TOPOLOGY, user, ALL - {"eu-west"}).served == "eu-central"
    assert decide(TOPOLOGY, user, ALL - {"eu-west"}).route == "failover"
    down = decide(TOPOLOGY, user, {"us", "asia"})
    assert down.served is None and down.zone == "eu" and "opted in" in down.reason
    opted = RequestFacts(token_home="eu-west", fallback="us")
    assert decide(TOPOLOGY, opted, {"us", "asia"}).served == "us"
    # a selector cannot carry an opt-in: only a verified token can
    assert decide(TOPOLOGY, RequestFacts(selector="eu-west", fallback="us"), {"us"}).served is None


def test_serving_verdict() -> None:
    verdict = serving_verdict
    assert verdict(TOPOLOGY, region="eu-west", home="eu-west", home_failed_over=False) == "serve"
    assert verdict(TOPOLOGY, region="us", home="eu-west", home_failed_over=True) == "misdirected"
    copy = {"region": "us", "home": "eu-west", "opt_in_copy": True}
    assert verdict(TOPOLOGY, **copy, home_failed_over=True) == "read_only"  # a copy takes no writes
    assert verdict(TOPOLOGY, **copy, home_failed_over=False) == "misdirected"
    args = {"region": "eu-central", "home": "eu-west"}
    assert verdict(TOPOLOGY, **args, home_failed_over=False) == "misdirected"
    assert verdict(TOPOLOGY, **args, home_failed_over=True) == "read_only"
    promoted = {"eu-west": "eu-central"}
    assert verdict(TOPOLOGY, **args, home_failed_over=True, promoted=promoted) == "serve"
    # after a promotion the old primary is fenced: it serves nobody's rows of that home
    assert (
        verdict(
            TOPOLOGY, region="eu-west", home="eu-west", home_failed_over=False, promoted=promoted
        )
        == "misdirected"
    )


def test_topology_refuses_a_cross_zone_standby() -> None:
    with pytest.raises(ValueError, match="same zone"):
        Topology((RegionFacts("a", "x"), RegionFacts("b", "y", standby_of="a")), default="a")


users = st.builds(
    RequestFacts,
    token_home=st.none() | st.sampled_from(TOPOLOGY.names),
    fallback=st.none() | st.sampled_from(TOPOLOGY.names),
    selector=st.none() | st.sampled_from([*TOPOLOGY.names, "mars"]),
    country=st.none() | st.sampled_from(["US", "DE", "FR", "JP", "ZZ"]),
    latency_best=st.none() | st.sampled_from(TOPOLOGY.names),
)
outages = st.lists(st.sets(st.sampled_from(TOPOLOGY.names)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(users=st.lists(users, min_size=1, max_size=8), sequence=outages)
def test_random_outages_never_move_a_user_out_of_zone(
    users: list[RequestFacts], sequence: list[set[str]]
) -> None:
    for down in sequence:
        healthy = ALL - down
        for user in users:
            d = decide(TOPOLOGY, user, healthy)
            opted_in = d.route in ("token", "failover") and user.token_home is not None
            if d.served is None:
                assert d.home in down and d.reason  # the documented 503, only when home is down
                continue
            assert d.served in healthy
            if d.served != d.home:
                assert d.route == "failover" and d.home in down
            if TOPOLOGY.zone_of(d.served) != d.zone:
                assert opted_in and d.served == user.fallback
            # the platform agrees: a failed-over read lands where a copy may be served
            verdict = serving_verdict(
                TOPOLOGY,
                region=d.served,
                home=d.home,
                home_failed_over=d.home in down,
                opt_in_copy=d.served == user.fallback and TOPOLOGY.zone_of(d.served) != d.zone,
            )
            if TOPOLOGY.zone_of(d.served) == d.zone and d.served != d.home:
                standby = TOPOLOGY.standby_holder(d.home) == d.served
                assert verdict == ("read_only" if standby else "misdirected")
            elif d.served == d.home:
                assert verdict == "serve"
            else:  # cross-zone: only an opted-in user's copy, and it takes no writes
                assert verdict == "read_only"
