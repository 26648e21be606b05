"""An in-process platform on real PostgreSQL and Redis, driven over ASGI (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from skylift.logs import configure_logging
from skylift.platform.app import create_app
from skylift.platform.migrate import upgrade
from skylift.platform.runtime import Platform, open_platform
from skylift.platform.settings import Argon2Params, PlatformSettings

ADMIN_TOKEN = "test-admin-token-0123456789"
FAST_ARGON2 = Argon2Params(time_cost=1, memory_kib=1024, parallelism=1)


def make_settings(tmp_path: Path, database_url: str, redis_url: str) -> PlatformSettings:
    admin = tmp_path / "admin-token"
    admin.write_text(ADMIN_TOKEN + "\n")
    admin.chmod(0o600)
    return PlatformSettings(
        database_url=database_url,
        redis_url=redis_url,
        region="eu",
        key_dir=tmp_path / "keys",
        admin_token_file=admin,
        replica="test",
        argon2=FAST_ARGON2,
        login_limit_account=5,
        login_limit_client=1000,
        pool_timeout=1.0,
        redis_timeout=0.5,
    )


@dataclass
class Running:
    client: httpx.AsyncClient
    platform: Platform
    settings: PlatformSettings

    async def signup_login(
        self, email: str = "ada@example.com", password: str = "correct horse"
    ) -> dict[str, str]:
        r = await self.client.post("/auth/signup", json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        r = await self.client.post("/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        body: dict[str, str] = r.json()
        return body


@pytest.fixture(autouse=True)
def _logs_to_this_tests_stderr() -> None:
    """Another test's CLI run may have left structlog writing to a stream now closed."""
    configure_logging("warning")


@pytest.fixture
def platform_settings(tmp_path: Path, postgres_url: str, redis_url: str) -> PlatformSettings:
    upgrade(postgres_url)
    return make_settings(tmp_path, postgres_url, redis_url)


async def start(settings: PlatformSettings) -> AsyncIterator[Running]:
    async with open_platform(settings) as platform:
        app = create_app(platform, settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://platform") as client:
            yield Running(client, platform, settings)


@pytest.fixture
async def running(platform_settings: PlatformSettings) -> AsyncIterator[Running]:
    async for value in start(platform_settings):
        yield value


@pytest.fixture
def admin_token() -> str:
    return ADMIN_TOKEN
