"""Users in PostgreSQL; their profiles (hot data) cached in Redis.

An update writes the new profile over the cached one (invalidation that also
refills), so the next ``/me`` on any replica sees it, even when reads go to a
replica that has not caught up yet.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import psycopg
from redis.asyncio import Redis

from skylift.platform import directory
from skylift.platform.db import Database
from skylift.platform.errors import Conflict


@dataclass(frozen=True)
class Profile:
    id: str
    email: str
    home_region: str
    display_name: str | None
    fallback_region: str | None = None  # opted in to be served there when their zone is down


@dataclass(frozen=True)
class Credentials:
    id: str
    password_hash: str
    home_region: str
    fallback_region: str | None = None


@dataclass(frozen=True)
class DirectoryEntry:
    """Written with the user row: the e-mail's keyed hash, and the peers to tell."""

    email_hash: str
    peers: tuple[str, ...]


_PROFILE_BY_ID = (
    "SELECT id::text AS id, email, home_region, display_name, fallback_region "
    "FROM users WHERE id = %s"
)
#: one literal statement per column a user may change (never a name from the request)
_UPDATES = {
    "display_name": (
        "UPDATE users SET display_name = %s, updated_at = %s WHERE id = %s "
        "RETURNING id::text AS id, email, home_region, display_name, fallback_region"
    ),
    "fallback_region": (
        "UPDATE users SET fallback_region = %s, updated_at = %s WHERE id = %s "
        "RETURNING id::text AS id, email, home_region, display_name, fallback_region"
    ),
}


def _key(user_id: str) -> str:
    return f"user:{user_id}"


class Users:
    def __init__(self, db: Database, redis: Redis, profile_ttl: int) -> None:
        self._db, self._redis, self._ttl = db, redis, profile_ttl

    async def create(
        self,
        email: str,
        password_hash: str,
        home_region: str,
        entry: DirectoryEntry | None = None,
        fallback_region: str | None = None,
    ) -> Profile:
        """The new user; with ``entry``, its directory row and outbox in the same transaction."""
        now = datetime.now(UTC)
        profile = Profile(str(uuid.uuid4()), email, home_region, None, fallback_region)
        try:
            async with self._db.write() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO users (id, email, password_hash, home_region, created_at, "
                    "updated_at, fallback_region, in_directory) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        profile.id,
                        email,
                        password_hash,
                        home_region,
                        now,
                        now,
                        fallback_region,
                        entry is not None,
                    ),
                )
                if entry is not None:
                    await directory.record_signup(conn, entry.email_hash, home_region, entry.peers)
        except psycopg.errors.UniqueViolation:
            raise Conflict("this e-mail is already registered") from None
        return profile

    async def credentials(self, email: str) -> Credentials | None:
        # from the primary: a user who just signed up must be able to log in at once
        async with self._db.write() as conn:
            cur = await conn.execute(
                "SELECT id::text AS id, password_hash, home_region, fallback_region FROM users "
                "WHERE email = %s",
                (email,),
            )
            row = await cur.fetchone()
        return Credentials(**row) if row else None  # type: ignore[arg-type]

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                "UPDATE users SET password_hash = %s WHERE id = %s", (password_hash, user_id)
            )

    async def profile(self, user_id: str) -> Profile | None:
        cached = await self._redis.get(_key(user_id))
        if cached is not None:
            return Profile(**json.loads(cached))
        query = _PROFILE_BY_ID
        async with self._db.read() as conn:
            row = await (await conn.execute(query, (user_id,))).fetchone()
        if row is None and self._db.replica is not None:
            # signed up a moment ago and the replica has not replayed it yet
            async with self._db.write() as conn:
                row = await (await conn.execute(query, (user_id,))).fetchone()
        if row is None:
            return None
        profile = Profile(**row)  # type: ignore[arg-type]
        await self._redis.set(_key(user_id), json.dumps(asdict(profile)), ex=self._ttl)
        return profile

    async def update_display_name(self, user_id: str, display_name: str | None) -> Profile | None:
        return await self._update(user_id, "display_name", display_name)

    async def set_fallback(self, user_id: str, region: str | None) -> Profile | None:
        """Opt in to (or, with None, out of) being served in ``region`` when the zone is down."""
        return await self._update(user_id, "fallback_region", region)

    async def _update(self, user_id: str, column: str, value: str | None) -> Profile | None:
        async with self._db.write() as conn:
            cur = await conn.execute(_UPDATES[column], (value, datetime.now(UTC), user_id))
            row = await cur.fetchone()
        if row is None:
            await self._redis.delete(_key(user_id))
            return None
        profile = Profile(**row)  # type: ignore[arg-type]
        await self._redis.set(_key(user_id), json.dumps(asdict(profile)), ex=self._ttl)
        return profile
