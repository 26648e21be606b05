"""The phase 1 scenarios, one suite for every backend: process, docker and swarm.

Each scenario drives the real CLI, a real HAProxy and real replicas, and
only the service's ``backend`` block differs between the three runs (as it
does for an operator moving a service between them): traffic spread, a
replica killed under load, scale out and in under load, a SIGKILLed
controller adopting what runs, and a crash loop that spares other services.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest

from skylift.loadgen import constant_plan, run_load_in_thread
from tests.e2e.harness import Deployment, DrainWatcher, wait_for, web_service
from tests.loadcheck import CLIENT_TIMEOUT, assert_no_failed_request

Deploy = Callable[..., Deployment]


@dataclass
class Flavour:
    """What differs per backend: the backend block, how to kill a replica, what is left."""

    kind: str
    backend: Callable[[], dict[str, Any]]  # a fresh backend block (own port range)
    crashing: dict[str, Any]  # what makes a backend block's replicas exit at once
    slow_path: str  # a 3 s request, to keep sessions open during a drain
    kill: Callable[[Deployment, str], None]
    leftovers: Callable[[Deployment], list[str]]  # what still runs for the deployment
    replace_within: float  # seconds for a killed replica's replacement to serve


def _kill_process(d: Deployment, replica_id: str) -> None:
    (pid,) = [r["pid"] for r in d.service()["replicas"] if r["id"] == replica_id]
    os.kill(pid, signal.SIGKILL)


def _process_flavour() -> Flavour:
    return Flavour(
        kind="process",
        backend=lambda: web_service()["backend"],
        crashing={"env": {"DEMO_FAIL_AT_START": "1"}},
        slow_path="/sleep?ms=3000",  # a drain outlasts a sample gap on a busy host
        kill=_kill_process,
        leftovers=lambda d: [str(p.pid) for p in d.tagged_processes()],
        replace_within=20,  # a python start-up and 2 health checks, on a busy host
    )


def _container_flavour(kind: str, client: Any, image: str) -> Flavour:
    def containers(d: Deployment) -> list[str]:
        # one low-level call: containers.list() inspects each one afterwards and fails
        # when a container vanishes in between
        found = client.api.containers(filters={"label": f"skylift.project={d.settings['project']}"})
        return sorted(c["Id"] for c in found)

    def kill(d: Deployment, replica_id: str) -> None:
        found = client.api.containers(filters={"label": f"skylift.replica={replica_id}"})
        assert found, f"no container for {replica_id}"
        for container in found:
            client.api.kill(container["Id"])

    backend = {"kind": kind, "image": image, "port": 8080, "memory": "64Mi"}
    return Flavour(
        kind=kind,
        backend=lambda: dict(backend),
        crashing={"command": ["sh", "-c", "exit 3"]},
        slow_path="/cgi-bin/sleep",
        kill=kill,
        leftovers=containers,
        replace_within=45,
    )


def _multinode_flavour(lab: Any) -> Flavour:
    """swarm on the 3-node lab (tests/fixtures/swarm_lab.py): replicas on every node,
    reached on node addresses; containers found and killed on each node's engine."""
    import docker

    def engines() -> list[Any]:
        return [docker.DockerClient(base_url=n.socket, timeout=30) for n in lab.nodes]

    def find(label: str) -> list[tuple[Any, str]]:
        found = []
        for client in engines():
            found += [(client, c["Id"]) for c in client.api.containers(filters={"label": label})]
        return found

    def kill(d: Deployment, replica_id: str) -> None:
        found = find(f"skylift.replica={replica_id}")
        assert found, f"no container for {replica_id}"
        for client, container in found:
            client.api.kill(container)

    def leftovers(d: Deployment) -> list[str]:
        return sorted(c for _, c in find(f"skylift.project={d.settings['project']}"))

    backend = {
        "kind": "swarm",
        "image": "skylift-test/busybox:lab",
        "port": 8080,
        "memory": "64Mi",
        "managers": [{"engine": n.socket} for n in lab.nodes if n.role == "manager"],
        "nodes": [{"engine": n.socket} for n in lab.nodes],
    }

    def block() -> dict[str, Any]:
        return dict(backend)

    return Flavour(
        kind="swarm-multinode",
        backend=block,
        crashing={"command": ["sh", "-c", "exit 3"]},
        slow_path="/cgi-bin/sleep",
        kill=kill,
        leftovers=leftovers,
        replace_within=45,
    )


