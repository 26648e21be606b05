"""One active controller, always: an active controller and a standby on one PostgreSQL
store, under steady load. Who acted is read from HAProxy, the replica processes (their
``SKYLIFT_EPOCH``) and the epochs stamped on events, never from the old one's own word."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest

from skylift.store import default_url
from tests.e2e.harness import Deployment, wait_for, web_service
from tests.faults.lock_support import (
    Controller,
    SteadyLoad,
    api_epoch,
    events_since,
    haproxy_servers,
    last_event_id,
    lease_connections,
    lease_row,
    replica_containers,
    replica_processes,
    start_controller,
    terminate_lock_connections,
    wait_ready,
)

Deploy = Callable[..., Deployment]
LEASE = 6.0  # seconds; local trust (and a fast take-over's grace) is a third of it
View = Callable[[Deployment], dict[str, tuple[Any, str | None]]]


@dataclass
class Pair:
    """An active controller with 2 ready replicas, a standby waiting on its lease, and how
    to read the store and the replicas' own state (processes or containers)."""

    d: Deployment
    active: Controller
    standby: Controller
    store_url: str
    replicas: View


@pytest.fixture(params=["process-postgres"])
def pair(request: pytest.FixtureRequest, deploy: Deploy) -> Iterator[Pair]:
    kind = request.param
    web = web_service(replicas=2)
    view: View = replica_processes
    if kind == "process-postgres":
        store_url = request.getfixturevalue("postgres_url")
        d = deploy({"web": web})
        d.settings = {"store": {"url": store_url, "lease": f"{LEASE:.0f}s"}}
    else:  # docker on SQLite: the same host, flock personal locks
        client = request.getfixturevalue("docker_client")
        web["backend"] = {
            "kind": "docker",
            "image": request.getfixturevalue("docker_test_image"),
            "port": 8080,
            "memory": "64Mi",
        }
        d = deploy({"web": web})
        d.settings = {"project": f"e2e-{d.run_tag[:8]}", "store": {"lease": f"{LEASE:.0f}s"}}
        store_url = default_url(d.state_dir)

        def view(d: Deployment) -> dict[str, tuple[Any, str | None]]:
            return replica_containers(client, d)

    d.write()
    started: list[Controller] = []
    try:
        started.append(start_controller(d, "active"))
        wait_ready(d, 2)
        standby = start_controller(d, "standby", "--standby")
        started.append(standby)
        wait_for(lambda: "standby_waiting" in standby.text(), 60, "the standby to wait")
        yield Pair(d, started[0], standby, store_url, view)
    finally:
        for controller in started:
            controller.stop()  # SIGCONT + SIGKILL, whatever state the test left it in
        if kind != "process-postgres":
            d.cli("down", timeout=120, check=False)
            wait_for(lambda: view(d) == {}, 60, "every container removed by down")


def epochs_after_takeover(events: list[dict[str, Any]], epoch: int) -> set[int]:
    """Epochs stamped on the events written from the new epoch's first event on."""
    stamped = [e["data"].get("epoch") for e in events if "epoch" in (e["data"] or {})]
    if epoch not in stamped:
        return set()
    return set(stamped[stamped.index(epoch) :])


def scale_and_check_stamp(d: Deployment, view: View, epoch: int) -> None:
    """One action after the fault: the replica it starts carries the acting epoch."""
    before = view(d)
    d.cli("scale", "web", "3")
    wait_ready(d, 3)
    after = view(d)
    new = set(after) - set(before)
    assert len(new) == 1, after
    assert after[new.pop()][1] == str(epoch)
    wait_for(lambda: haproxy_servers(d) == set(after), 20, "HAProxy to list the 3 replicas")


@pytest.mark.parametrize("pair", ["process-postgres", "docker-sqlite"], indirect=True)
def test_frozen_controller_is_replaced_and_acts_on_nothing_when_it_wakes(pair: Pair) -> None:
    d, active, standby, url = pair.d, pair.active, pair.standby, pair.store_url
    servers, procs = haproxy_servers(d), pair.replicas(d)
    assert len(servers) == 2 and set(procs) == servers
    assert {epoch for _, epoch in procs.values()} == {"1"}
    mark = last_event_id(url)
    with SteadyLoad(d.frontend() + "/healthz") as load:
        wait_for(lambda: load.sent >= 20, 30, "load to run")
        frozen_at = time.monotonic()
        os.kill(active.pid, signal.SIGSTOP)
        try:
            row = wait_for(
                lambda: (r := lease_row(url)) is not None and r["pid"] == standby.pid and r,
                LEASE * 6,
                "the standby to take the lease",
            )
            takeover = time.monotonic() - frozen_at
            assert row["epoch"] == 2
            wait_for(
                lambda: any(
                    e["kind"] == "replicas_adopted" and e["data"].get("epoch") == 2
                    for e in events_since(url, mark)
                ),
                60,
                "the standby to adopt the running replicas",
            )
            adopted_at = time.monotonic() - frozen_at
            assert haproxy_servers(d) == servers and pair.replicas(d) == procs
        finally:
            os.kill(active.pid, signal.SIGCONT)
        assert active.proc.wait(timeout=60) == 1  # woke, found epoch 2, exited non-zero
        assert "controller_lease_lost" in active.text()
        assert haproxy_servers(d) == servers and pair.replicas(d) == procs
        # the old one freed the API port on exit: the new one binds and serves it
        wait_for(lambda: api_epoch(d) == 2, 60, "the API of epoch 2")
        scale_and_check_stamp(d, pair.replicas, 2)
    assert standby.proc.poll() is None
    assert epochs_after_takeover(events_since(url, mark), 2) == {2}
    print(
        f"\nSIGSTOP ({'process' if pair.replicas is replica_processes else 'docker'}): "
        f"lease {LEASE}s, take-over {takeover:.1f}s, adopted {adopted_at:.1f}s "
        f"after the freeze; requests sent {load.sent}, failed {load.failed} {load.errors[:3]}"
    )
    assert load.failed == 0, load.errors[:5]


