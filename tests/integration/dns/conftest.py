"""Fixtures of the geo-DNS tests; the world itself is in ``geodns_world`` (a unique module name:
several test folders have a conftest, so ``from conftest import`` could find another's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from geodns_world import GeoWorld, start_world


@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoWorld]:
    yield from start_world(tmp_path_factory.mktemp("geodns"))
