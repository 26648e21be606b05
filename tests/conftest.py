"""Shared pytest setup: integration tests are marked so unit tests run alone in seconds."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.docker",
    "tests.fixtures.swarm",
    "tests.fixtures.redis",
    "tests.fixtures.pg_replica",
    "tests.fixtures.prometheus",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration, tests/e2e and tests/faults is an integration test."""
    for item in items:
        path = str(item.path)
        if any(f"/tests/{kind}/" in path for kind in ("integration", "e2e", "faults")):
            item.add_marker(pytest.mark.integration)
