"""Everything a replica's request handlers share, opened and closed as one."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from skylift.platform import audit
from skylift.platform.db import Database
from skylift.platform.flags import FlagStore
from skylift.platform.keys import Keyring, ensure_key
from skylift.platform.passwords import Passwords
from skylift.platform.ratelimit import LoginLimiter
from skylift.platform.refresh import RefreshTokens
from skylift.platform.regional import Regional, open_regional
from skylift.platform.settings import PlatformSettings
from skylift.platform.users import Users


@dataclass
class Platform:
    settings: PlatformSettings
    redis: Redis
    db: Database
    keyring: Keyring
    passwords: Passwords
    refresh: RefreshTokens
    limiter: LoginLimiter
    users: Users
    flags: FlagStore
    regional: Regional | None = None  # None: a single region, as before regions existed

    async def audit(self, event: str, actor: str | None, **data: Any) -> None:
        async with self.db.write() as conn:
            await audit.append(
                conn, region=self.settings.region, event=event, actor=actor, data=data
            )

    @staticmethod
    def now() -> int:
        return int(time.time())


def redis_client(settings: PlatformSettings) -> Redis:
    """Short timeouts and one quick retry: a dead Redis is a fast 503, not a hang."""
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=10,
    )


@asynccontextmanager
async def open_platform(settings: PlatformSettings) -> AsyncIterator[Platform]:
    ensure_key(settings.key_dir)
    redis = redis_client(settings)
    db = Database(
        settings.database_url, settings.read_database_url, settings.pool_size, settings.pool_timeout
    )
    await db.open()
    try:
        async with open_regional(settings, db, redis) as regional:
            yield Platform(
                settings=settings,
                redis=redis,
                db=db,
                keyring=Keyring(settings.key_dir),
                passwords=Passwords(settings.argon2),
                refresh=RefreshTokens(redis, settings.refresh_ttl),
                limiter=LoginLimiter(
                    redis,
                    settings.login_limit_account,
                    settings.login_limit_client,
                    settings.login_window,
                ),
                users=Users(db, redis, settings.profile_ttl),
                flags=FlagStore(db, redis, settings.flags_ttl),
                regional=regional,
            )
    finally:
        await db.close()
        await redis.aclose()
