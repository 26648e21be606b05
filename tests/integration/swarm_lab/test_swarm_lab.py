"""scripts/swarm-lab.sh for real: N namespace nodes, one swarm, host-mode ports, clean down.

One test builds its own 3-node lab (so it can check that ``down`` leaves
nothing behind) and drives it as a user would: the script's CLI, each node's
engine on its unix socket, HTTP from the host to each node's address.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import docker.types
import httpx
import psutil
import pytest

from tests.fixtures.swarm_lab import SCRIPT, LabNode, SwarmLab, require_lab_tools
from tests.polling import wait_for
from tests.ports import free_port

pytestmark = pytest.mark.docker  # one engine at a time on this machine: the docker xdist group


@pytest.fixture
def lab() -> Iterator[SwarmLab]:
    require_lab_tools()
    built = SwarmLab(tag=f"l{os.getpid() % 100000}")
    try:
        yield built
    finally:
        built.down()


def _client(node: LabNode) -> docker.DockerClient:
    return docker.DockerClient(base_url=node.socket, timeout=30)


def _answers(address: str, port: int) -> bool:
    try:
        response = httpx.get(f"http://{address}:{port}/healthz", timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.text.strip() == "ok"


def _gone(pid: int) -> bool:
    """Exited (a zombie until init reaps it counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_up_three_nodes_serves_host_mode_ports_and_down_leaves_nothing(lab: SwarmLab) -> None:
    started = time.monotonic()
    nodes = lab.up(3)
    up_seconds = time.monotonic() - started

    # three nodes, each with its own address, node id and engine
    assert [n.name for n in nodes] == ["node1", "node2", "node3"]
    assert len({n.address for n in nodes}) == 3
    assert len({n.node_id for n in nodes}) == 3
    assert [n.role for n in nodes] == ["manager", "worker", "worker"]
    clients = [_client(n) for n in nodes]
    try:
        manager = clients[0]
        swarm_nodes = manager.nodes.list()
        assert {n.id for n in swarm_nodes} == {n.node_id for n in nodes}
        assert all(n.attrs["Status"]["State"] == "ready" for n in swarm_nodes)
        assert {n.attrs["Status"]["Addr"] for n in swarm_nodes} == {n.address for n in nodes}
        labels = {n.id: n.attrs["Spec"]["Labels"].get("lab.node") for n in swarm_nodes}
        assert labels == {n.node_id: n.name for n in nodes}  # for placement constraints
        for node, client in zip(nodes, clients, strict=True):
            info = client.info()
            assert info["Swarm"]["NodeID"] == node.node_id
            assert info["Swarm"]["LocalNodeState"] == "active"
            managers = {m["Addr"] for m in info["Swarm"]["RemoteManagers"]}
            assert managers == {f"{nodes[0].address}:2377"}  # one swarm, node1 its manager
            client.images.get("skylift-test/busybox:lab")  # imported on every node

        # status prints every node; a second `up` refuses plainly
        status = lab.run("status")
        assert status.returncode == 0, status.stderr
        for node in nodes:
            assert node.address in status.stdout and node.node_id in status.stdout
        again = lab.run("up", "3")
        assert again.returncode != 0 and "already up" in again.stderr

        # host-mode published ports: 3 replicas, one per node (the fixed host port forces
        # the spread), each answering on its own node's address
        port = free_port()
        manager.services.create(
            "skylift-test/busybox:lab",
            name="web",
            mode=docker.types.ServiceMode("replicated", replicas=3),
            endpoint_spec=docker.types.EndpointSpec(ports={port: (8080, "tcp", "host")}),
        )

        def running_nodes() -> set[str]:
            tasks = manager.services.get("web").tasks(filters={"desired-state": "running"})
            return {t["NodeID"] for t in tasks if t["Status"]["State"] == "running"}

        wait_for(
            lambda: running_nodes() == {n.node_id for n in nodes}, 60, "a running task on each node"
        )
        for node in nodes:
            wait_for(lambda a=node.address: _answers(a, port), 30, f"HTTP on {node.address}:{port}")
    finally:
        for client in clients:
            client.close()

    # a node lost the hard way (its engine SIGKILLed, its containerd, shims and task left
    # running): down must still remove everything
    engine = int((lab.directory / "n3" / "docker.pid").read_text())
    os.kill(engine, signal.SIGKILL)
    wait_for(lambda: _gone(engine), 10, "node3's engine gone")
    started = time.monotonic()
    result = lab.down()
    down_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert lab.leftovers() == []
    assert lab.down().returncode == 0  # idempotent
    print(f"\nswarm-lab up 3: {up_seconds:.1f}s, down: {down_seconds:.1f}s")


def test_shared_lab_fixture_gives_three_reachable_engines(swarm_lab: SwarmLab) -> None:
    """The session's shared lab (what multi-node tests build on): every engine answers."""
    assert len(swarm_lab.nodes) == 3
    for node in swarm_lab.nodes:
        client = _client(node)
        try:
            assert client.info()["Swarm"]["NodeID"] == node.node_id
        finally:
            client.close()


def test_up_failing_part_way_says_so_and_down_cleans_the_half_built_lab(
    lab: SwarmLab, tmp_path: Path
) -> None:
    """The engines run, then the image import fails: a clear error, and down removes it all."""
    bogus = tmp_path / "not-a-tar"
    bogus.write_text("not a tar\n")
    result = lab.run("up", "2", timeout=180, env={"SKYLIFT_LAB_IMAGE_TAR": str(bogus)})
    assert result.returncode != 0
    assert "docker import" in result.stderr and f"clean with: {SCRIPT} down" in result.stderr
    lab.pids |= lab.live_pids()
    assert len(lab.namespaces()) == 2 and lab.pids  # half-built: namespaces and engines exist
    again = lab.run("up", "2")
    assert again.returncode != 0 and "run" in again.stderr and "down" in again.stderr
    result = lab.down()
    assert result.returncode == 0, result.stderr
    assert lab.leftovers() == []


def _script_as(user_argv: list[str], *args: str, path: str | None = None) -> tuple[int, str]:
    env = {**os.environ, "SKYLIFT_LAB_PREFIX": "sltx", "SKYLIFT_LAB_DIR": "/tmp/sltx-none"}
    if path is not None:
        env["PATH"] = path
    result = subprocess.run(
        [*user_argv, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, result.stderr


def test_clear_errors_before_touching_anything(tmp_path: Path) -> None:
    require_lab_tools()
    code, err = _script_as([], "up", "0")
    assert code != 0 and "N must be 1..20" in err
    code, err = _script_as([], "status")
    assert code != 0 and "not up" in err
    # not root: setpriv drops to nobody before the script runs
    code, err = _script_as(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], "up", "3"
    )
    assert code != 0 and "must run as root" in err
    # no dockerd on PATH: only the other tools the script needs
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("ip", "nsenter", "iptables", "docker", "tar", "id", "env", "bash", "dirname"):
        found = shutil.which(tool)
        assert found is not None
        (tools / tool).symlink_to(found)
    code, err = _script_as([str(tools / "bash")], "up", "3", path=str(tools))
    assert code != 0 and "'dockerd' not found" in err
    assert not Path("/tmp/sltx-none").exists()
