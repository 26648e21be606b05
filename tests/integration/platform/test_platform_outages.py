"""Redis or PostgreSQL down: a quick 503 with Retry-After (never 500 or a hang), then recovery."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from skylift.platform.app import create_app
from skylift.platform.migrate import upgrade
from skylift.platform.runtime import open_platform
from skylift.platform.settings import PlatformSettings
from tests.ports import free_port


def _assert_503(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert "unavailable" in response.json()["error"]
    assert elapsed < 5, f"took {elapsed:.1f}s: a dead dependency must not hang a request"


async def test_redis_stopped_mid_run_gives_503_then_recovers(
    platform_settings: PlatformSettings, redis_factory: Callable[[], Any]
) -> None:
    server = redis_factory()
    settings = dataclasses.replace(platform_settings, redis_url=server.url())
    async with open_platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
            creds = {"email": "ada@example.com", "password": "correct horse"}
            assert (await client.post("/auth/signup", json=creds)).status_code == 201
            pair = (await client.post("/auth/login", json=creds)).json()
            auth = {"Authorization": f"Bearer {pair['access_token']}"}
            assert (await client.get("/me", headers=auth)).status_code == 200

            server.stop()
            for method, path, kwargs in (
                ("POST", "/auth/login", {"json": creds}),
                ("POST", "/auth/refresh", {"json": {"refresh_token": pair["refresh_token"]}}),
                ("GET", "/flags", {"headers": auth}),
            ):
                started = time.monotonic()
                response = await client.request(method, path, **kwargs)
                _assert_503(response, time.monotonic() - started)
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"] == {"redis": False, "postgresql": True}
            assert (await client.get("/livez")).status_code == 200  # no restart for this

            server.start()
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.post("/auth/login", json=creds)).status_code == 200
            # the session survived (Redis kept its AOF): the refresh token still works once
            r = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            assert r.status_code == 200


async def test_postgresql_unreachable_gives_503(tmp_path: Path, redis_url: str) -> None:
    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/platform"
    settings = PlatformSettings(
        database_url=dead,
        redis_url=redis_url,
        key_dir=tmp_path / "keys",
        pool_timeout=1.0,
    )
    async with open_platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
            creds = {"email": "ada@example.com", "password": "correct horse"}
            for path in ("/auth/signup", "/auth/login"):
                started = time.monotonic()
                response = await client.post(path, json=creds)
                _assert_503(response, time.monotonic() - started)
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"] == {"redis": True, "postgresql": False}


async def test_postgresql_restart_recovers(
    platform_settings: PlatformSettings, postgres_cluster: Any
) -> None:
    """Connections the pool holds are killed (as by a restart); the next requests reconnect."""
    import psycopg

    upgrade(platform_settings.database_url)
    async with open_platform(platform_settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, platform_settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
            creds = {"email": "ada@example.com", "password": "correct horse"}
            assert (await client.post("/auth/signup", json=creds)).status_code == 201
            with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'skylift-platform-%'"
                )
            statuses = [
                (await client.post("/auth/login", json=creds)).status_code for _ in range(3)
            ]
            assert 500 not in statuses
            assert statuses[-1] == 200
