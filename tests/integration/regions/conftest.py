"""Region hosts fixtures for this package (tests/regions/fixtures.py)."""

from tests.regions.fixtures import (  # noqa: F401 (fixtures)
    region_hosts,
    region_hosts_session,
    region_services,
)