# a few dozen requests/s at most: these must pass with one core kept busy (--busy-core)
RPS = 15


@pytest.fixture(
    params=[
        "process",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("swarm", marks=pytest.mark.docker),
        # the suite on the 3-node lab (~4 minutes on the Docker worker; issue 15's
        # "the shared scenario suite runs on the multi-node swarm too"):
        # SKYLIFT_SCENARIOS_MULTINODE=0 leaves it out of a quick local run
        pytest.param(
            "swarm-multinode",
            marks=[
                pytest.mark.docker,
                pytest.mark.skipif(
                    os.environ.get("SKYLIFT_SCENARIOS_MULTINODE") == "0",
                    reason="SKYLIFT_SCENARIOS_MULTINODE=0: the suite on the swarm lab is off",
                ),
            ],
        ),
    ]
)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    if request.param == "process":
        return _process_flavour()
    if request.param == "swarm-multinode":
        return _multinode_flavour(request.getfixturevalue("swarm_lab"))
    client = request.getfixturevalue("docker_client")
    image = request.getfixturevalue("docker_test_image")
    if request.param == "swarm":
        request.getfixturevalue("swarm_client")  # joins/initialises the local swarm
    return _container_flavour(request.param, client, image)


@pytest.fixture
def launch(flavour: Flavour, deploy: Deploy) -> Iterator[Callable[..., Deployment]]:
    """A deployment of ``web`` (and extra services) on this flavour's backend.

    Torn down with ``down``; anything still running afterwards fails the test.
    """
    made: list[Deployment] = []

    def make(replicas: int = 3, **extra_services: dict[str, Any]) -> Deployment:
        web = web_service(replicas=replicas)
        web["backend"] = flavour.backend()
        d = deploy({"web": web, **extra_services})
        d.settings["project"] = f"e2e-{d.run_tag[:8]}"  # containers are found by project label
        d.write()
        made.append(d)
        return d

    yield make
    for d in made:
        d.cli("down", timeout=120, check=False)
        wait_for(lambda d=d: flavour.leftovers(d) == [], 60, "everything removed by down")


def ready_ids(d: Deployment, service: str = "web") -> set[str]:
    return {r["id"] for r in d.service(service)["replicas"] if r["state"] == "ready"}


def test_traffic_spreads_over_every_replica(launch: Callable[..., Deployment]) -> None:
    d = launch()
    d.up(timeout=90)
    ids = ready_ids(d)
    assert len(ids) == 3 and d.service()["desired"] == 3
    seen: dict[str, int] = {}
    with httpx.Client(base_url=d.frontend(), trust_env=False) as client:
        for _ in range(150):
            response = client.get("/replica")
            assert response.status_code == 200
            replica = response.text.strip()
            seen[replica] = seen.get(replica, 0) + 1
    assert set(seen) == ids
    assert min(seen.values()) >= 25  # round robin, give or take slowstart


@pytest.mark.load
def test_kill_under_load_loses_nothing_and_is_replaced(
    flavour: Flavour, launch: Callable[..., Deployment]
) -> None:
    d = launch()
    d.up(timeout=90)
    before = ready_ids(d)
    victim = sorted(before)[0]
    plan = constant_plan(d.frontend(), "/replica", rps=RPS, duration=60, timeout=CLIENT_TIMEOUT)
    with run_load_in_thread(plan) as load:
        wait_for(lambda: load.progress and load.progress.sent > 2 * RPS, 15, "load to start")
        killed_at = time.monotonic()
        flavour.kill(d, victim)
        replaced = wait_for(
            lambda: (r := ready_ids(d)) and victim not in r and len(r) == 3 and r,
            flavour.replace_within,
            f"a replacement serving within {flavour.replace_within:g}s",
        )
        took = time.monotonic() - killed_at
        load.stop()
    report = load.result()
    assert_no_failed_request(report, at_least=2.5 * RPS)
    assert len(replaced - before) == 1 and took < flavour.replace_within
    exits = [
        e
        for e in d.events("web")
        if e["kind"] in ("replica_exited", "replica_crashed")
        and (e.get("data") or {}).get("replica") == victim
    ]
    assert len(exits) == 1, [e["kind"] for e in d.events("web")]
    if flavour.kind != "process":  # pushed by the Docker events stream, not found by a poll
        assert exits[0]["data"]["detected_by"] == "backend_events"


