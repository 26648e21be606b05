"""The region's audit log: append-only, hash-chained, verifiable offline.

Record ``n`` stores ``prev_hash`` (record ``n-1``'s hash; zeros for the first)
and its own ``hash``: SHA-256 of its canonical JSON (seq, time, region,
event, actor, data, prev_hash). Editing a record changes its hash; removing
one leaves a gap in ``seq`` and a ``prev_hash`` that points at nothing;
reordering breaks the links. Appends take a transaction-scoped advisory lock
so concurrent replicas extend one chain. Not detected by the chain alone:
cutting records off the end (compare the head with a copy kept elsewhere).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skylift.platform.db import Conn

GENESIS = "0" * 64
LOCK_KEY = 0x5B1F7_A0D1


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: datetime
    region: str
    event: str
    actor: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts.astimezone(UTC).isoformat(),
            "region": self.region,
            "event": self.event,
            "actor": self.actor,
            "data": self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def record_hash(
    seq: int,
    ts: datetime,
    region: str,
    event: str,
    actor: str | None,
    data: dict[str, Any],
    prev_hash: str,
) -> str:
    body = [seq, ts.astimezone(UTC).isoformat(), region, event, actor, data, prev_hash]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def append(
    conn: Conn, *, region: str, event: str, actor: str | None, data: dict[str, Any]
) -> AuditRecord:
    """Add one record at the head of the chain (serialised across replicas)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        cur = await conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        head = await cur.fetchone()
        seq = int(head["seq"]) + 1 if head else 1  # type: ignore[call-overload]
        prev = str(head["hash"]) if head else GENESIS
        ts = datetime.now(UTC)
        digest = record_hash(seq, ts, region, event, actor, data, prev)
        await conn.execute(
            "INSERT INTO audit_log (seq, ts, region, event, actor, data, prev_hash, hash) "
            "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s)",
            (seq, ts, region, event, actor, json.dumps(data), prev, digest),
        )
    return AuditRecord(seq, ts, region, event, actor, data, prev, digest)


def _record(row: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        seq=int(row["seq"]),
        ts=row["ts"],
        region=row["region"],
        event=row["event"],
        actor=row["actor"],
        data=row["data"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


async def read_range(
    conn: Conn, since: datetime | None, until: datetime | None, limit: int
) -> list[AuditRecord]:
    """Records with ``since <= ts < until``, oldest first."""
    cur = await conn.execute(
        "SELECT * FROM audit_log WHERE (%(since)s::timestamptz IS NULL OR ts >= %(since)s) "
        "AND (%(until)s::timestamptz IS NULL OR ts < %(until)s) ORDER BY seq LIMIT %(limit)s",
        {"since": since, "until": until, "limit": limit},
    )
    return [_record(row) for row in await cur.fetchall()]


async def stream_all(conn: Conn, batch: int = 1000) -> AsyncIterator[AuditRecord]:
    """Every record in ``seq`` order, in batches (the log may be large)."""
    after = 0
    while True:
        cur = await conn.execute(
            "SELECT * FROM audit_log WHERE seq > %s ORDER BY seq LIMIT %s", (after, batch)
        )
        rows = await cur.fetchall()
        if not rows:
            return
        for row in rows:
            yield _record(row)
        after = int(rows[-1]["seq"])  # type: ignore[call-overload]


@dataclass
class Verification:
    """What :func:`verify` found; ``ok`` only when no problem was seen."""

    records: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class ChainVerifier:
    """Feed records in ``seq`` order; every problem is named by its record."""

    def __init__(self) -> None:
        self.result = Verification()
        self._prev_seq = 0

    def add(self, rec: AuditRecord) -> None:
        result = self.result
        result.records += 1
        if rec.seq != self._prev_seq + 1:
            result.problems.append(
                f"record {rec.seq}: expected seq {self._prev_seq + 1} "
                f"(records {self._prev_seq + 1}..{rec.seq - 1} removed?)"
            )
        if rec.prev_hash != result.head:
            result.problems.append(
                f"record {rec.seq}: prev_hash does not match the hash of the record before it "
                "(a record was removed, reordered or edited)"
            )
        expected = record_hash(
            rec.seq, rec.ts, rec.region, rec.event, rec.actor, rec.data, rec.prev_hash
        )
        if rec.hash != expected:
            result.problems.append(f"record {rec.seq}: content does not match its hash (edited)")
        self._prev_seq = rec.seq
        result.head = rec.hash


def verify(records: Iterable[AuditRecord]) -> Verification:
    verifier = ChainVerifier()
    for rec in records:
        verifier.add(rec)
    return verifier.result
