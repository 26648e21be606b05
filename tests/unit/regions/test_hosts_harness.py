"""The region hosts harness's pure parts: zone round trips, stale-tag parsing, the skip."""

from __future__ import annotations

import pytest

from tests.regions import fixtures, hosts
from tests.regions.hosts import RTT_MS, region_rtt, rtt_ms


def test_round_trips_follow_the_issue() -> None:
    assert rtt_ms("eu", "eu") == 40
    assert rtt_ms("eu", "us") == rtt_ms("us", "eu") == 90
    assert rtt_ms("asia", "eu") == 150
    rtt = region_rtt(fixtures.REGIONS)
    assert rtt("eu-west", "eu-central") == 40
    assert rtt("us", "eu-central") == 90
    assert rtt("eu-west", "asia") == 150
    assert all(value > 0 for value in RTT_MS.values())


@pytest.mark.parametrize(
    ("name", "tag"),
    [("skr123x0-eu-west", "skr123x0"), ("skr123x4r", "skr123x4"), ("skr9x1-sw", "skr9x1")],
)
def test_stale_names_give_their_run_tag(name: str, tag: str) -> None:
    match = hosts._TAG.match(name)
    assert match is not None and match.group(1) == tag


@pytest.mark.parametrize("name", ["eth0", "skrx", "skr12", "docker0", "skr12x0rr"])
def test_foreign_names_are_never_touched(name: str) -> None:
    assert hosts._TAG.match(name) is None


def test_no_namespaces_skips_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixtures, "netns_unavailable_reason", lambda: "not root")
    monkeypatch.delenv("SKYLIFT_REQUIRE_NETNS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not root"):
        fixtures.require_netns()
    monkeypatch.setenv("SKYLIFT_REQUIRE_NETNS", "1")
    with pytest.raises(pytest.fail.Exception, match="SKYLIFT_REQUIRE_NETNS=1 but not root"):
        fixtures.require_netns()