@pytest.mark.load
def test_scale_out_and_in_under_load_loses_nothing(
    flavour: Flavour, launch: Callable[..., Deployment]
) -> None:
    d = launch(replicas=2)
    d.up(timeout=90)
    fast = constant_plan(d.frontend(), "/replica", rps=RPS, duration=90, timeout=CLIENT_TIMEOUT)
    slow = constant_plan(
        d.frontend(), flavour.slow_path, rps=15, duration=90, timeout=CLIENT_TIMEOUT
    )
    with run_load_in_thread(fast) as load, run_load_in_thread(slow) as slow_load:
        wait_for(lambda: load.progress and load.progress.sent > RPS, 15, "load to start")
        d.cli("scale", "web", "5")
        wait_for(lambda: len(ready_ids(d)) == 5, 60, "5 ready replicas")
        with DrainWatcher(d.state_dir / "haproxy.sock", "be_web") as watcher:
            wait_for(lambda: watcher.busy(5), 40, "slow requests in flight on all 5 replicas")
            d.cli("scale", "web", "2")
            wait_for(
                lambda: len(d.service()["replicas"]) == 2 and len(ready_ids(d)) == 2,
                60,
                "scale-in to 2 replicas",
            )
        load.stop()
        slow_load.stop()
    report, slow_report = load.result(), slow_load.result()
    assert_no_failed_request(report, at_least=4 * RPS)
    assert_no_failed_request(slow_report, at_least=40)
    assert len(slow_report.replicas) >= 5  # slow traffic reached the scaled-out replicas
    assert len(watcher.drained()) == 3, watcher.drained()
    assert watcher.requests_after_drain() == dict.fromkeys(watcher.drained(), 0)
    stopped = [e for e in d.events("web") if e["kind"] == "replica_stopped"]
    assert len(stopped) == 3
    assert all((e.get("data") or {}).get("reason") == "scale_in" for e in stopped)


@pytest.mark.load
def test_controller_sigkill_restart_adopts_replicas(
    flavour: Flavour, launch: Callable[..., Deployment]
) -> None:
    d = launch()
    d.up(timeout=90)
    before = ready_ids(d)
    running = flavour.leftovers(d)
    with run_load_in_thread(
        constant_plan(d.frontend(), "/replica", rps=RPS, duration=60, timeout=CLIENT_TIMEOUT)
    ) as load:
        wait_for(lambda: load.progress and load.progress.sent > RPS, 15, "load to start")
        controller = d.controller_pid()
        os.kill(controller, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(controller), 5, "controller to die")
        d.up(timeout=90)
        after = ready_ids(d)
        load.stop()
    report = load.result()
    assert after == before, "a restarted controller must adopt what runs"
    if flavour.kind != "process":  # (processes: the controller itself is gone from the list)
        assert flavour.leftovers(d) == running  # the same containers, none recreated
    assert_no_failed_request(report, at_least=RPS)
    starts = [e for e in d.events("web") if e["kind"] == "replica_started"]
    assert len(starts) == 3  # no duplicates were started
    assert any(e["kind"] == "replicas_adopted" for e in d.events("web"))


def test_crash_loop_backs_off_and_spares_other_services(
    flavour: Flavour, launch: Callable[..., Deployment]
) -> None:
    broken = web_service(replicas=2)
    broken["backend"] = {**flavour.backend(), **flavour.crashing}
    d = launch(broken=broken)
    result = d.cli("up", "--detach", "--timeout", "20", check=False, timeout=90)
    assert result.returncode != 0
    assert "broken" in result.stderr
    state = wait_for(
        lambda: (s := d.service("broken"))["state"] == "crash-loop" and s, 60, "crash-loop state"
    )
    assert state["crash"]["failures"] >= 3 and state["crash"]["last_reason"]
    assert state["ready"] == 0
    web = wait_for(lambda: (s := d.service("web"))["ready"] == 3 and s, 60, "web still serving")
    assert web["state"] == "ok"
    assert httpx.get(d.frontend("web") + "/replica", trust_env=False).status_code == 200
    failures = [
        e for e in d.events("broken") if e["kind"] in ("replica_crashed", "replica_start_failed")
    ]
    assert len(failures) >= 3
    backoffs = [e["data"]["backoff_seconds"] for e in failures]
    # back-off: starts get further apart (1 s, 2 s, 4 s ...), never a tight loop
    assert backoffs == sorted(backoffs) and backoffs[0] == 1 and backoffs[-1] >= 4, backoffs
    assert "crash-loop" in d.cli("status").stdout
