"""PostgreSQL through bounded pools: one for the primary, one for a read replica if set.

A pool never grows past ``pool_size``, so ``replicas x pool_size`` is the most
connections the service can open (the budget ``skylift config validate``
checks). Waiting for a connection is capped by ``pool_timeout``, and each
statement by ``statement_timeout``: a dead database means a quick 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

Conn = psycopg.AsyncConnection[dict[str, object]]


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://`` (SQLAlchemy form) -> ``postgresql://`` (libpq form)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + libpq_url(url).partition("://")[2]


def _pool(url: str, size: int, timeout: float, name: str) -> AsyncConnectionPool[Conn]:
    return AsyncConnectionPool(
        libpq_url(url),
        min_size=1,
        max_size=size,
        timeout=timeout,
        name=name,
        open=False,
        check=AsyncConnectionPool.check_connection,  # a connection broken by a restart is replaced
        reconnect_timeout=24 * 3600,  # keep trying while the database is down
        kwargs={
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": max(1, int(timeout)),
            "options": "-c statement_timeout=5000",
            "application_name": f"skylift-platform-{name}",
        },
        connection_class=psycopg.AsyncConnection,
    )


class Database:
    """Writes go to the primary; ``read()`` uses the replica when one is configured."""

    def __init__(self, url: str, read_url: str | None, size: int, timeout: float) -> None:
        self.primary = _pool(url, size, timeout, "primary")
        self.replica = _pool(read_url, size, timeout, "replica") if read_url else None

    async def open(self) -> None:
        # wait=False: a replica starts (and reports not-ready) while the database is down
        await self.primary.open(wait=False)
        if self.replica is not None:
            await self.replica.open(wait=False)

    async def close(self) -> None:
        await self.primary.close()
        if self.replica is not None:
            await self.replica.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Conn]:
        async with self.primary.connection() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        async with (self.replica or self.primary).connection() as conn:
            yield conn
