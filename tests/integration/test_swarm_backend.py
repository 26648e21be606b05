"""SwarmBackend on a real single-node Swarm: one service per replica, host-mode ports,
stop, death, health, adoption."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import docker
import docker.errors
import pydantic
import pytest

from skylift.backends.base import Backend, StartFailed
from skylift.backends.swarm import LABEL_PROJECT, LABEL_REPLICA, LABEL_SERVICE, SwarmBackend
from skylift.config.swarm import SwarmBackend as SwarmBackendConfig
from tests.fixtures.docker import answers_as, get
from tests.polling import wait_for

pytestmark = pytest.mark.integration

TEST_LABEL = "skylift-test.run"  # every service a test creates carries it, for cleanup
SERVICE = "web"

MakeBackend = Callable[..., SwarmBackend]


def service_exists(client: docker.DockerClient, service_id: str) -> bool:
    try:
        client.api.inspect_service(service_id)  # type: ignore[no-untyped-call]
    except docker.errors.NotFound:
        return False
    return True


def container_exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return False
    return True


@pytest.fixture
def run_id(swarm_client: docker.DockerClient) -> Iterator[str]:
    """A label value unique to this test; its services are removed afterwards."""
    run = uuid.uuid4().hex[:10]
    try:
        yield run
    finally:
        api: Any = swarm_client.api
        for service in api.services(filters={"label": f"{TEST_LABEL}={run}"}):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_service(service["ID"])
        # the task containers go asynchronously; wait so tests do not leak them.
        # The low-level list is one call: containers.list() inspects each container
        # afterwards and fails when one vanishes in between.
        label = {"label": f"{TEST_LABEL}={run}"}
        deadline = time.monotonic() + 15
        while left := api.containers(all=True, filters=label):
            if time.monotonic() > deadline:
                for container in left:
                    with contextlib.suppress(docker.errors.NotFound):
                        api.remove_container(container["Id"], force=True, v=True)
                break
            time.sleep(0.1)


@pytest.fixture
def make_backend(run_id: str, docker_test_image: str) -> Iterator[MakeBackend]:
    made: list[SwarmBackend] = []

    def make(**overrides: Any) -> SwarmBackend:
        fields: dict[str, Any] = {
            "kind": "swarm",
            "image": docker_test_image,
            "port": 8080,
            "labels": {TEST_LABEL: run_id},
        }
        fields.update(overrides)
        backend = SwarmBackend(
            SERVICE, SwarmBackendConfig.model_validate(fields), project=f"t{run_id}"
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


async def test_two_replicas_are_two_services_serving_on_loopback(
    make_backend: MakeBackend,
    swarm_client: docker.DockerClient,
    run_id: str,
) -> None:
    backend = make_backend(cpus="500m", memory="64Mi")
    assert isinstance(backend, Backend)
    began = time.monotonic()
    first, second = await asyncio.gather(backend.start(SERVICE, "r1"), backend.start(SERVICE, "r2"))
    started_in = time.monotonic() - began
    assert started_in < 15, f"two starts took {started_in:.1f}s"
    assert {first.host, second.host} == {"127.0.0.1"}
    assert first.port != second.port
    api: Any = swarm_client.api
    for replica in (first, second):
        wait_for(partial(answers_as, replica), what=f"{replica.id} to answer")
        assert get(replica, "/healthz") == "ok"
        assert backend.is_alive(replica)
        assert backend.exit_code(replica) is None
        spec = api.inspect_service(replica.handle["service_id"])
        expected = {
            LABEL_PROJECT: f"t{run_id}",
            LABEL_SERVICE: SERVICE,
            LABEL_REPLICA: replica.id,
            TEST_LABEL: run_id,
        }
        assert spec["Spec"]["Name"] == f"t{run_id}-{SERVICE}-{replica.id}"
        assert spec["Spec"]["Labels"] == expected
        assert spec["Spec"]["Mode"] == {"Replicated": {"Replicas": 1}}
        template = spec["Spec"]["TaskTemplate"]
        assert template["RestartPolicy"]["Condition"] == "none"
        assert template["LogDriver"] == {  # bounded logs
            "Name": "json-file",
            "Options": {"max-size": str(10 * 2**20), "max-file": "2"},
        }
        assert template["Resources"]["Limits"] == {
            "NanoCPUs": 500_000_000,
            "MemoryBytes": 64 * 2**20,
        }
        assert spec["Spec"]["EndpointSpec"]["Ports"] == [
            {"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}
        ]
        attrs = swarm_client.api.inspect_container(replica.handle["container_id"])
        assert expected.items() <= attrs["Config"]["Labels"].items()
        assert replica.pid == attrs["State"]["Pid"]
        assert replica.started_at is not None and abs(replica.started_at - time.time()) < 60
        assert backend.log_path(replica).name == f"{replica.handle['container_id']}-json.log"


async def test_stop_is_graceful_and_removes_exactly_that_service(
    make_backend: MakeBackend,
    swarm_client: docker.DockerClient,
) -> None:
    backend = make_backend()
    keep, drop = await asyncio.gather(backend.start(SERVICE, "r1"), backend.start(SERVICE, "r2"))
    wait_for(partial(answers_as, drop), what="r2 to answer")
    began = time.monotonic()
    assert await backend.stop(drop, grace=5) == 0  # the app's TERM handler exits 0
    assert time.monotonic() - began < 4, "a graceful stop must not wait out the grace"
    assert not service_exists(swarm_client, drop.handle["service_id"])
    assert not container_exists(swarm_client, drop.handle["container_id"])
    await backend.refresh()  # checks answer from the lists read once per tick
    assert not backend.is_alive(drop)
    assert backend.exit_code(drop) == 0
    # the other replica was not touched, and Swarm started nothing in its place
    assert answers_as(keep) and backend.is_alive(keep)
    assert [r.id for r in backend.find()] == ["r1"]
    assert await backend.stop(drop, grace=1) == 0  # a second stop is harmless


async def test_stop_kills_after_the_grace(make_backend: MakeBackend) -> None:
    backend = make_backend(env={"IGNORE_TERM": "1"})
    replica = await backend.start(SERVICE, "r1")
    wait_for(lambda: get(replica, "/healthz") == "ok", what="replica to answer")
    began = time.monotonic()
    assert await backend.stop(replica, grace=1) == 137  # 128 + SIGKILL
    assert 0.9 <= time.monotonic() - began < 6


async def test_killed_task_is_dead_and_not_restarted(
    make_backend: MakeBackend,
    swarm_client: docker.DockerClient,
) -> None:
    backend = make_backend()
    replica = await backend.start(SERVICE, "r1")
    wait_for(partial(answers_as, replica), what="r1 to answer")
    swarm_client.api.kill(replica.handle["container_id"])  # SIGKILL, like the OOM killer
    wait_for(lambda: not backend.is_alive(replica), timeout=10, what="is_alive to turn False")
    assert backend.exit_code(replica) == 137
    # restart condition none: Swarm leaves the death to the controller
    api: Any = swarm_client.api
    tasks = api.tasks(filters={"service": replica.handle["service_id"]})
    assert [t["Status"]["State"] for t in tasks] == ["failed"]
    assert backend.find() == []
    assert await backend.stop(replica, grace=1) == 137  # removes the dead service
    assert not service_exists(swarm_client, replica.handle["service_id"])


async def test_adoption_by_a_fresh_instance_finds_the_same_services_only(
    make_backend: MakeBackend,
    swarm_client: docker.DockerClient,
) -> None:
    old = make_backend()
    r1, r2, r3 = await asyncio.gather(*(old.start(SERVICE, i) for i in ("r1", "r2", "r3")))
    await old.stop(r3, grace=1)  # gone: not adoptable
    recreated = await old.start(SERVICE, "r3")  # same replica id, another service
    forged = dataclasses.replace(r2, handle={**r2.handle, "created": "2001-01-01T00:00:00Z"})
    foreign = dataclasses.replace(r1, service="api")

    fresh = make_backend()  # a restarted controller: new instance, nothing in memory
    adopted = fresh.adopt([r1, forged, r3, foreign])
    assert [(r.id, r.handle["service_id"], r.port) for r in adopted] == [
        ("r1", r1.handle["service_id"], r1.port)
    ]
    assert fresh.is_alive(adopted[0]) and answers_as(adopted[0])
    assert sorted(r.handle["service_id"] for r in fresh.find()) == sorted(
        r.handle["service_id"] for r in (r1, r2, recreated)
    )
    # the forged record must not be able to stop r2's service
    assert await fresh.stop(forged, grace=1) is None
    assert service_exists(swarm_client, r2.handle["service_id"]) and answers_as(r2)
    assert await fresh.stop(adopted[0], grace=5) == 0
    assert not service_exists(swarm_client, r1.handle["service_id"])


async def test_unhealthy_task_is_not_alive(
    make_backend: MakeBackend,
    swarm_client: docker.DockerClient,
    docker_health_image: str,
) -> None:
    backend = make_backend(image=docker_health_image)
    replica = await backend.start(SERVICE, "r1")
    assert backend.is_alive(replica)  # health "starting" counts as alive
    wait_for(lambda: backend.health(replica) == "healthy", what="HEALTHCHECK to pass")
    container = swarm_client.containers.get(replica.handle["container_id"])
    assert container.exec_run(["rm", "/www/healthz"]).exit_code == 0
    wait_for(lambda: not backend.is_alive(replica), what="unhealthy to count as not alive")
    # Swarm shuts an unhealthy task down (restart condition none: nothing replaces it)
    wait_for(lambda: backend.find() == [], what="Swarm to shut the unhealthy task down")
    assert backend.health(replica) in ("unhealthy", None)
    await backend.stop(replica, grace=1)
    assert not service_exists(swarm_client, replica.handle["service_id"])


async def test_start_failures_say_why_and_leave_nothing(
    make_backend: MakeBackend,
    swarm_client: docker.DockerClient,
    run_id: str,
) -> None:
    api: Any = swarm_client.api
    with pytest.raises(StartFailed, match="never pulls"):
        await make_backend(image="skylift-test/no-such-image:1").start(SERVICE, "r1")
    crashing = make_backend(command=["sh", "-c", "echo boom; exit 3"])
    try:
        replica = await crashing.start(SERVICE, "r2")
    except StartFailed as exc:  # it exited before start() looked: the message says why
        assert re.search(r"(?s)exit code 3.*boom", str(exc)), exc
    else:  # it exited just after: like a crashing process, it shows up as dead
        wait_for(lambda: not crashing.is_alive(replica), timeout=5, what="the crash")
        assert crashing.exit_code(replica) == 3
        assert await crashing.stop(replica, grace=1) == 3
    assert api.services(filters={"label": f"{TEST_LABEL}={run_id}"}) == []
    with pytest.raises(ValueError, match="invalid replica id"):
        await crashing.start(SERVICE, "r.2")


async def test_a_leftover_service_of_the_same_replica_is_replaced(
    make_backend: MakeBackend,
    swarm_client: docker.DockerClient,
) -> None:
    backend = make_backend()
    first = await backend.start(SERVICE, "r1")
    swarm_client.api.kill(first.handle["container_id"])
    wait_for(lambda: not backend.is_alive(first), what="the kill")
    again = make_backend()  # a controller that lost track of r1 (no stop was called)
    second = await again.start(SERVICE, "r1")
    assert second.handle["service_id"] != first.handle["service_id"]
    wait_for(partial(answers_as, second), what="the new r1 to answer")
    with pytest.raises(StartFailed, match="already exists and runs"):
        await make_backend().start(SERVICE, "r1")  # a live one is never touched


def test_config_rejects_reserved_labels_and_unknown_keys() -> None:
    with pytest.raises(pydantic.ValidationError, match="reserved"):
        SwarmBackendConfig.model_validate(
            {"kind": "swarm", "image": "app:1", "port": 80, "labels": {"skylift.replica": "x"}}
        )
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        SwarmBackendConfig.model_validate({"image": "app:1", "port": 80, "init": True})
    config = SwarmBackendConfig.model_validate(
        {"kind": "swarm", "image": "app:1", "port": 80, "cpus": 0.25, "memory": "1Gi"}
    )
    assert (config.kind, config.cpus, config.memory) == ("swarm", 0.25, 2**30)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.port = 81  # type: ignore[misc]
