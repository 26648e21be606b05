"""DockerBackend on a real dockerd: ports, labels, limits, stop, death, health, adoption."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import docker
import pydantic
import pytest

from skylift.backends.base import StartFailed
from skylift.backends.container import ContainerEvent
from skylift.backends.docker import (
    LABEL_PROJECT,
    LABEL_REPLICA,
    LABEL_SERVICE,
    DockerBackend,
)
from skylift.config.docker import DockerBackend as DockerBackendConfig
from tests.fixtures.docker import answers_as, get
from tests.polling import wait_for

pytestmark = pytest.mark.integration

TEST_LABEL = "skylift-test.run"  # every container a test starts carries it, for cleanup
SERVICE = "web"

MakeBackend = Callable[..., DockerBackend]


@pytest.fixture
def run_id(docker_client: docker.DockerClient) -> Iterator[str]:
    """A label value unique to this test; its containers are removed afterwards."""
    run = uuid.uuid4().hex[:10]
    try:
        yield run
    finally:
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{TEST_LABEL}={run}"}
        ):
            container.remove(force=True, v=True)


@pytest.fixture
def make_backend(run_id: str, docker_test_image: str) -> Iterator[MakeBackend]:
    made: list[DockerBackend] = []

    def make(**overrides: Any) -> DockerBackend:
        fields: dict[str, Any] = {
            "kind": "docker",
            "image": docker_test_image,
            "port": 8080,
            "labels": {TEST_LABEL: run_id},
        }
        fields.update(overrides)
        backend = DockerBackend(
            SERVICE, DockerBackendConfig.model_validate(fields), project=f"t{run_id}"
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


async def test_replicas_serve_on_loopback_with_labels_and_limits(
    make_backend: MakeBackend,
    docker_client: docker.DockerClient,
    run_id: str,
) -> None:
    backend = make_backend(cpus="500m", memory="64Mi")
    first, second = await asyncio.gather(backend.start(SERVICE, "r1"), backend.start(SERVICE, "r2"))
    assert {first.host, second.host} == {"127.0.0.1"}
    assert first.port != second.port
    for replica in (first, second):
        wait_for(partial(answers_as, replica), what=f"{replica.id} to answer")
        assert get(replica, "/healthz") == "ok"
        assert backend.is_alive(replica)
        assert backend.exit_code(replica) is None
        attrs = docker_client.api.inspect_container(replica.handle["container_id"])
        assert attrs["Config"]["Labels"] == {
            LABEL_PROJECT: f"t{run_id}",
            LABEL_SERVICE: SERVICE,
            LABEL_REPLICA: replica.id,
            TEST_LABEL: run_id,
        }
        assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
        assert attrs["HostConfig"]["Memory"] == 64 * 2**20
        assert attrs["HostConfig"]["LogConfig"] == {  # bounded logs
            "Type": "json-file",
            "Config": {"max-size": str(10 * 2**20), "max-file": "2"},
        }
        assert attrs["Name"] == f"/t{run_id}-{SERVICE}-{replica.id}"
        assert replica.pid == attrs["State"]["Pid"]
        assert replica.started_at is not None and abs(replica.started_at - time.time()) < 60
        assert backend.log_path(replica).name == f"{replica.handle['container_id']}-json.log"


async def test_stop_is_graceful_and_removes_the_container(
    make_backend: MakeBackend,
    docker_client: docker.DockerClient,
) -> None:
    backend = make_backend()
    replica = await backend.start(SERVICE, "r1")
    wait_for(lambda: get(replica, "/healthz") == "ok", what="replica to answer")
    began = time.monotonic()
    assert await backend.stop(replica, grace=5) == 0  # the app's TERM handler exits 0
    assert time.monotonic() - began < 3, "a graceful stop must not wait out the grace"
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(replica.handle["container_id"])
    await backend.refresh()  # checks answer from the list read once per tick
    assert not backend.is_alive(replica)


async def test_stop_kills_after_the_grace(make_backend: MakeBackend) -> None:
    backend = make_backend(env={"IGNORE_TERM": "1"})
    replica = await backend.start(SERVICE, "r1")
    wait_for(lambda: get(replica, "/healthz") == "ok", what="replica to answer")
    began = time.monotonic()
    assert await backend.stop(replica, grace=1) == 137  # 128 + SIGKILL
    assert 0.9 <= time.monotonic() - began < 5


async def test_killed_container_is_dead_with_its_exit_code(
    make_backend: MakeBackend,
    docker_client: docker.DockerClient,
) -> None:
    backend = make_backend()
    replica = await backend.start(SERVICE, "r1")
    docker_client.api.kill(replica.handle["container_id"])  # SIGKILL, like the OOM killer
    wait_for(lambda: not backend.is_alive(replica), timeout=5, what="is_alive to turn False")
    assert backend.exit_code(replica) == 137
    assert await backend.stop(replica, grace=1) == 137  # cleans up the dead container


async def test_events_report_a_death_at_once(
    make_backend: MakeBackend,
    docker_client: docker.DockerClient,
) -> None:
    backend = make_backend()
    replica = await backend.start(SERVICE, "r1")
    events = await backend.events()
    try:
        docker_client.api.kill(replica.handle["container_id"])
        event = await asyncio.wait_for(anext(events), timeout=5)
    finally:
        await events.aclose()
    assert event == ContainerEvent(
        replica_id="r1",
        container_id=replica.handle["container_id"],
        kind="died",
        exit_code=137,
        at=event.at,
    )
    assert abs(event.at - time.time()) < 30


async def test_adoption_finds_the_same_containers_only(
    make_backend: MakeBackend,
    docker_client: docker.DockerClient,
) -> None:
    old = make_backend()
    r1, r2, r3 = [await old.start(SERVICE, i) for i in ("r1", "r2", "r3")]
    await old.stop(r3, grace=1)  # gone: not adoptable
    recreated = await old.start(SERVICE, "r3")  # same replica id, another container
    stale_r3 = r3  # its container was removed; "r3" now names another container
    forged = dataclasses.replace(r2, handle={**r2.handle, "created": "2001-01-01T00:00:00Z"})
    foreign = dataclasses.replace(r1, service="api")

    fresh = make_backend()  # a restarted controller: new instance, nothing in memory
    adopted = fresh.adopt([r1, forged, stale_r3, foreign])
    assert [(r.id, r.handle["container_id"], r.port) for r in adopted] == [
        ("r1", r1.handle["container_id"], r1.port)
    ]
    assert fresh.is_alive(adopted[0])
    assert sorted(r.handle["container_id"] for r in fresh.find()) == sorted(
        r.handle["container_id"] for r in (r1, r2, recreated)
    )
    # the forged record must not be able to stop r2's container
    assert await fresh.stop(forged, grace=1) is None
    assert docker_client.api.inspect_container(r2.handle["container_id"])["State"]["Running"]
    assert await fresh.stop(adopted[0], grace=5) == 0


async def test_unhealthy_container_is_not_alive(
    make_backend: MakeBackend,
    docker_client: docker.DockerClient,
    docker_health_image: str,
) -> None:
    backend = make_backend(image=docker_health_image)
    replica = await backend.start(SERVICE, "r1")
    wait_for(lambda: backend.health(replica) == "healthy", what="HEALTHCHECK to pass")
    assert backend.is_alive(replica)
    container = docker_client.containers.get(replica.handle["container_id"])
    assert container.exec_run(["rm", "/www/healthz"]).exit_code == 0
    wait_for(lambda: not backend.is_alive(replica), what="unhealthy to count as not alive")
    assert backend.health(replica) == "unhealthy"
    assert backend.exit_code(replica) is None  # still running: the controller replaces it
    assert await backend.stop(replica, grace=5) == 0


async def test_start_failures_say_why_and_leave_nothing(
    make_backend: MakeBackend,
    docker_client: docker.DockerClient,
    run_id: str,
) -> None:
    with pytest.raises(StartFailed, match="never pulls"):
        await make_backend(image="skylift-test/no-such-image:1").start(SERVICE, "r1")
    crashing = make_backend(command=["sh", "-c", "echo boom; exit 3"])
    try:
        replica = await crashing.start(SERVICE, "r2")
    except StartFailed as exc:  # it exited before start() looked: the message says why
        assert re.search(r"(?s)code 3.*boom", str(exc)), exc
    else:  # it exited just after: like a crashing process, it shows up as dead
        wait_for(lambda: not crashing.is_alive(replica), timeout=5, what="the crash")
        assert crashing.exit_code(replica) == 3
        assert await crashing.stop(replica, grace=1) == 3
    assert (
        docker_client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={run_id}"}) == []
    )


async def test_a_leftover_container_of_the_same_replica_is_replaced(
    make_backend: MakeBackend,
    docker_client: docker.DockerClient,
) -> None:
    backend = make_backend()
    first = await backend.start(SERVICE, "r1")
    docker_client.api.kill(first.handle["container_id"])
    wait_for(lambda: not backend.is_alive(first), what="the kill")
    again = make_backend()  # a controller that lost track of r1 (no stop was called)
    second = await again.start(SERVICE, "r1")
    assert second.handle["container_id"] != first.handle["container_id"]
    wait_for(lambda: get(second, "/replica") == "r1", what="the new r1 to answer")


def test_config_rejects_reserved_labels_and_unknown_keys() -> None:
    with pytest.raises(pydantic.ValidationError, match="reserved"):
        DockerBackendConfig.model_validate(
            {"image": "app:1", "port": 80, "labels": {"skylift.replica": "x"}}
        )
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        DockerBackendConfig.model_validate({"image": "app:1", "port": 80, "ports": "20000"})
    config = DockerBackendConfig.model_validate(
        {"kind": "docker", "image": "app:1", "port": 80, "cpus": 0.25, "memory": "1Gi"}
    )
    assert (config.cpus, config.memory, config.pull) == (0.25, 2**30, "never")


async def test_stats_source_reads_the_containers_cgroups(make_backend: MakeBackend) -> None:
    from skylift.metrics.docker_stats import DockerStatsSource
    from skylift.metrics.resources import Resources
    from skylift.model import ReplicaState

    backend = make_backend(cpus="500m", memory="64Mi")
    replica = await backend.start(SERVICE, "r1")
    replica.state = ReplicaState.READY
    source = DockerStatsSource(
        lambda s: [replica], {SERVICE: Resources(cpu=0.5, memory=64 * 2**20)}, {SERVICE: backend}
    )
    first = await source.sample(SERVICE, 1.0)
    assert set(first) == {"memory"}  # cpu needs a second reading
    assert 0.0 < first["memory"] < 1.0  # a busybox httpd: some KiB of its 64 MiB
    wait_for(lambda: get(replica, "/replica"), 10, "the container to serve")
    second = await source.sample(SERVICE, 2.0)
    assert 0.0 <= second["cpu"] < 1.0 and 0.0 < second["memory"] < 1.0
    await backend.stop(replica, grace=2)
    assert backend.stats(str(replica.handle["container_id"])) == {}  # gone: empty, no error


async def test_containers_get_env_and_env_file_but_never_the_controllers_env(
    make_backend: MakeBackend,
    docker_client: docker.DockerClient,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SKYLIFT_TEST_SECRET", "hunter2")
    (tmp_path / "app.env").write_text("FROM_FILE=1\nBOTH=file\n")
    backend = make_backend(env={"BOTH": "env"}, env_file="app.env", log_max_bytes="1Mi")
    backend._base_dir = tmp_path
    replica = await backend.start(SERVICE, "r1")
    attrs = docker_client.api.inspect_container(replica.handle["container_id"])
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["FROM_FILE"] == "1" and env["BOTH"] == "env" and env["SKYLIFT_REPLICA"] == "r1"
    assert "SKYLIFT_TEST_SECRET" not in env
    assert attrs["HostConfig"]["LogConfig"]["Config"]["max-size"] == str(2**20)
    await backend.stop(replica, grace=5.0)
