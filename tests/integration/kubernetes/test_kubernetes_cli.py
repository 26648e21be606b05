"""The kubernetes backend driven through the real CLI against the Kubernetes API
*emulator* (tests/k8s_emulator: no real control plane can run here), HAProxy in front.

Each pod of the emulated Deployment is a real demo-app process, so a GET through
HAProxy names the pod that answered (``X-Replica`` = pod name).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import httpx
import psutil

from skylift.loadgen import constant_plan, run_load_in_thread
from tests.e2e.harness import Deployment, wait_for
from tests.integration.kubernetes.emulator import EmulatedCluster
from tests.loadcheck import CLIENT_TIMEOUT, assert_no_failed_request
from tests.ports import free_port

Deploy = Callable[..., Deployment]
POLICY: dict[str, Any] = {
    "min": 1,
    "max": 3,
    "interval": "1s",
    "checks": [{"kind": "target", "metric": "rps", "target": 5.0, "tolerance": "10%"}],
    "behavior": {"up": {"stabilization": "0s"}, "down": {"stabilization": "3s"}},
}


def k8s_service(cluster: EmulatedCluster, replicas: int, **backend: Any) -> dict[str, Any]:
    return {
        "frontend": f"127.0.0.1:{free_port()}",
        "replicas": replicas,
        "backend": {
            "kind": "kubernetes",
            "api_server": cluster.url,
            "token_file": str(cluster.token_file),
            "port": 8080,
            "lease_duration": "4s",
            **backend,
        },
        "health": {"path": "/healthz", "interval": "500ms", "fall": 2, "rise": 1, "timeout": "1s"},
        "drain_timeout": "3s",
        "stop_grace": "5s",
        "slowstart": "1s",
        "start_timeout": "30s",
    }


def served_by(d: Deployment, requests: int = 30) -> set[str]:
    seen = set()
    with httpx.Client(timeout=5, trust_env=False) as client:
        for _ in range(requests):
            answer = client.get(d.frontend() + "/")
            assert answer.status_code == 200, answer.text
            seen.add(answer.headers["X-Replica"])
    return seen


def live_pods(cluster: EmulatedCluster) -> dict[str, str | None]:
    """Pod name -> the skylift replica annotated on it, for pods not being deleted."""
    return {
        p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get("skylift/replica")
        for p in cluster.pods(selector="app=web")
        if not p["metadata"].get("deletionTimestamp")
    }


def ready_ids(d: Deployment) -> set[str]:
    return {r["id"] for r in d.service()["replicas"] if r["state"] == "ready"}


def test_autoscales_the_deployment_from_measured_load(
    deploy: Deploy, cluster: EmulatedCluster
) -> None:
    """The shared engine, fed by HAProxy's request rate, scales the Deployment 1 -> 3 -> 1;
    scale-in removes exactly the drained pods (pod-deletion-cost)."""
    cluster.create_deployment("web", replicas=1)
    d = deploy({"web": {**k8s_service(cluster, replicas=1), "autoscale": POLICY}})
    d.settings = {"interval": "1s", "metrics": {"window": "3s"}}
    d.write()
    d.up()
    wait_for(lambda: len(ready_ids(d)) == 1, 30, "1 ready replica")
    assert cluster.replicas("web") == 1  # the Deployment's own pod was claimed
    plan = constant_plan(d.frontend(), "/", rps=15, duration=25, timeout=CLIENT_TIMEOUT)
    with run_load_in_thread(plan) as load:
        wait_for(lambda: len(ready_ids(d)) == 3, 40, "scale-out to 3 ready replicas")
        assert cluster.replicas("web") == 3
        pods = live_pods(cluster)
        assert set(pods.values()) == ready_ids(d)  # each pod annotated with its replica
        wait_for(lambda: served_by(d, 12) == set(pods), 20, "HAProxy serving the 3 pods")
    assert_no_failed_request(load.result(), at_least=0.9 * 15 * 25)

    wait_for(lambda: len(d.service()["replicas"]) == 1, 60, "scale-in to 1 replica")
    assert cluster.replicas("web") == 1
    (survivor,) = d.service()["replicas"]
    assert survivor["id"] in set(pods.values())
    # the ReplicaSet removed exactly the drained pods, not the survivor's
    wait_for(lambda: list(live_pods(cluster).values()) == [survivor["id"]], 20, "one pod left")
    wait_for(lambda: served_by(d, 10) == set(live_pods(cluster)), 20, "HAProxy on the survivor")
    state = cluster.state()
    assert state["invalid"] == []  # every emulator answer passed kubernetes-validate --strict
    scale_puts = [c for c in state["calls"] if c.startswith("PUT ") and c.endswith("/web/scale")]
    assert len(scale_puts) == 4  # +1, +1, -1, -1: one Scale write per replica


def test_restarted_controller_adopts_the_pods(deploy: Deploy, cluster: EmulatedCluster) -> None:
    cluster.create_deployment("web", replicas=2)
    d = deploy({"web": k8s_service(cluster, replicas=2)})
    d.up()
    wait_for(lambda: len(ready_ids(d)) == 2, 30, "2 ready replicas")
    before = live_pods(cluster)
    scale_puts = sum(1 for c in cluster.state()["calls"] if c.endswith("/web/scale") and "PUT" in c)
    assert scale_puts == 0  # both pods of the Deployment were free: claimed, not scaled

    pid = d.controller_pid()
    os.kill(pid, signal.SIGKILL)  # a crash: nothing released, replicas keep serving
    wait_for(lambda: not psutil.pid_exists(pid), 10, "the controller gone")
    assert served_by(d, 10) <= set(before)
    d.up()
    wait_for(lambda: ready_ids(d) == set(before.values()), 30, "the same replicas ready")
    assert live_pods(cluster) == before  # adopted: no pod replaced, none added
    assert cluster.replicas("web") == 2
    assert not any(
        c.startswith("PUT ") and c.endswith("/web/scale") for c in cluster.state()["calls"]
    )
    wait_for(lambda: served_by(d) == set(before), 20, "HAProxy serving the adopted pods")

    pid = d.controller_pid()
    os.kill(pid, signal.SIGKILL)  # crashed again: `down` runs without a controller
    wait_for(lambda: not psutil.pid_exists(pid), 10, "the controller gone")
    d.cli("down", timeout=90)  # takes the dead holder's Lease over, then scales to 0
    assert cluster.replicas("web") == 0
    wait_for(lambda: live_pods(cluster) == {}, 20, "every pod gone")


def test_two_controllers_one_lease(deploy: Deploy, cluster: EmulatedCluster) -> None:
    """Two controllers (own state and store each) on one Deployment: only the Lease
    holder acts; the other takes over once the holder stops renewing."""
    cluster.create_deployment("web", replicas=1)
    # 6 s: a loaded CI host stalling the holder's ticks must not hand the Lease over early
    first = deploy({"web": k8s_service(cluster, replicas=2, lease_duration="6s")})
    first.up()
    wait_for(lambda: len(ready_ids(first)) == 2, 30, "2 ready replicas on the first")
    second = deploy({"web": k8s_service(cluster, replicas=2, lease_duration="6s")})
    # a standby adopts the pods but its loop waits on the Lease: `up` says "not ready"
    waiting = second.cli("up", "--detach", "--timeout", "2", check=False)
    assert waiting.returncode == 1 and "not ready" in waiting.stderr

    def standby_event() -> bool:
        return any("standby" in e.get("message", "") for e in second.events("web"))

    wait_for(standby_event, 20, "the second controller waiting on the Lease")
    second.cli("scale", "web", "3")
    lease_path = "/apis/coordination.k8s.io/v1/namespaces/default/leases/skylift-web"
    renewed = cluster.get(lease_path)["spec"]["renewTime"]
    # the holder renews (a tick or two) while the second keeps its hands off the count
    wait_for(lambda: cluster.get(lease_path)["spec"]["renewTime"] != renewed, 10, "a renewal")
    assert cluster.get(lease_path)["spec"]["holderIdentity"].endswith(f":{first.controller_pid()}")
    assert cluster.replicas("web") == 2

    os.kill(first.controller_pid(), signal.SIGKILL)  # stops renewing
    wait_for(lambda: cluster.replicas("web") == 3, 30, "the second scaling to 3 after take-over")
    lease = cluster.get(lease_path)["spec"]
    assert lease["holderIdentity"].endswith(f":{second.controller_pid()}")
    assert lease["leaseTransitions"] == 1
    wait_for(lambda: len(ready_ids(second)) == 3, 30, "3 ready replicas on the second")
    wait_for(lambda: served_by(second) == set(live_pods(cluster)), 20, "HAProxy serving 3 pods")
    assert cluster.state()["invalid"] == []
    second.cli("down", timeout=90)  # the leader scales to 0 (the first's teardown finds none)
    assert cluster.replicas("web") == 0
