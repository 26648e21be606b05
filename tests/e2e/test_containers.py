"""`kind: docker` and `kind: swarm` through the real CLI, with the same scenarios.

Containers behind HAProxy: traffic spread, scale out and in under load with no
failed request (the replica is drained in HAProxy before its container or
Swarm service is removed), a killed container replaced, a SIGKILLed controller
adopting what runs, `down` removing everything.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import docker
import httpx
import psutil
import pytest

from skylift.loadgen import constant_plan, run_load_in_thread
from tests.e2e.harness import Deployment, wait_for, web_service

Deploy = Callable[..., Deployment]


def labelled(client: docker.DockerClient, project: str) -> list[str]:
    """Running containers of the project (for swarm: the tasks' containers)."""
    # one low-level call: containers.list() inspects each one afterwards and fails
    # when a container vanishes in between
    found = client.api.containers(filters={"label": f"skylift.project={project}"})
    return sorted(c["Id"] for c in found)


def ready_ids(d: Deployment) -> set[str]:
    return {r["id"] for r in d.service()["replicas"] if r["state"] == "ready"}


@pytest.mark.parametrize("kind", ["docker", "swarm"])
def test_container_backend_scenarios(
    kind: str,
    request: pytest.FixtureRequest,
    deploy: Deploy,
    docker_client: docker.DockerClient,
    docker_test_image: str,
) -> None:
    if kind == "swarm":
        request.getfixturevalue("swarm_client")  # joins/initialises the local swarm
    svc = web_service(replicas=2)
    svc["backend"] = {"kind": kind, "image": docker_test_image, "port": 8080, "memory": "64Mi"}
    d = deploy({"web": svc})
    project = f"e2e-{d.run_tag[:8]}"
    d.settings["project"] = project
    d.write()
    try:
        d.up()
        ids = ready_ids(d)
        assert len(ids) == 2 and len(labelled(docker_client, project)) == 2
        with httpx.Client(base_url=d.frontend(), trust_env=False) as client:
            seen = {client.get("/replica").text.strip() for _ in range(20)}
        assert seen == ids  # both containers answer through HAProxy

        plan = constant_plan(d.frontend(), "/replica", rps=40, duration=60)
        with run_load_in_thread(plan) as load:
            wait_for(lambda: load.progress and load.progress.sent > 40, 15, "load to start")
            d.cli("scale", "web", "3")
            wait_for(lambda: len(ready_ids(d)) == 3, 40, "3 ready containers")
            d.cli("scale", "web", "1")
            wait_for(lambda: len(d.service()["replicas"]) == 1, 40, "scale-in to 1")
            load.stop()
        report = load.result()
        assert report.errors == 0, report.errors_by_kind
        assert report.ok == report.sent > 100

        (victim,) = ready_ids(d)
        for container in docker_client.containers.list(
            filters={"label": f"skylift.replica={victim}"}, sparse=True
        ):
            container.kill()
        wait_for(
            lambda: (r := ready_ids(d)) and victim not in r and len(r) == 1,
            40,
            "the killed container to be replaced",
        )
        before = labelled(docker_client, project)
        controller = d.controller_pid()
        os.kill(controller, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(controller), 5, "controller to die")
        d.up()
        assert labelled(docker_client, project) == before  # adopted by label, not recreated
        assert any(e["kind"] == "replicas_adopted" for e in d.events("web"))
    finally:
        d.cli("down", check=False)
    wait_for(lambda: labelled(docker_client, project) == [], 40, "containers removed by down")
