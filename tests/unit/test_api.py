"""The local API over a controller built from in-memory parts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from skylift.api.app import create_app
from skylift.api.token import load_or_create_token
from skylift.backends.memory import MemoryBackend
from skylift.config import load_config
from skylift.controller.core import Controller
from skylift.model import Replica
from skylift.store import Store
from tests.unit.controller.fakes import FakeBalancer

CONFIG = """
services:
  web:
    frontend: 127.0.0.1:9080
    replicas: 2
    backend: {command: "app --port {port}"}
"""


async def healthy(_: Replica) -> bool:
    return True


@pytest.fixture
async def controller(tmp_path: Path) -> Controller:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    loaded = load_config(path, environ={})
    store = Store.open(loaded.store_url, state_dir=loaded.state_dir)
    ctl = Controller(loaded, store, FakeBalancer(), {"web": MemoryBackend("web")}, probe=healthy)
    await ctl.start()
    for _ in range(3):
        await ctl.loops["web"].tick()
    return ctl


async def test_token_required_except_probes(controller: Controller, tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path / "state")
    shutdowns: list[bool] = []

    async def shutdown(everything: bool) -> None:
        shutdowns.append(everything)

    app = create_app(controller, token, shutdown)
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:

        async def get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
            return await client.get(path, headers=headers)

        async def post(path: str, body: object = None) -> httpx.Response:
            return await client.post(path, json=body, headers=auth)

        assert (await get("/api/v1/services")).status_code == 401
        assert (await get("/metrics", {"Authorization": "Bearer x"})).status_code == 401
        assert (await get("/readyz")).status_code == 200
        web = (await get("/api/v1/services", auth)).json()["services"]["web"]
        assert web["desired"] == 2 and web["ready"] == 2
        assert {r["state"] for r in web["replicas"]} == {"ready"}
        scaled = await post("/api/v1/services/web/scale", {"replicas": 4})
        assert scaled.json() == {"service": "web", "desired": 4, "clamped": None}
        assert controller.loops["web"].desired == 4
        assert controller.writer.flush(10)  # store writes are write-behind
        assert controller.store.desired("web") == 4
        assert (await post("/api/v1/services/nope/scale", {"replicas": 1})).status_code == 404
        assert (await post("/api/v1/services/web/scale", {"n": 1})).status_code == 400
        events = (await get("/api/v1/events", auth)).json()["events"]
        kinds = [e["kind"] for e in events]
        assert "scaled" in kinds and "replica_ready" in kinds
        assert "skylift_replicas_desired" in (await get("/metrics", auth)).text
        assert (await post("/api/v1/shutdown")).status_code == 202
    assert shutdowns == [True]


def test_token_file_is_private_and_stable(tmp_path: Path) -> None:
    first = load_or_create_token(tmp_path / "s")
    assert load_or_create_token(tmp_path / "s") == first
    assert oct((tmp_path / "s" / "api-token").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "s").stat().st_mode & 0o777) == "0o700"
