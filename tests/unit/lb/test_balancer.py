"""The balancer's pure parts: config -> spec, stat row -> status; no I/O in the constructor."""

from __future__ import annotations

from pathlib import Path

from skylift.config import HAProxySettings, HealthCheck, ProcessBackend, Service
from skylift.controller.protocols import Balancer, ServerView
from skylift.lb.balancer import HAProxyBalancer, ServerStatus, build_spec
from skylift.lb.render import ServerSpec, render_config
from skylift.lb.stats import ServerState, StatRow


def service(port: int) -> Service:
    return Service(
        frontend=f"127.0.0.1:{port}",
        backend=ProcessBackend(command="app --port {port}"),
        health=HealthCheck(path="/ready", interval="500ms", timeout="250ms", fall=2, rise=3),
        slowstart="10s",
    )


def test_constructor_does_no_io(tmp_path: Path) -> None:
    state = tmp_path / "never-created"
    lb: Balancer = HAProxyBalancer(state, HAProxySettings(binary="no-such-haproxy"))
    assert not state.exists()
    assert isinstance(lb, HAProxyBalancer)


def test_build_spec_maps_config_and_sorts() -> None:
    spec = build_spec(
        Path("/srv/state"),
        HAProxySettings(metrics="127.0.0.1:9999", timeout_server="45s", maxconn=100),
        {"web": service(8080), "api": service(8081)},
        {"web": {"b": ServerSpec("b", "127.0.0.1:2"), "a": ServerSpec("a", "127.0.0.1:1")}},
        Path("/srv/state/log.sock"),
    )
    assert [s.name for s in spec.services] == ["api", "web"]
    web = spec.services[1]
    assert [s.name for s in web.servers] == ["a", "b"]
    assert (web.check.path, web.check.inter, web.check.timeout) == ("/ready", 0.5, 0.25)
    assert (web.check.fall, web.check.rise, web.check.slowstart) == (2, 3, 10.0)
    assert (spec.timeout_server, spec.maxconn, spec.metrics_bind) == (45.0, 100, "127.0.0.1:9999")
    text = render_config(spec)
    assert "server skylift unix@/srv/state/log.sock" in text  # the log ring's reader
    assert "default-server inter 500ms fall 2 rise 3 slowstart 10s" in text


def _row(status: str, state: ServerState, scur: int = 0) -> StatRow:
    return StatRow(
        proxy="be_web",
        name="web-1",
        status=status,
        state=state,
        weight=100,
        scur=scur,
        qcur=0,
        rate=0,
        req_rate=None,
        req_tot=None,
        stot=0,
        check_status="L7OK",
        check_code=200,
        check_duration=1,
        check_desc="Layer7 check passed",
        last_chk="",
        lastchg=3,
        addr="127.0.0.1:1",
        qtime=0,
        ctime=0,
        rtime=0,
        ttime=0,
    )


def test_server_status_is_a_controller_server_view() -> None:
    up: ServerView = ServerStatus.from_row(_row("UP 1/3", ServerState.UP, scur=4))
    assert (up.is_up, up.is_down, up.sessions) == (True, False, 4)
    down = ServerStatus.from_row(_row("DOWN 1/2", ServerState.DOWN))
    assert (down.is_up, down.is_down) == (False, True)
    drain = ServerStatus.from_row(_row("DRAIN", ServerState.DRAIN))
    assert (drain.is_up, drain.is_down) == (False, False)
