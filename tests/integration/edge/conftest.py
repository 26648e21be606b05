"""Fixtures of the edge tests; the world itself is in ``edge_world`` (a unique module name:
several test folders have a conftest, so ``from conftest import`` could find another's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from edge_world import World, start_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from start_world(tmp_path_factory)
