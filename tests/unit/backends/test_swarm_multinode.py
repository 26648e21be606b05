"""Multi-node swarm config and the pure parts of the backend: manager failover, lost nodes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import docker.errors
import pydantic
import pytest
import requests

from skylift.backends import swarm as swarm_mod
from skylift.backends.base import BackendError
from skylift.backends.container import Snapshot
from skylift.backends.swarm import SwarmBackend, _Managers
from skylift.config.swarm import SwarmBackend as SwarmConfig
from skylift.config.swarm import SwarmEngine
from skylift.model import Replica


def test_tcp_engine_needs_tls_and_unix_refuses_it() -> None:
    with pytest.raises(pydantic.ValidationError, match="TCP without `tls`"):
        SwarmEngine(engine="tcp://10.0.0.1:2376")
    with pytest.raises(pydantic.ValidationError, match="unix socket: remove `tls`"):
        SwarmEngine.model_validate(
            {"engine": "unix:///run/docker.sock", "tls": {"ca": "a", "cert": "b", "key": "c"}}
        )
    with pytest.raises(pydantic.ValidationError, match="write unix:///"):
        SwarmEngine(engine="http://10.0.0.1:2375")
    with pytest.raises(pydantic.ValidationError, match="not an IP address"):
        SwarmEngine(engine="unix:///x.sock", address="node-2")
    ok = SwarmEngine.model_validate(
        {"engine": "tcp://10.0.0.1:2376", "tls": {"ca": "ca.pem", "cert": "c.pem", "key": "k.pem"}}
    )
    assert ok.tls is not None and ok.tls.cert == "c.pem"


def test_multinode_fields_need_managers_and_constraints_are_checked() -> None:
    with pytest.raises(pydantic.ValidationError, match="need `managers`"):
        SwarmConfig(image="a", port=80, nodes=[SwarmEngine(engine="unix:///a.sock")])
    with pytest.raises(pydantic.ValidationError, match="KEY==VALUE"):
        SwarmConfig(
            image="a",
            port=80,
            managers=[SwarmEngine(engine="unix:///a.sock")],
            constraints=["node.labels.zone=eu"],
        )
    cfg = SwarmConfig(
        image="a",
        port=80,
        managers=[SwarmEngine(engine="unix:///a.sock")],
        constraints=["node.labels.zone==eu-1", "node.role != manager"],
    )
    assert cfg.multinode and not SwarmConfig(image="a", port=80).multinode


class FakeAPI:
    def __init__(self, name: str, fail: BaseException | None) -> None:
        self.name, self.fail, self.calls = name, fail, 0

    def services(self) -> str:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.name


class FakeClient:
    def __init__(self, api: FakeAPI) -> None:
        self.api = api

    def close(self) -> None:
        pass


def managers_with(monkeypatch: pytest.MonkeyPatch, fails: dict[str, BaseException | None]) -> Any:
    apis = {f"unix:///{n}.sock": FakeAPI(n, f) for n, f in fails.items()}
    monkeypatch.setattr(
        swarm_mod,
        "engine_client",
        lambda engine, base, timeout=0, connect_timeout=None: FakeClient(apis[engine.engine]),
    )
    engines = [SwarmEngine(engine=e) for e in apis]
    return _Managers(engines, Path("/")), apis


def test_a_manager_that_does_not_answer_is_skipped_and_the_next_stays_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    managers, apis = managers_with(
        monkeypatch,
        {"m1": requests.exceptions.ConnectionError("refused"), "m2": None, "m3": None},
    )
    assert managers.call("services") == "m2"
    assert managers.call("services") == "m2"
    assert managers.failovers == 1 and managers.endpoint == "unix:///m2.sock"
    assert apis["unix:///m1.sock"].calls == 1  # not asked again once m2 is current


def test_quorum_lost_503_fails_over_but_not_found_is_an_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    response = requests.Response()
    response.status_code = 503
    managers, _ = managers_with(
        monkeypatch, {"m1": docker.errors.APIError("no leader", response=response), "m2": None}
    )
    assert managers.call("services") == "m2"
    missing = requests.Response()
    missing.status_code = 404
    managers, _ = managers_with(
        monkeypatch, {"m1": docker.errors.NotFound("gone", response=missing), "m2": None}
    )
    with pytest.raises(docker.errors.NotFound):
        managers.call("services")


def test_no_manager_answers_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    managers, _ = managers_with(
        monkeypatch,
        {
            "m1": requests.exceptions.ConnectionError("refused"),
            "m2": requests.exceptions.ReadTimeout("slow"),
        },
    )
    with pytest.raises(BackendError, match=r"no Swarm manager answered.*m1.*m2"):
        managers.call("services")


def _backend() -> SwarmBackend:
    cfg = SwarmConfig(image="a", port=80, managers=[SwarmEngine(engine="unix:///m.sock")])
    return SwarmBackend("web", cfg, project="p")


def _node(state: str, availability: str = "active") -> dict[str, Any]:
    return {"Status": {"State": state}, "Spec": {"Availability": availability}}


@pytest.mark.parametrize(
    ("node", "alive"),
    [
        (_node("ready"), True),
        (_node("unknown"), True),  # a new leader's view until the node re-registers
        (_node("down"), False),
        (_node("disconnected"), False),
        (_node("ready", "drain"), False),
        (None, False),  # removed from the swarm
    ],
)
def test_a_task_on_a_lost_or_drained_node_is_gone(node: dict[str, Any] | None, alive: bool) -> None:
    backend = _backend()
    replica = Replica("web-1", "web", "10.0.0.2", 30000, handle={"service_id": "s", "task_id": "t"})
    objects: dict[str, Any] = {
        "t": {"ID": "t", "ServiceID": "s", "NodeID": "n2", "Status": {"State": "running"}}
    }
    if node is not None:
        objects["node:n2"] = node
    backend._snapshot = Snapshot(time.monotonic() + 1, objects)
    assert backend.is_alive(replica) is alive
    assert backend.lost_node(replica) is not alive
    assert backend.exit_code(replica) is None  # lost, not exited: no code invented


def test_a_task_is_reached_on_its_node_address_and_host_port() -> None:
    cfg = SwarmConfig(
        image="a",
        port=8080,
        managers=[SwarmEngine(engine="unix:///m.sock")],
        nodes=[SwarmEngine(engine="unix:///n2.sock", address="192.0.2.2")],
    )
    backend = SwarmBackend("web", cfg, project="p")
    backend._engine_of["n2"] = 0  # what `docker info` on unix:///n2.sock would say
    backend._engine_known.update({0, 1})
    backend._node_attrs["n1"] = {"Status": {"State": "ready", "Addr": "10.0.0.1"}}
    backend._node_attrs["n3"] = {
        "Status": {"State": "ready", "Addr": "0.0.0.0"},
        "ManagerStatus": {"Addr": "10.0.0.3:2377"},
    }
    assert backend._node_address("n2") == "192.0.2.2"  # configured address wins
    assert backend._node_address("n1") == "10.0.0.1"  # else Swarm's Status.Addr
    assert backend._node_address("n3") == "10.0.0.3"  # a manager reporting 0.0.0.0
    spec = {
        "ID": "s1",
        "CreatedAt": "2026-01-01T00:00:00Z",
        "Spec": {"Name": "p-web-1", "Labels": {"skylift.replica": "web-1"}},
    }
    task = {
        "ID": "t1",
        "NodeID": "n1",
        "Status": {
            "State": "running",
            "Timestamp": "2026-01-01T00:00:01Z",
            "ContainerStatus": {"ContainerID": "c1", "PID": 42},
            "PortStatus": {
                "Ports": [{"TargetPort": 8080, "PublishedPort": 30001, "PublishMode": "host"}]
            },
        },
    }
    replica = backend._remote_replica_from(spec, task, "c1")
    assert replica is not None
    assert (replica.id, replica.address, replica.pid) == ("web-1", "10.0.0.1:30001", 42)
    assert replica.handle["node"] == "n1" and replica.handle["task_id"] == "t1"
    starting = {**task, "Status": {**task["Status"], "State": "starting"}}
    assert backend._remote_replica_from(spec, starting, "c1") is None  # not serving yet


class FakeStream:
    def __init__(self, items: list[dict[str, Any]], release: Any) -> None:
        self.items, self.release, self.closed = items, release, False

    def __iter__(self) -> Any:
        yield from self.items
        self.release.wait(5)  # ends only when told to (as a live stream would)

    def close(self) -> None:
        self.closed = True


def test_merged_events_yield_every_engine_and_end_when_one_ends() -> None:
    import threading

    from skylift.backends.swarm import _MergedEvents

    keep, end = threading.Event(), threading.Event()  # end: node2's engine dies
    node1 = FakeStream([{"id": "a"}, {"id": "b"}], keep)
    node2 = FakeStream([{"id": "c"}], end)
    merged = _MergedEvents([("unix:///n1.sock", node1), ("unix:///n2.sock", node2)])
    seen = []
    with pytest.raises(BackendError, match=r"n2\.sock: closed"):
        for item in merged:
            seen.append(item["id"])
            if len(seen) == 3:
                end.set()  # node2's stream ends after every event was read
    assert sorted(seen) == ["a", "b", "c"]
    merged.close()
    keep.set()
    assert node1.closed and node2.closed


def test_a_create_answered_409_after_a_failover_is_our_own_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first manager committed the create and died before replying; the next one
    says 409: that service is this start's (same labels), never a second one."""
    labels = {"skylift.project": "p", "skylift.service": "web", "skylift.replica": "web-1"}

    class API:
        def inspect_service(self, name: str) -> dict[str, Any]:
            return {"ID": "s1", "Spec": {"Name": name, "Labels": labels}}

    monkeypatch.setattr(SwarmBackend, "_api", property(lambda self: API()))
    backend = _backend()
    assert backend._created_before_failover("p-web-1", "web-1", 0) is None  # no failover
    assert backend._managers is not None
    backend._managers.failovers = 1
    assert backend._created_before_failover("p-web-1", "web-1", 0) == "s1"
    assert backend._created_before_failover("p-web-1", "web-2", 0) is None  # not this replica's


def test_single_node_never_reports_a_lost_node() -> None:
    """One node lists no nodes in its snapshot: a dead task there is the replica's own
    failure (a crash loop must still be seen), never "lost with its node"."""
    backend = SwarmBackend("web", SwarmConfig(image="a", port=80), project="p")
    replica = Replica(
        "web-1", "web", "127.0.0.1", 30000, handle={"service_id": "s", "task_id": "t"}
    )
    objects: dict[str, Any] = {
        "t": {"ID": "t", "ServiceID": "s", "NodeID": "n1", "Status": {"State": "failed"}}
    }
    backend._snapshot = Snapshot(time.monotonic() + 1, objects)
    assert backend.lost_node(replica) is False
