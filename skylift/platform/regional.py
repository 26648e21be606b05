"""What a platform of a multi-region deployment holds beyond a single region's parts.

The topology, the directory key, the client for peer calls, the peers' token
keys, the directory pusher and, in a region holding another region's in-zone
standby, that standby database with a cached answer to "is it promoted?".
Which region may serve which user is not decided here but by
:func:`skylift.regions.rules.serving_verdict` (see :mod:`.requests`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import structlog
from redis.asyncio import Redis

from skylift.platform import peers
from skylift.platform.copies import Copies
from skylift.platform.db import Database
from skylift.platform.directory import DirectoryPusher
from skylift.platform.errors import POSTGRES_DOWN
from skylift.platform.peerkeys import PeerKeys
from skylift.platform.settings import PlatformSettings
from skylift.platform.topology import Regions
from skylift.platform.users import Users
from skylift.regions.rules import Topology

log = structlog.get_logger("skylift.platform")
STANDBY_PROFILE_TTL = 5  # seconds a profile read from the standby stays cached
STANDBY_DOWN: tuple[type[Exception], ...] = (*POSTGRES_DOWN, TimeoutError)


class StandbyState:
    """Whether the standby database was promoted (``pg_is_in_recovery()`` false), cached briefly.

    Unreachable counts as not promoted: reads then fail with the usual 503 and
    writes are refused as read-only, never written to an unknown server.
    """

    def __init__(self, db: Database, ttl: float, timeout: float) -> None:
        self._db, self._ttl, self._timeout = db, ttl, timeout
        self._value, self._until = False, float("-inf")

    async def promoted(self) -> bool:
        now = time.monotonic()
        if now < self._until:
            return self._value
        try:
            async with asyncio.timeout(self._timeout), self._db.write() as conn:
                row = await (await conn.execute("SELECT pg_is_in_recovery() AS r")).fetchone()
            value = row is not None and row["r"] is False
        except STANDBY_DOWN as exc:
            log.warning("standby_state_unknown", error=type(exc).__name__)
            value = False
        if value and not self._value:
            log.warning("standby_promoted")
        self._value, self._until = value, time.monotonic() + self._ttl
        return value


@dataclass
class Regional:
    region: str
    regions: Regions
    directory_key: bytes
    peer_key: bytes
    client: httpx.AsyncClient
    peer_keys: PeerKeys
    pusher: DirectoryPusher
    standby_users: Users | None = None
    standby: StandbyState | None = None
    copies: Copies | None = None  # opt-in copies of other zones' users held here

    @property
    def topology(self) -> Topology:
        return self.regions.topology

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(name for name in self.topology.names if name != self.region)

    @property
    def standby_of(self) -> str | None:
        return self.topology.region(self.region).standby_of

    async def promoted(self) -> dict[str, str]:
        """``serving_verdict``'s ``promoted``: the standby this region holds, once promoted."""
        if self.standby_of is None or self.standby is None:
            return {}
        return {self.standby_of: self.region} if await self.standby.promoted() else {}


def _report_crash(task: asyncio.Task[None]) -> None:
    """A background loop only ends when cancelled; anything else is a bug, said loudly."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("background_task_crashed", task=task.get_name(), error=repr(exc))


@asynccontextmanager
async def open_regional(
    settings: PlatformSettings, primary: Database, redis: Redis
) -> AsyncIterator[Regional | None]:
    """The regional parts with their background tasks; None for a single-region platform."""
    regions, key = settings.regions, settings.directory_key()
    if regions is None or key is None:
        yield None
        return
    client = peers.http_client(settings.peer_timeout)
    standby_db = (
        Database(settings.standby_database_url, None, settings.pool_size, settings.pool_timeout)
        if settings.standby_database_url
        else None
    )
    regional = Regional(
        region=settings.region,
        regions=regions,
        directory_key=key,
        peer_key=peers.peer_key(key),
        client=client,
        peer_keys=PeerKeys(
            settings.region,
            regions.edges,
            client,
            settings.peer_jwks_dir,
            refresh=settings.peer_jwks_refresh,
        ),
        pusher=DirectoryPusher(
            primary,
            client,
            region=settings.region,
            edges=regions.edges,
            key=peers.peer_key(key),
            email_key=key,
        ),
        # a short cache: a later failover must not serve a profile changed at home meanwhile
        standby_users=(
            Users(standby_db, redis, min(settings.profile_ttl, STANDBY_PROFILE_TTL))
            if standby_db is not None
            else None
        ),
        standby=(
            StandbyState(standby_db, settings.standby_check_ttl, settings.pool_timeout)
            if standby_db is not None
            else None
        ),
    )
    if standby_db is not None:
        await standby_db.open()
    regional.copies = Copies(settings.region, settings.database_url, redis, settings.pool_timeout)
    tasks = [
        asyncio.create_task(regional.pusher.run(), name="directory-pusher"),
        asyncio.create_task(regional.peer_keys.run(), name="peer-jwks"),
    ]
    for task in tasks:
        task.add_done_callback(_report_crash)
    try:
        yield regional
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if standby_db is not None:
            await standby_db.close()
        await regional.copies.close()
        await client.aclose()
