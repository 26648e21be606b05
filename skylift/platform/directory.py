"""The directory: which region is home to an e-mail, known in every region, e-mail never stored.

An entry is HMAC-SHA256(directory key, normalised e-mail) -> home region. The
home region writes it at sign-up in the same transaction as the user row,
together with one outbox row per peer; :class:`DirectoryPusher` posts the
outbox to each peer's platform through that peer's edge (signed), and deletes
a row only once the peer acknowledged it, retrying with backoff otherwise.
Receiving is an idempotent upsert, so a push repeated after a lost answer is
harmless. Every replica runs a pusher; ``FOR UPDATE SKIP LOCKED`` makes them
share the outbox rather than race on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import httpx
import structlog

from skylift.platform import peers
from skylift.platform.db import Conn, Database
from skylift.platform.errors import POSTGRES_DOWN

log = structlog.get_logger("skylift.platform")

PUSH_PATH = "/internal/directory"
BATCH = 200
MAX_BACKOFF = 30.0
_HASH = re.compile(r"^[0-9a-f]{64}$")


def email_hash(directory_key: bytes, email: str) -> str:
    """The directory's name for an e-mail (already normalised: stripped, lower case)."""
    return hmac.new(directory_key, email.encode(), hashlib.sha256).hexdigest()


def valid_hash(value: object) -> bool:
    return isinstance(value, str) and _HASH.match(value) is not None


async def lookup(conn: Conn, digest: str) -> str | None:
    cur = await conn.execute("SELECT home_region FROM directory WHERE email_hash = %s", (digest,))
    row = await cur.fetchone()
    return str(row["home_region"]) if row else None


async def record_signup(conn: Conn, digest: str, home: str, peer_regions: Iterable[str]) -> None:
    """The entry and its outbox rows; call inside the sign-up's transaction."""
    now = datetime.now(UTC)
    await conn.execute(
        "INSERT INTO directory (email_hash, home_region, updated_at) VALUES (%s, %s, %s)",
        (digest, home, now),
    )
    for peer in peer_regions:
        await conn.execute(
            "INSERT INTO directory_outbox (peer, email_hash, home_region) VALUES (%s, %s, %s)",
            (peer, digest, home),
        )


async def upsert(conn: Conn, entries: Iterable[tuple[str, str]]) -> int:
    """Store pushed entries (hash, home); repeating a push changes nothing."""
    count = 0
    now = datetime.now(UTC)
    async with conn.transaction():
        for digest, home in entries:
            await conn.execute(
                "INSERT INTO directory (email_hash, home_region, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (email_hash) DO UPDATE SET home_region = EXCLUDED.home_region, "
                "updated_at = EXCLUDED.updated_at "
                "WHERE directory.home_region IS DISTINCT FROM EXCLUDED.home_region",
                (digest, home, now),
            )
            count += 1
    return count


class DirectoryPusher:
    """Posts the outbox to peers until each acknowledges; woken at once by a sign-up."""

    def __init__(
        self,
        db: Database,
        client: httpx.AsyncClient,
        *,
        region: str,
        edges: Mapping[str, str],
        key: bytes,
        email_key: bytes,
        interval: float = 1.0,
    ) -> None:
        self._db, self._client, self._region = db, client, region
        self._edges, self._key, self._interval = edges, key, interval
        self._email_key = email_key
        self._peers = tuple(name for name in edges if name != region)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: push what is due, then wait for a wake-up or the interval."""
        while True:
            try:
                busy = await self.backfill_once()
                busy = await self.push_once() or busy
            except POSTGRES_DOWN as exc:
                log.warning("directory_push_paused", reason="postgresql", error=type(exc).__name__)
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                self._wake.clear()

    async def backfill_once(self) -> bool:
        """Directory entries for users from before the topology; True if a full batch."""
        async with self._db.write() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id, email, home_region FROM users WHERE NOT in_directory "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (BATCH,),
            )
            rows = await cur.fetchall()
            for row in rows:
                digest, home = (
                    email_hash(self._email_key, str(row["email"])),
                    str(row["home_region"]),
                )
                done = await conn.execute(
                    "INSERT INTO directory (email_hash, home_region, updated_at) "
                    "VALUES (%s, %s, now()) ON CONFLICT (email_hash) DO NOTHING",
                    (digest, home),
                )
                if done.rowcount:
                    for peer in self._peers:
                        await conn.execute(
                            "INSERT INTO directory_outbox (peer, email_hash, home_region) "
                            "VALUES (%s, %s, %s)",
                            (peer, digest, home),
                        )
            if rows:
                await conn.execute(
                    "UPDATE users SET in_directory = true WHERE id = ANY(%s)",
                    ([row["id"] for row in rows],),
                )
                log.info("directory_backfilled", users=len(rows))
        return len(rows) >= BATCH

    async def push_once(self) -> bool:
        """One pass; True when a full batch was claimed (more may be due)."""
        async with self._db.write() as conn:
            # claim due rows; the new next_attempt_at is their lease and their backoff at once
            cur = await conn.execute(
                "UPDATE directory_outbox SET attempts = attempts + 1, next_attempt_at = now() + "
                "make_interval(secs => LEAST(%s, 0.5 * power(2, attempts))) "
                "WHERE id IN (SELECT id FROM directory_outbox WHERE next_attempt_at <= now() "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
                "RETURNING id, peer, email_hash, home_region",
                (MAX_BACKOFF, BATCH),
            )
            rows = await cur.fetchall()
        by_peer: dict[str, list[dict[str, object]]] = defaultdict(list)
        for row in rows:
            by_peer[str(row["peer"])].append(row)
        results = await asyncio.gather(
            *(self._push(peer, batch) for peer, batch in by_peer.items())
        )
        done: list[int] = []
        failed: list[tuple[int, str]] = []
        for ok, batch, error in results:
            ids = [int(str(row["id"])) for row in batch]
            if ok:
                done += ids
            else:
                failed += [(i, error) for i in ids]
        async with self._db.write() as conn:
            if done:
                await conn.execute("DELETE FROM directory_outbox WHERE id = ANY(%s)", (done,))
            for row_id, error in failed:
                await conn.execute(
                    "UPDATE directory_outbox SET last_error = %s WHERE id = %s", (error, row_id)
                )
        return len(rows) >= BATCH

    async def _push(
        self, peer: str, batch: list[dict[str, object]]
    ) -> tuple[bool, list[dict[str, object]], str]:
        edge = self._edges.get(peer)
        if edge is None:
            log.warning("directory_push_no_edge", peer=peer)
            return False, batch, "no edge address for this region in the topology"
        body = json.dumps(
            {
                "from": self._region,
                "to": peer,
                "entries": [
                    {"email_hash": row["email_hash"], "home_region": row["home_region"]}
                    for row in batch
                ],
            }
        ).encode()
        signature = peers.sign(
            self._key, method="POST", path=PUSH_PATH, body=body, now=int(time.time())
        )
        try:
            response = await self._client.post(
                f"http://{edge}{PUSH_PATH}",
                content=body,
                headers={
                    "content-type": "application/json",
                    peers.SELECTOR: peer,
                    peers.SIGNATURE: signature,
                },
            )
        except httpx.HTTPError as exc:
            log.warning("directory_push_failed", peer=peer, error=type(exc).__name__)
            return False, batch, type(exc).__name__
        if response.status_code != 200:
            log.warning("directory_push_refused", peer=peer, status=response.status_code)
            return False, batch, f"HTTP {response.status_code}"
        log.info("directory_pushed", peer=peer, entries=len(batch))
        return True, batch, ""
