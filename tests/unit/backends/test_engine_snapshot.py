"""Docker backend checks never wait on the Engine: one list per tick, single-flight,
bounded by a timeout; ``is_alive`` answers from it at once even while dockerd hangs."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from skylift.backends import container
from skylift.backends.base import BackendError, Refreshable
from skylift.backends.docker import DockerBackend
from skylift.config.docker import DockerBackend as DockerBackendConfig
from skylift.controller.liveness import ReportsWaits
from skylift.model import Replica, ReplicaState

LABELS = {"skylift.project": "p", "skylift.service": "web", "skylift.replica": "web-1"}


class FakeApi:
    """``containers()`` answers from ``listed``, or blocks while ``hung`` is clear."""

    def __init__(self) -> None:
        self.listed: list[dict[str, Any]] = []
        self.released = threading.Event()
        self.released.set()
        self.calls = 0
        self.entered = threading.Event()

    def containers(self, **_: Any) -> list[dict[str, Any]]:
        self.calls += 1
        self.entered.set()
        assert self.released.wait(10), "test never released the Engine"
        return list(self.listed)


class FakeClient:
    def __init__(self, api: FakeApi) -> None:
        self.api = api


def make_backend(api: FakeApi) -> DockerBackend:
    config = DockerBackendConfig(kind="docker", image="img:1", port=8080)
    return DockerBackend("web", config, project="p", client_factory=lambda: FakeClient(api))  # type: ignore[arg-type, return-value]


def replica() -> Replica:
    return Replica(
        id="web-1",
        service="web",
        host="127.0.0.1",
        port=1,
        state=ReplicaState.READY,
        handle={"container_id": "c1", "created": "t"},
    )


def summary(state: str, status: str) -> dict[str, Any]:
    return {"Id": "c1", "State": state, "Status": status, "Labels": LABELS}


async def test_checks_answer_from_the_list_read_once_per_refresh() -> None:
    api = FakeApi()
    backend = make_backend(api)
    assert isinstance(backend, Refreshable) and isinstance(backend, ReportsWaits)
    api.listed = [summary("running", "Up 3 seconds (healthy)")]
    await backend.refresh()
    calls = api.calls
    r = replica()
    assert backend.is_alive(r) and backend.exit_code(r) is None
    assert api.calls == calls  # no Engine call of their own
    api.listed = [summary("running", "Up 9 seconds (unhealthy)")]
    await backend.refresh()
    assert not backend.is_alive(r)
    api.listed = [summary("exited", "Exited (137) 1 second ago")]
    await backend.refresh()
    assert not backend.is_alive(r) and backend.exit_code(r) == 137
    api.listed = []  # removed: gone
    await backend.refresh()
    assert not backend.is_alive(r)
    api.listed = [{**summary("running", "Up"), "Labels": {**LABELS, "skylift.replica": "x"}}]
    await backend.refresh()
    assert not backend.is_alive(r)  # the id names another replica's container


async def test_a_hung_engine_times_out_the_refresh_and_never_piles_up_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(container, "REFRESH_TIMEOUT", 0.2)
    api = FakeApi()
    backend = make_backend(api)
    api.listed = [summary("running", "Up")]
    await backend.refresh()
    api.released.clear()  # dockerd freezes
    api.entered.clear()
    with pytest.raises(BackendError, match="did not list"):
        await backend.refresh()
    assert api.entered.is_set()
    waits = backend.waits()
    assert [w[0] for w in waits] == ["Docker Engine call 'list'"]
    for _ in range(3):  # ticks go on: each waits on the same list, none starts another
        with pytest.raises(BackendError):
            await backend.refresh()
    assert api.calls == 2
    assert backend.is_alive(replica())  # answers at once, from the last list
    api.released.set()  # dockerd thaws
    await backend.refresh()
    assert backend.waits() == []


async def test_a_replica_newer_than_the_list_is_not_declared_dead() -> None:
    api = FakeApi()
    backend = make_backend(api)
    await backend.refresh()  # an empty list, taken before the replica existed
    r = replica()
    backend._became_known(r)
    assert backend.is_alive(r)