def test_terminated_lock_connection_leaves_exactly_one_acting_controller(pair: Pair) -> None:
    d, active, standby, url = pair.d, pair.active, pair.standby, pair.store_url
    servers, procs = haproxy_servers(d), pair.replicas(d)
    mark = last_event_id(url)
    with SteadyLoad(d.frontend() + "/healthz") as load:
        wait_for(lambda: load.sent >= 20, 30, "load to run")
        cut_at = time.monotonic()
        assert terminate_lock_connections(url, active.pid) >= 1

        def settled() -> tuple[str, dict[str, Any]] | None:
            row = lease_row(url)
            if row is None:
                return None
            if row["pid"] == standby.pid and active.proc.poll() is not None:
                return "standby", row
            if (
                row["pid"] == active.pid
                and lease_connections(url, active.pid) > 0
                and row["expires_in"] > LEASE / 2
            ):
                return "active", row
            return None

        who, row = wait_for(settled, LEASE * 6, "one controller to hold the lease")
        recovered = time.monotonic() - cut_at
        if who == "active":  # it re-took its lock first: the standby never acted
            assert row["epoch"] == 1
            assert standby.proc.poll() is None and "standby_taking_over" not in standby.text()
        else:  # the standby took over: the old one said so and exited non-zero
            assert row["epoch"] == 2
            assert active.proc.returncode == 1 and "controller_lease_lost" in active.text()
        assert haproxy_servers(d) == servers and pair.replicas(d) == procs
        wait_for(lambda: api_epoch(d) == row["epoch"], 60, "the acting API")
        scale_and_check_stamp(d, pair.replicas, row["epoch"])
    events = events_since(url, mark)
    assert epochs_after_takeover(events, row["epoch"]) == {row["epoch"]}
    print(
        f"\npg_terminate_backend: {who} holds epoch {row['epoch']} {recovered:.1f}s after the "
        f"cut (lease {LEASE}s); requests sent {load.sent}, failed {load.failed}"
    )
    assert load.failed == 0, load.errors[:5]


def test_standby_from_the_cli_takes_over_on_stop_and_down_stops_the_standbys(
    deploy: Deploy,
) -> None:
    """As a user: `up --standby --detach` returns once it waits; the active stopping hands
    over at once (no lease to wait out); `down` stops everything, standbys included."""
    d = deploy({"web": web_service(replicas=2)})
    d.settings = {"store": {"lease": f"{LEASE:.0f}s"}}  # SQLite in the state dir
    d.write()
    d.up()
    standbys: list[int] = []
    try:
        first = json.loads(d.cli("up", "--standby", "--detach", "-o", "json").stdout)
        standbys.append(first["pid"])
        assert first["state"] == "waiting" and first["epoch"] == 1
        assert "epoch 1" in d.cli("status").stdout
        before = {r["id"]: r["pid"] for r in d.service()["replicas"]}
        with SteadyLoad(d.frontend() + "/healthz") as load:
            wait_for(lambda: load.sent >= 20, 30, "load to run")
            stopped_at = time.monotonic()
            os.kill(d.controller_pid(), signal.SIGTERM)  # upgrade/restart of the active one
            wait_for(lambda: api_epoch(d) == 2, 60, "the standby to serve as epoch 2")
            handover = time.monotonic() - stopped_at
            assert d.controller_pid() == first["pid"]
            after = {r["id"]: r["pid"] for r in d.service()["replicas"] if r["state"] == "ready"}
            assert after == before  # adopted, not restarted
        print(
            f"\nSIGTERM hand-over to the standby: {handover:.1f}s (lease {LEASE}s); requests "
            f"sent {load.sent}, failed {load.failed}"
        )
        assert load.failed == 0, load.errors[:5]
        second = json.loads(d.cli("up", "--standby", "--detach", "-o", "json").stdout)
        standbys.append(second["pid"])
        assert second["state"] == "waiting" and second["epoch"] == 2
        d.cli("down")
        wait_for(lambda: not psutil.pid_exists(second["pid"]), 30, "the standby to stop too")
        assert replica_processes(d) == {}
        log = (d.state_dir / "controller.log").read_text(errors="replace")
        assert "standby_stopping" in log  # it said why it did not take over
    finally:
        for pid in standbys:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
