"""pytest fixtures: region hosts and their services, started once per test run.

Use them from a test package's conftest.py::

    from tests.regions.fixtures import region_hosts, region_hosts_session, region_services

- ``region_hosts_session`` (session): :class:`RegionHosts` for :data:`REGIONS`.
- ``region_hosts`` (function): the same hosts; after the test every cut region is
  restored and every process that appeared in them during the test is stopped
  (``skylift up --detach`` daemons too), except services and delay proxies (outages
  are injected per test, the hosts are built once).
- ``region_services`` (session): PostgreSQL and Redis per region and eu-west's standby
  in eu-central (:class:`RegionServices`), stopped at the end of the run.

Skipped with the reason when network namespaces cannot be used (not root, no ``ip
netns``); with ``SKYLIFT_REQUIRE_NETNS=1`` (CI runs as root) that is a failure instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.regions.hosts import NetnsUnavailable, RegionHosts, netns_unavailable_reason
from tests.regions.services import RegionServices, start_region_services

REGIONS: dict[str, str] = {"us": "us", "eu-west": "eu", "eu-central": "eu", "asia": "asia"}
"""Region -> zone, as in examples/regions.yaml."""
STANDBYS: dict[str, str] = {"eu-west": "eu-central"}
"""Region whose primary has a standby -> the region holding it."""


def require_netns() -> None:
    """Skip (or fail under SKYLIFT_REQUIRE_NETNS=1) when namespaces cannot be used."""
    reason = netns_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("SKYLIFT_REQUIRE_NETNS") == "1":
        pytest.fail(f"SKYLIFT_REQUIRE_NETNS=1 but {reason}", pytrace=False)
    pytest.skip(f"region hosts need network namespaces: {reason}")


@pytest.fixture(scope="session")
def region_hosts_session() -> Iterator[RegionHosts]:
    require_netns()
    try:
        with RegionHosts.create(list(REGIONS)) as hosts:
            yield hosts
    except NetnsUnavailable as exc:  # lost between the check and the build
        pytest.skip(str(exc))


@pytest.fixture
def region_hosts(region_hosts_session: RegionHosts) -> Iterator[RegionHosts]:
    hosts = region_hosts_session
    before = hosts.snapshot()
    try:
        yield hosts
    finally:
        hosts.reap(before)  # what the test started, daemonized processes included
        for region in hosts.hosts:  # regions and client hosts
            if hosts.is_cut(region):
                hosts.restore(region)


@pytest.fixture(scope="session")
def region_services(region_hosts_session: RegionHosts) -> RegionServices:
    """Stopped by the hosts' close (each service registered itself with ``on_close``)."""
    return start_region_services(region_hosts_session, standbys=STANDBYS)
