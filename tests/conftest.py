"""Shared pytest setup: integration tests are marked so unit tests run alone in seconds."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.docker",
    "tests.fixtures.swarm",
    "tests.fixtures.redis",
    "tests.fixtures.pg_replica",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration and tests/e2e is an integration test."""
    for item in items:
        path = str(item.path)
        if "/tests/integration/" in path or "/tests/e2e/" in path:
            item.add_marker(pytest.mark.integration)
