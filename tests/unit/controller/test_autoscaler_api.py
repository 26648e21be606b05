"""Scaling events through the API and ``skylift forecast`` over stored history."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from skylift.api.app import create_app
from skylift.api.token import load_or_create_token
from skylift.backends.memory import MemoryBackend
from skylift.cli import forecast as cli_forecast
from skylift.cli.event import parse_when
from skylift.config import load_config
from skylift.controller.core import Controller
from skylift.model import Replica
from skylift.store import Store
from skylift.store.history import Bucket
from tests.unit.controller.fakes import FakeBalancer

CONFIG = """
services:
  web:
    frontend: 127.0.0.1:9080
    replicas: 1
    backend: {command: "app --port {port}"}
    autoscale:
      policy: predictive
      capacity: 10
      interval: 5s
      forecast: {step: 10s, seasons: [600s], min_history: 30m, startup: 30s}
      events:
        - {name: from-config, start: "2030-01-01T00:00Z", end: "2030-01-02T00:00Z", min: 2}
  static:
    frontend: 127.0.0.1:9081
    replicas: 1
    backend: {command: "app --port {port}", ports: {start: 30000, end: 30009}}
"""


def forecast_app() -> typer.Typer:
    """Just the command: the real root callback would point structlog at CliRunner's
    captured stream, which is closed once the call returns (and later tests log)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    cli_forecast.register(app)
    return app


async def healthy(_: Replica) -> bool:
    return True


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "skylift.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
async def client(config_path: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    loaded = load_config(config_path, environ={})
    store = Store.open(loaded.store_url, state_dir=loaded.state_dir)
    ctl = Controller(
        loaded,
        store,
        FakeBalancer(),
        {"web": MemoryBackend("web"), "static": MemoryBackend("static")},
        probe=healthy,
    )
    await ctl.start()
    token = load_or_create_token(loaded.state_dir)

    async def shutdown(_: bool) -> None:
        return None

    transport = httpx.ASGITransport(app=create_app(ctl, token, shutdown))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {token}"}
    ) as c:
        yield c
    store.close()


async def test_events_api_add_list_remove(client: httpx.AsyncClient) -> None:
    url = "/api/v1/services/web/events"
    body = {"name": "launch", "start": "2031-05-01T08:00Z", "end": "2031-05-01T20:00Z", "min": 5}
    added = await client.post(url, json=body)
    assert added.status_code == 201, added.text
    assert added.json()["event"]["start"] == 1935388800.0
    again = await client.post(url, json=body)
    assert again.status_code == 409 and "already has an event named 'launch'" in again.text
    listed = (await client.get(url)).json()["events"]
    assert [(e["name"], e["source"]) for e in listed] == [
        ("from-config", "config"),
        ("launch", "api"),
    ]
    assert (await client.delete(f"{url}/launch")).json() == {"service": "web", "removed": "launch"}
    assert (await client.delete(url, params={"name": "launch"})).status_code == 404
    assert [e["name"] for e in (await client.get(url)).json()["events"]] == ["from-config"]


async def test_events_api_rejects_bad_input(client: httpx.AsyncClient) -> None:
    url = "/api/v1/services/web/events"
    bad = await client.post(url, json={"name": "x", "start": 10, "end": 5, "min": 2})
    assert bad.status_code == 400 and "ends before it starts" in bad.text
    assert (await client.post(url, json={"name": "x", "start": 1, "end": 5})).status_code == 400
    assert (await client.post(url, content=b"not json")).status_code == 400
    assert (await client.get("/api/v1/services/nope/events")).status_code == 404
    static = await client.post(
        "/api/v1/services/static/events", json={"name": "x", "start": 1, "end": 5, "min": 2}
    )
    assert static.status_code == 409 and "no autoscale policy" in static.text
    anonymous = await client.get(url, headers={"Authorization": ""})
    assert anonymous.status_code == 401


def test_parse_when() -> None:
    assert parse_when("now", 1000.0) == 1000.0
    assert parse_when("+2m", 1000.0) == 1120.0
    assert parse_when("2030-01-01T00:00Z", 0.0) == 1893456000.0
    assert parse_when("2030-01-01T01:00", 0.0) == 1893459600.0  # no offset: UTC
    assert parse_when("1234.5", 0.0) == 1234.5
    with pytest.raises(ValueError, match="use 'now'"):
        parse_when("tomorrow", 0.0)


def test_forecast_command_shows_forecast_against_load(config_path: Path, tmp_path: Path) -> None:
    loaded = load_config(config_path, environ={})
    now = time.time()
    end = math.floor(now / 10.0) * 10.0
    peak_at = now + 20.0  # the next peak starts 20 s from now
    buckets = []
    for i in range(720, 0, -1):  # 2 h of 10 s buckets
        start = end - i * 10.0
        rate = 60.0 if (start - peak_at) % 600.0 < 120.0 else 0.0
        buckets.append(Bucket(start, 10.0, rate * 10, 10))
    with Store.open(loaded.store_url, state_dir=loaded.state_dir) as store:
        store.history.append("web", "rps", buckets)
    chart = tmp_path / "forecast.svg"
    runner, cli_app = CliRunner(), forecast_app()
    args = ["forecast", "web", "-c", str(config_path), "--recent", "10m", "--horizon", "5m"]
    result = runner.invoke(cli_app, [*args, "-o", "json", "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ready"] and data["lead_s"] == 35.0 and data["stats"]["forecasts"] > 20
    past = [r for r in data["rows"] if r["past"]]
    future = [r for r in data["rows"] if not r["past"]]
    assert len(past) in (60, 61) and len(future) in (29, 30)
    assert any(r["load"] == 60.0 for r in past) and any(r["load"] == 0.0 for r in past)
    assert max(r["replicas"] for r in future[:3]) >= 6  # the peak is inside the lead
    svg = chart.read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 4 and ">now</text>" in svg
    table = runner.invoke(cli_app, args)
    assert table.exit_code == 0 and "-- now" in table.stdout and "MAPE" in table.stdout
    static = runner.invoke(cli_app, ["forecast", "static", "-c", str(config_path)])
    assert static.exit_code == 2 and "does not forecast" in static.output
