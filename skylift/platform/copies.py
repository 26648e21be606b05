"""Opt-in copies held by this region: serve a failed-over, opted-in user's reads from them.

The region daemon keeps, on this region's own PostgreSQL server, one database
per home region of another zone (``skylift_copy_<home>``, logical replication
of the rows of that home's users who named this region as their fallback: see
:mod:`skylift.regions.replication`). When the edge fails such a user over here
(their whole zone is down), the platform reads their profile from that copy;
writes answer 503 + Retry-After until their home is back (a copy is a
subscriber: a write here would be lost, or diverge). A user with no row in the
copy (not opted in, opted out, or not replicated yet) still gets the documented
``NoCopyHere`` 503.
"""

from __future__ import annotations

import asyncio
import time

import psycopg
import structlog
from redis.asyncio import Redis

from skylift.platform.db import Database
from skylift.platform.errors import ReadOnly
from skylift.platform.users import Users
from skylift.regions.replication import copy_database, with_database

log = structlog.get_logger("skylift.platform")
COPY_PROFILE_TTL = 5  # seconds a profile read from a copy stays cached (as from a standby)
MISSING_TTL = 5.0  # seconds "this region holds no copy of that home" is remembered
COPY_POOL_SIZE = 2


class CopyReadOnly(ReadOnly):
    """503 + Retry-After: an opted-in user served from a copy; writes wait for their home."""

    served_from = "opt_in_copy"

    @staticmethod
    def explain(home_region: str, region: str) -> str:
        return (
            f"home region {home_region} and its zone are down; {region} serves this user from "
            "their opt-in copy: reads work, writes wait for the home region"
        )


class Copies:
    """The copies on this region's server, opened on first use (most requests never need one)."""

    def __init__(self, region: str, url: str, redis: Redis, timeout: float) -> None:
        self.region, self._url, self._redis, self._timeout = region, url, redis, timeout
        self._stores: dict[str, tuple[Database, Users]] = {}
        self._missing: dict[str, float] = {}
        self._lock = asyncio.Lock()

    def url(self, home: str) -> str:
        return with_database(self._url, copy_database(home))

    async def _store(self, home: str) -> tuple[Database, Users] | None:
        """``home``'s copy, or None when this server holds none (remembered briefly)."""
        if home in self._stores:
            return self._stores[home]
        if time.monotonic() < self._missing.get(home, float("-inf")):
            return None
        async with self._lock:
            if home in self._stores:
                return self._stores[home]
            url = self.url(home)
            try:  # one probe: a pool on a database that does not exist would retry forever
                probe = await psycopg.AsyncConnection.connect(
                    url, connect_timeout=max(1, int(self._timeout)), autocommit=True
                )
            except psycopg.OperationalError as exc:
                if "does not exist" not in str(exc):
                    raise  # the server is down: the usual 503
                self._missing[home] = time.monotonic() + MISSING_TTL
                return None
            await probe.close()
            db = Database(url, None, COPY_POOL_SIZE, self._timeout)
            await db.open()
            self._stores[home] = (db, Users(db, self._redis, COPY_PROFILE_TTL))
            log.info("opt_in_copy_opened", home_region=home)
            return self._stores[home]

    async def users_for(self, home: str, user_id: str) -> Users | None:
        """``home``'s copy when it holds ``user_id`` opted in to this region, else None."""
        store = await self._store(home)
        if store is None:
            return None
        db, users = store
        async with db.read() as conn:
            row = await (
                await conn.execute(
                    "SELECT 1 FROM users WHERE id = %s AND fallback_region = %s",
                    (user_id, self.region),
                )
            ).fetchone()
        return users if row is not None else None

    async def close(self) -> None:
        for db, _ in self._stores.values():
            await db.close()
