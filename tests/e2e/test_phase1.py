"""Phase 1 end to end: config errors and API security through the real CLI.

The scenarios that run on every backend (spread, kill, scale, restart, crash
loop) live in test_scenarios.py."""

from __future__ import annotations

import stat
from collections.abc import Callable

import httpx

from tests.e2e.harness import Deployment

Deploy = Callable[..., Deployment]


def ready_pids(d: Deployment, service: str = "web") -> dict[str, int]:
    svc = d.service(service)
    return {r["id"]: r["pid"] for r in svc["replicas"] if r["state"] == "ready"}


def test_invalid_config_exits_3_with_every_error(deploy: Deploy) -> None:
    d = deploy()
    d.config_path.write_text(
        "services:\n  web:\n    frontend: 127.0.0.1:8080\n    colour: red\n"
        "    health: {interval: soon}\n    backend: {kind: process}\n"
    )
    result = d.cli("up", "--detach", check=False)
    assert result.returncode == 3
    for path in (
        "services.web.colour",
        "services.web.health.interval",
        "services.web.backend.command",
    ):
        assert path in result.stderr


def test_api_needs_token_and_admin_socket_is_private(deploy: Deploy) -> None:
    d = deploy()
    d.up()
    base = f"http://127.0.0.1:{d.api_port}"
    assert httpx.get(f"{base}/api/v1/services", trust_env=False).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{base}/metrics", headers=wrong, trust_env=False).status_code == 401
    good = {"Authorization": f"Bearer {d.api_token()}"}
    assert httpx.get(f"{base}/api/v1/services", headers=good, trust_env=False).status_code == 200
    metrics = httpx.get(f"{base}/metrics", headers=good, trust_env=False).text
    assert 'skylift_replicas_ready{service="web"} 3.0' in metrics
    assert httpx.get(f"{base}/livez", trust_env=False).status_code == 200
    assert stat.S_IMODE((d.state_dir / "api-token").stat().st_mode) == 0o600
    sockets = [p for p in d.state_dir.iterdir() if p.is_socket()]
    assert sockets, "HAProxy's admin socket should live in the state dir"
    for sock in sockets:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600, sock
    assert stat.S_IMODE(d.state_dir.stat().st_mode) == 0o700
