"""The connection budget caps every count: a schedule's max, a manual scale, a restart."""

from __future__ import annotations

from pathlib import Path

import httpx

from skylift.api.app import create_app
from skylift.api.token import load_or_create_token
from skylift.backends.memory import MemoryBackend
from skylift.config import load_config
from skylift.controller.autoscaler import Autoscaler
from skylift.controller.budget import STAGE, ceiling_of
from skylift.controller.core import Controller
from skylift.engine import Observations, ScalingPolicy
from skylift.model import Replica
from skylift.store import Store
from tests.unit.controller.fakes import FakeBalancer

# (30 - 5) // 10 = 2 replicas fit; the policy max of 2 fits too, so the config is valid
CONFIG = """
services:
  web:
    frontend: 127.0.0.1:9080
    replicas: 2
    backend: {command: "app --port {port}"}
    database: {max_connections: 30, pool_size: 10, reserve: 5}
"""


async def healthy(_: Replica) -> bool:
    return True


def test_a_schedule_max_above_the_budget_is_clamped_visibly(tmp_path: Path) -> None:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    ceiling = ceiling_of(load_config(path, environ={}).config.services["web"])
    assert ceiling is not None and ceiling.replicas == 2
    policy = ScalingPolicy.model_validate(
        {
            "min": 1,
            "max": 2,
            "checks": [{"kind": "target", "metric": "rps", "target": 10}],
            # always active: floor 5, cap 6, both above what the database can serve
            "schedules": [{"cron": "* * * * *", "duration": "1h", "min": 5, "max": 6}],
        }
    )
    autoscaler = Autoscaler("web", policy, ceiling=ceiling)
    decision = autoscaler.evaluate(Observations(), current=1, ready=1, now=100.0, wall=1.8e9)
    assert decision.desired == 2 and decision.direction == "up"
    assert decision.clamps[-1].stage == STAGE and decision.clamps[-1].before == 5
    assert any("max_connections 30 - reserve 5" in r for r in decision.reasons)
    stages = [c["stage"] for c in autoscaler.explain(101.0)["clamps"]]
    assert stages[-1] == STAGE
    assert (
        Autoscaler("web", policy)
        .evaluate(Observations(), current=1, ready=1, now=100.0, wall=1.8e9)
        .desired
        == 5
    )  # without the budget the schedule's floor wins


async def test_manual_scale_is_capped_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    loaded = load_config(path, environ={})
    store = Store.open(loaded.store_url, state_dir=loaded.state_dir)
    controller = Controller(
        loaded, store, FakeBalancer(), {"web": MemoryBackend("web")}, probe=healthy
    )
    await controller.start()
    token = load_or_create_token(tmp_path / "state")

    async def shutdown(everything: bool) -> None:
        return None

    app = create_app(controller, token, shutdown)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.post(
            "/api/v1/services/web/scale",
            json={"replicas": 7},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200
    body = response.json()
    assert body["desired"] == 2
    assert "7 asked, capped at 2" in body["clamped"] and "pool_size 10" in body["clamped"]
    assert controller.loops["web"].desired == 2
    assert controller.writer.flush(10)  # store writes are write-behind
    assert store.desired("web") == 2  # a restart does not bring the 7 back
    store.close()
