"""`kind: docker` through the real CLI: containers behind HAProxy, replaced, adopted, removed."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import docker
import httpx
import psutil

from tests.e2e.harness import Deployment, wait_for, web_service

Deploy = Callable[..., Deployment]


def docker_service(image: str, replicas: int = 2) -> dict[str, object]:
    svc = web_service(replicas=replicas)
    svc["backend"] = {"kind": "docker", "image": image, "port": 8080, "memory": "64Mi"}
    return svc


def containers(client: docker.DockerClient, project: str = "e2e") -> list[str]:
    found = client.containers.list(all=True, filters={"label": f"skylift.project={project}"})
    return sorted(c.id for c in found)


def test_docker_replicas_serve_get_replaced_and_adopted(
    deploy: Deploy, docker_client: docker.DockerClient, docker_test_image: str
) -> None:
    d = deploy({"web": docker_service(docker_test_image)})
    try:
        d.up()
        svc = d.service()
        ids = {r["id"] for r in svc["replicas"]}
        assert svc["ready"] == 2 and len(containers(docker_client)) == 2
        with httpx.Client(base_url=d.frontend(), trust_env=False) as client:
            seen = {client.get("/replica").text.strip() for _ in range(20)}
        assert seen == ids  # both containers answer through HAProxy

        victim = sorted(ids)[0]
        docker_client.containers.list(filters={"label": f"skylift.replica={victim}"})[0].kill()
        wait_for(
            lambda: (
                (s := d.service())["ready"] == 2 and victim not in {r["id"] for r in s["replicas"]}
            ),
            30,
            "the killed container to be replaced",
        )
        before = containers(docker_client)
        controller = d.controller_pid()
        os.kill(controller, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(controller), 5, "controller to die")
        d.up()
        assert containers(docker_client) == before  # adopted by label, nothing recreated
        assert any(e["kind"] == "replicas_adopted" for e in d.events("web"))
    finally:
        d.cli("down", check=False)
    wait_for(lambda: containers(docker_client) == [], 30, "containers removed by down")
