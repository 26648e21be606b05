"""Shared pytest setup: integration tests are marked so unit tests run alone in seconds."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.parallel",
    "tests.fixtures.busy_core",
    "tests.fixtures.postgres",
    "tests.fixtures.docker",
    "tests.fixtures.swarm",
    "tests.fixtures.swarm_lab",
    "tests.fixtures.redis",
    "tests.fixtures.pg_replica",
    "tests.fixtures.prometheus",
    "tests.regions.fixtures",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration, tests/e2e and tests/faults is an integration test;
    a fault test runs under steady load, so it is a load test too (``-m load --busy-core``)."""
    for item in items:
        path = str(item.path)
        if any(f"/tests/{kind}/" in path for kind in ("integration", "e2e", "faults")):
            item.add_marker(pytest.mark.integration)
        if "/tests/faults/" in path:
            item.add_marker(pytest.mark.load)
