"""Feature flags per region: a percentage rollout by a stable hash of the user id.

Flags live in the region's PostgreSQL and are cached in Redis for
``flags_ttl``; a change through the admin API deletes the cache, so every
replica sees it on its next request, without a restart. A user's bucket is
``sha256(flag:user) mod 10000``: stable across replicas and restarts, and
independent between flags.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from skylift.platform.db import Database

BUCKETS = 10_000
CACHE_KEY = "flags:v1"


@dataclass(frozen=True)
class Flag:
    name: str
    enabled: bool
    rollout_bp: int  # basis points of users it is on for: 3000 = 30%
    description: str = ""


def bucket(flag: str, user_id: str) -> int:
    digest = hashlib.sha256(f"{flag}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def is_on(flag: Flag, user_id: str) -> bool:
    return flag.enabled and bucket(flag.name, user_id) < flag.rollout_bp


def percent_to_bp(percent: float) -> int:
    if not 0 <= percent <= 100:
        raise ValueError("rollout must be within 0..100 (percent)")
    return round(percent * 100)


class FlagStore:
    def __init__(self, db: Database, redis: Redis, ttl: int) -> None:
        self._db, self._redis, self._ttl = db, redis, ttl

    async def all(self) -> dict[str, Flag]:
        cached = await self._redis.get(CACHE_KEY)
        if cached is not None:
            return {f["name"]: Flag(**f) for f in json.loads(cached)}
        # from the primary: a replica lagging just after a change would re-cache the old value
        async with self._db.write() as conn:
            cur = await conn.execute(
                "SELECT name, enabled, rollout_bp, description FROM feature_flags ORDER BY name"
            )
            flags = [Flag(**row) for row in await cur.fetchall()]  # type: ignore[arg-type]
        await self._redis.set(CACHE_KEY, json.dumps([asdict(f) for f in flags]), ex=self._ttl)
        return {f.name: f for f in flags}

    async def put(self, flag: Flag) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                "INSERT INTO feature_flags (name, enabled, rollout_bp, description, updated_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "enabled = EXCLUDED.enabled, rollout_bp = EXCLUDED.rollout_bp, "
                "description = EXCLUDED.description, updated_at = EXCLUDED.updated_at",
                (flag.name, flag.enabled, flag.rollout_bp, flag.description, datetime.now(UTC)),
            )
        await self._redis.delete(CACHE_KEY)

    async def for_user(self, user_id: str) -> dict[str, bool]:
        return {name: is_on(flag, user_id) for name, flag in (await self.all()).items()}
