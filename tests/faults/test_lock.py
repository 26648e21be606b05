"""One active controller, always: an active controller and a standby on one PostgreSQL
store, under steady load. Who acted is read from HAProxy, the replica processes (their
``SKYLIFT_EPOCH``) and the epochs stamped on events, never from the old one's own word."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

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
    replica_processes,
    start_controller,
    terminate_lock_connections,
    wait_ready,
)

Deploy = Callable[..., Deployment]
LEASE = 6.0  # seconds; local trust (and a fast take-over's grace) is a third of it
Pair = tuple[Deployment, Controller, Controller]


@pytest.fixture
def pair(postgres_url: str, deploy: Deploy) -> Iterator[Pair]:
    """An active controller with 2 ready replicas and a standby waiting on its lease."""
    d = deploy({"web": web_service(replicas=2)})
    d.settings = {"store": {"url": postgres_url, "lease": f"{LEASE:.0f}s"}}
    d.write()
    started: list[Controller] = []
    try:
        started.append(start_controller(d, "active"))
        wait_ready(d, 2)
        standby = start_controller(d, "standby", "--standby")
        started.append(standby)
        wait_for(lambda: "standby_waiting" in standby.text(), 60, "the standby to wait")
        yield d, started[0], standby
    finally:
        for controller in started:
            controller.stop()  # SIGCONT + SIGKILL, whatever state the test left it in


def epochs_after_takeover(events: list[dict[str, Any]], epoch: int) -> set[int]:
    """Epochs stamped on the events written from the new epoch's first event on."""
    stamped = [e["data"].get("epoch") for e in events if "epoch" in (e["data"] or {})]
    if epoch not in stamped:
        return set()
    return set(stamped[stamped.index(epoch) :])


def scale_and_check_stamp(d: Deployment, url: str, epoch: int) -> None:
    """One action after the fault: the replica it starts carries the acting epoch."""
    before = replica_processes(d)
    d.cli("scale", "web", "3")
    wait_ready(d, 3)
    after = replica_processes(d)
    new = set(after) - set(before)
    assert len(new) == 1, after
    assert after[new.pop()][1] == str(epoch)
    wait_for(lambda: haproxy_servers(d) == set(after), 20, "HAProxy to list the 3 replicas")


def test_frozen_controller_is_replaced_and_acts_on_nothing_when_it_wakes(
    pair: Pair, postgres_url: str
) -> None:
    d, active, standby = pair
    servers, procs = haproxy_servers(d), replica_processes(d)
    assert len(servers) == 2 and set(procs) == servers
    assert {epoch for _, epoch in procs.values()} == {"1"}
    mark = last_event_id(postgres_url)
    with SteadyLoad(d.frontend() + "/") as load:
        wait_for(lambda: load.sent >= 20, 30, "load to run")
        frozen_at = time.monotonic()
        os.kill(active.pid, signal.SIGSTOP)
        try:
            row = wait_for(
                lambda: (
                    (r := lease_row(postgres_url)) is not None and r["pid"] == standby.pid and r
                ),
                LEASE * 6,
                "the standby to take the lease",
            )
            takeover = time.monotonic() - frozen_at
            assert row["epoch"] == 2
            wait_for(
                lambda: any(
                    e["kind"] == "replicas_adopted" and e["data"].get("epoch") == 2
                    for e in events_since(postgres_url, mark)
                ),
                60,
                "the standby to adopt the running replicas",
            )
            adopted_at = time.monotonic() - frozen_at
            assert haproxy_servers(d) == servers and replica_processes(d) == procs
        finally:
            os.kill(active.pid, signal.SIGCONT)
        assert active.proc.wait(timeout=60) == 1  # woke, found epoch 2, exited non-zero
        assert "controller_lease_lost" in active.text()
        assert haproxy_servers(d) == servers and replica_processes(d) == procs
        # the old one freed the API port on exit: the new one binds and serves it
        wait_for(lambda: api_epoch(d) == 2, 60, "the API of epoch 2")
        scale_and_check_stamp(d, postgres_url, 2)
    assert standby.proc.poll() is None
    assert epochs_after_takeover(events_since(postgres_url, mark), 2) == {2}
    print(
        f"\nSIGSTOP: lease {LEASE}s, take-over {takeover:.1f}s, adopted {adopted_at:.1f}s "
        f"after the freeze; requests sent {load.sent}, failed {load.failed} {load.errors[:3]}"
    )
    assert load.failed == 0, load.errors[:5]


def test_terminated_lock_connection_leaves_exactly_one_acting_controller(
    pair: Pair, postgres_url: str
) -> None:
    d, active, standby = pair
    servers, procs = haproxy_servers(d), replica_processes(d)
    mark = last_event_id(postgres_url)
    with SteadyLoad(d.frontend() + "/") as load:
        wait_for(lambda: load.sent >= 20, 30, "load to run")
        cut_at = time.monotonic()
        assert terminate_lock_connections(postgres_url, active.pid) >= 1

        def settled() -> tuple[str, dict[str, Any]] | None:
            row = lease_row(postgres_url)
            if row is None:
                return None
            if row["pid"] == standby.pid and active.proc.poll() is not None:
                return "standby", row
            if (
                row["pid"] == active.pid
                and lease_connections(postgres_url, active.pid) > 0
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
        assert haproxy_servers(d) == servers and replica_processes(d) == procs
        wait_for(lambda: api_epoch(d) == row["epoch"], 60, "the acting API")
        scale_and_check_stamp(d, postgres_url, row["epoch"])
    events = events_since(postgres_url, mark)
    assert epochs_after_takeover(events, row["epoch"]) == {row["epoch"]}
    print(
        f"\npg_terminate_backend: {who} holds epoch {row['epoch']} {recovered:.1f}s after the "
        f"cut (lease {LEASE}s); requests sent {load.sent}, failed {load.failed}"
    )
    assert load.failed == 0, load.errors[:5]
