from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Deployment, deployment_factory
from tests.integration.kubernetes.emulator import EmulatedCluster, emulated_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmulatedCluster]:
    with emulated_cluster(tmp_path) as running:
        yield running


@pytest.fixture
def deploy(tmp_path: Path, cluster: EmulatedCluster) -> Iterator[Callable[..., Deployment]]:
    """Deployments are torn down (`skylift down` scales to 0) before the emulator stops."""
    yield from deployment_factory(tmp_path)
