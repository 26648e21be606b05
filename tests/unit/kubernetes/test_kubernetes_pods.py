"""How the backend reads a pod: live, ready, its port, its exit code."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube.resources.core_v1 import Pod

from skylift.backends.kubernetes import pod_exit_code, pod_live, pod_port, pod_ready


def pod(status: dict[str, Any] | None = None, **meta: Any) -> Pod:
    return Pod.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-1", "uid": "u1", **meta},
            "spec": {
                "containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 9000}]}]
            },
            "status": status or {"phase": "Running"},
        }
    )


RUNNING_READY = {
    "phase": "Running",
    "podIP": "10.0.0.5",
    "conditions": [{"type": "Ready", "status": "True"}],
}
TERMINATED = {
    "phase": "Running",
    "containerStatuses": [
        {
            "name": "web",
            "image": "x",
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 137}},
        }
    ],
}


@pytest.mark.parametrize(
    ("status", "meta", "live"),
    [
        ({"phase": "Pending"}, {}, True),
        (RUNNING_READY, {}, True),
        (RUNNING_READY, {"deletionTimestamp": "2026-01-01T00:00:00Z"}, False),
        ({"phase": "Failed"}, {}, False),
        ({"phase": "Succeeded"}, {}, False),
        (TERMINATED, {}, False),
    ],
)
def test_live(status: dict[str, Any], meta: dict[str, Any], live: bool) -> None:
    assert pod_live(pod(status, **meta)) is live


def test_ready_port_and_exit_code() -> None:
    assert pod_ready(pod(RUNNING_READY))
    assert not pod_ready(
        pod({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]})
    )
    assert pod_port(pod(), "http", 8080) == 9000  # the named port wins
    assert pod_port(pod(), "web", 8080) == 8080  # none by that name: the config's
    assert pod_exit_code(pod(TERMINATED)) == 137
    assert pod_exit_code(pod(RUNNING_READY)) is None
