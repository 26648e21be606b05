"""pytest fixtures: region hosts and their services, started once per test run.

Registered in tests/conftest.py (``pytest_plugins``), so every test can ask for them:

- ``region_hosts_session`` (session): :class:`RegionHosts` for :data:`REGIONS`.
- ``region_hosts`` (function): the same hosts; after the test every cut region is
  restored and every process that appeared in them during the test is stopped
  (``skylift up --detach`` daemons too), except services and delay proxies (outages
  are injected per test, the hosts are built once).
- ``region_services`` (session): PostgreSQL and Redis per region and eu-west's standby
  in eu-central (:class:`RegionServices`), stopped at the end of the run.

Skipped with the reason when network namespaces cannot be used (not root, no ``ip
netns``); with ``SKYLIFT_REQUIRE_NETNS=1`` (CI runs as root) that is a failure instead.

Under pytest-xdist (``--dist loadgroup``) every test using them is put in one group,
so that one worker builds the hosts and services, not every worker. Checked here: with
pytest 9.2 and xdist 3.8 no ``xdist_group`` has any effect (xdist appends the group to
``item._nodeid``, which pytest 9 no longer reads: ``nodeid`` comes from ``item._id``),
so each worker builds its own set for now; the harness is safe for that (a lock, one
/24 and one tag per instance).
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


REGIONS_GROUP = "region-hosts"
REGION_FIXTURES = frozenset({"region_hosts", "region_hosts_session", "region_services"})


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if REGION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(REGIONS_GROUP))


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
