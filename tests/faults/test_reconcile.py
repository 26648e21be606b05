"""Level-triggered reconcile under faults, each under steady low load (real HAProxy, processes).

Each test injects one fault into a running deployment and asserts that skylift
repairs it with no failed request (unless the fault itself cuts the data plane,
as killing HAProxy's master does: then failures are counted and reported). The
figures of each run are printed and appended to ``FIGURES`` for
docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import httpx
import psutil
import pytest

from skylift.loadgen import constant_plan, run_load_in_thread
from skylift.loadgen.runner import LoadHandle
from tests import polling
from tests.e2e.harness import Deployment, wait_for, web_service
from tests.faults.reconcile_support import (
    Figures,
    events_of,
    haproxy_servers,
    ready_ids,
    replica_pids,
    replicas,
    runtime_command,
    socket_path,
)

Deploy = Callable[..., Deployment]

RPS = 20  # steady, well below what two cores serve
SLOW = "/sleep?ms=9000"  # keeps sessions open on every replica, so drains take a while
# 2 slow rps beside RPS=20: with 22 rps over 3 round-robin servers the slow requests
# rotate over every replica (at 4 + 20 = 24 rps every 6th request, always the same one)


def steady(
    d: Deployment, path: str = "/replica", rps: float = RPS, timeout: float = 5.0
) -> LoadHandle:
    """Open-loop load on the web frontend until stopped (duration is only a ceiling)."""
    plan = constant_plan(d.frontend(), path, rps=rps, duration=300, timeout=timeout)
    return run_load_in_thread(plan)


def started(load: LoadHandle) -> None:
    wait_for(lambda: load.progress and load.progress.sent > 20, 20, "load to start")


def test_runtime_socket_failing_mid_drain_is_retried_and_the_replica_stopped(
    deploy: Deploy,
) -> None:
    """The socket disappears as a scale-in begins: the drain step fails (recorded) and is
    retried each tick; once the socket is back the replica is drained, removed, stopped.

    (A failure while the drain *waits* for sessions is covered with the in-memory
    fakes: tests/unit/controller/test_reconcile.py, deterministic where sessions here
    are not.)
    """
    d = deploy({"web": web_service(replicas=3)})
    d.up(timeout=90)
    figures = Figures("runtime socket gone mid-drain")
    sock = socket_path(d)
    hidden = sock.with_name("haproxy.sock.hidden")
    pids = {rid: r["pid"] for rid, r in replicas(d).items()}
    with steady(d) as load:
        started(load)
        sock.rename(hidden)  # the runtime socket disappears ...
        try:
            scale(d, 2)  # ... as the scale-in starts (the API needs no socket)
            failed = wait_for(
                lambda: events_of(d, "replica_retire_failed"), 40, "the failed step recorded"
            )
            victim = failed[0]["data"]["replica"]
            assert psutil.pid_exists(pids[victim])  # not stopped behind HAProxy's back
            assert victim in haproxy_servers(d, sock=hidden)  # nor forgotten in HAProxy
        finally:
            hidden.rename(sock)
        back = time.monotonic()
        polling.wait_for(  # HAProxy's and the OS's own views: fast to poll
            lambda: victim not in haproxy_servers(d) and not psutil.pid_exists(pids[victim]),
            40,
            "the replica removed and stopped on a later tick",
        )
        figures.recovered_s = time.monotonic() - back
        wait_for(lambda: victim not in replicas(d) and len(ready_ids(d)) == 2, 20, "status")
        load.stop()
    figures.add(load.result())
    figures.notes = (
        f"failed step: {failed[0]['data']['step']}; recovered = socket back -> "
        "out of HAProxy and stopped"
    )
    figures.write()
    assert figures.failed == 0, figures.errors_by_kind
    assert set(haproxy_servers(d)) == ready_ids(d)
    stopped = [e for e in events_of(d, "replica_stopped") if e["data"]["replica"] == victim]
    assert len(stopped) == 1 and stopped[0]["data"]["failed_attempts"] >= 1


def scale(d: Deployment, replicas: int) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{d.api_port}/api/v1/services/web/scale",
        json={"replicas": replicas},
        headers={"Authorization": f"Bearer {d.api_token()}"},
        timeout=10,
        trust_env=False,
    )
    response.raise_for_status()


def _sessions(d: Deployment) -> dict[str, int]:
    import asyncio

    from skylift.lb.runtime import RuntimeClient

    rows = asyncio.run(RuntimeClient(socket_path(d), timeout=5).show_stat("be_web"))
    return {row.name: row.scur for row in rows}


def test_haproxy_master_killed_is_restarted_with_its_members(deploy: Deploy) -> None:
    d = deploy({"web": web_service(replicas=3)})
    d.up(timeout=90)
    figures = Figures("HAProxy master SIGKILL")
    before = ready_ids(d)
    master = int((d.state_dir / "haproxy.pid").read_text().split()[0])
    workers = [p.pid for p in psutil.Process(master).children()]
    with steady(d) as load:
        started(load)
        os.kill(master, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(
            lambda: not any(psutil.pid_exists(p) for p in [master, *workers]) or _answers(d),
            10,
            "the old HAProxy to die",
        )
        wait_for(lambda: _answers(d), 15, "traffic back through a new HAProxy")
        figures.recovered_s = time.monotonic() - killed
        wait_for(
            lambda: (
                set(haproxy_servers(d)) == before and set(haproxy_servers(d).values()) == {"up"}
            ),
            15,
            "every ready replica back in HAProxy",
        )
        time.sleep(2)  # steady traffic after the recovery, measured too
        load.stop()
    figures.add(load.result())
    figures.notes = "recovered = master killed -> first 200 through the new HAProxy"
    figures.write()
    assert figures.recovered_s < 3.0, figures.recovered_s
    assert ready_ids(d) == before  # no replica was replaced
    assert events_of(d, "balancer_revived")
    new_master = int((d.state_dir / "haproxy.pid").read_text().split()[0])
    assert new_master != master


def _answers(d: Deployment) -> bool:
    try:
        return httpx.get(d.frontend() + "/replica", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_controller_sigkill_mid_scale_in_leaves_exactly_desired(deploy: Deploy) -> None:
    d = deploy({"web": web_service(replicas=3)})
    d.up(timeout=90)
    figures = Figures("controller SIGKILL mid scale-in")
    with steady(d) as load, steady(d, SLOW, rps=2, timeout=20) as slow:
        started(load)
        wait_for(
            lambda: sum(1 for n in _sessions(d).values() if n > 0) == 3,
            30,
            "slow requests in flight on every replica",
        )
        scale(d, 1)
        polling.wait_for(
            lambda: "drain" in haproxy_servers(d).values(),
            20,
            "the scale-in draining",
            every=0.05,
        )
        controller = d.controller_pid()
        os.kill(controller, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: not psutil.pid_exists(controller), 5, "controller to die")
        d.up(timeout=90)
        restarted = time.monotonic()
        polling.wait_for(
            lambda: len(haproxy_servers(d)) == 1 and len(replica_pids(d)) == 1,
            60,
            "exactly one replica in HAProxy and running after the restart",
        )
        figures.recovered_s = time.monotonic() - killed
        figures.notes = (
            f"controller back (up returned) after {restarted - killed:.1f}s; "
            "recovered = SIGKILL -> the restarted controller finished the scale-in"
        )
        wait_for(lambda: len(replicas(d)) == 1 and len(ready_ids(d)) == 1, 30, "status")
        load.stop()
        slow.stop()
    figures.add(load.result())
    figures.add(slow.result())
    figures.write()
    assert figures.failed == 0, figures.errors_by_kind
    (survivor,) = ready_ids(d)
    wait_for(lambda: len(replica_pids(d)) == 1, 20, "no leaked replica process")
    assert replica_pids(d) == {replicas(d)[survivor]["pid"]}
    assert haproxy_servers(d) == {survivor: "up"}
    assert d.service()["desired"] == 1


@pytest.mark.parametrize("state", ["maint", "drain"])
def test_a_server_put_out_of_rotation_by_hand_is_restored(deploy: Deploy, state: str) -> None:
    d = deploy({"web": web_service(replicas=2)})
    d.up(timeout=90)
    figures = Figures(f"server set {state.upper()} by hand")
    victim = sorted(ready_ids(d))[0]
    with steady(d) as load:
        started(load)
        runtime_command(d, f"set server be_web/{victim} state {state}")
        done = time.monotonic()
        wait_for(lambda: haproxy_servers(d)[victim] == "up", 20, f"{victim} back in rotation")
        figures.recovered_s = time.monotonic() - done
        time.sleep(1)
        load.stop()
    figures.add(load.result())
    figures.write()
    assert figures.failed == 0, figures.errors_by_kind
    restored = [e for e in events_of(d, "replica_restored") if e["data"]["replica"] == victim]
    assert restored and restored[0]["data"]["haproxy_state"] == state
    assert victim in ready_ids(d)  # restored, not replaced


def test_a_stray_server_added_by_hand_is_removed(deploy: Deploy) -> None:
    d = deploy({"web": web_service(replicas=2)})
    d.up(timeout=90)
    figures = Figures("stray server added by hand")
    target = next(iter(replicas(d).values()))["address"]
    with steady(d) as load:
        started(load)
        answer = runtime_command(d, f"add server be_web/intruder {target} weight 100")
        assert "New server registered" in answer, answer
        runtime_command(d, "enable server be_web/intruder")  # it takes traffic now
        added = time.monotonic()
        wait_for(lambda: "intruder" not in haproxy_servers(d), 30, "the stray removed")
        figures.recovered_s = time.monotonic() - added
        time.sleep(1)
        load.stop()
    figures.add(load.result())
    figures.write()
    assert figures.failed == 0, figures.errors_by_kind
    assert [e["data"]["server"] for e in events_of(d, "haproxy_stray_removed")] == ["intruder"]
    assert set(haproxy_servers(d)) == ready_ids(d)


def test_replica_hold_and_release_from_the_cli(deploy: Deploy) -> None:
    d = deploy({"web": web_service(replicas=2)})
    d.up(timeout=90)
    held = sorted(ready_ids(d))[0]
    with steady(d) as load:
        started(load)
        out = d.cli("replica", "hold", "web", held, "-o", "json").stdout
        assert '"held": true' in out
        wait_for(lambda: len(ready_ids(d)) == 2 and held not in ready_ids(d), 30, "a replacement")
        assert haproxy_servers(d)[held] == "maint"
        status = replicas(d)[held]
        assert status["held"] is True and status["state"] == "held"
        # a controller restart keeps the hold
        controller = d.controller_pid()
        os.kill(controller, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(controller), 5, "controller to die")
        d.up(timeout=90)
        assert replicas(d)[held]["held"] is True
        time.sleep(2)  # a few ticks: nothing "restores" an operator's hold
        assert haproxy_servers(d)[held] == "maint"
        d.cli("replica", "release", "web", held)
        wait_for(
            lambda: held in ready_ids(d) and len(replicas(d)) == 2,
            40,
            "released, surplus scaled in",
        )
        load.stop()
    report = load.result()
    assert report.errors == 0, report.errors_by_kind
    assert d.cli("replica", "hold", "web", "web-nope", check=False).returncode == 1
