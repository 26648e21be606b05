"""The source side of cross-region audit aggregation: what may leave a region, and nothing else.

A region that opted in (the topology's ``audit_aggregation.regions``) answers
the aggregating region's signed ``POST /internal/audit/export`` with, per audit
record, only :data:`EXPORTED`: ``seq``, time, region, event type, a
pseudonymous actor id and the chain hash. The projection happens here, at the
source: the record's ``data`` (client addresses, token families, fields), its
raw actor id and everything else in the region's database never leave it.

The actor id is HMAC-SHA256 under a random secret made on first use and kept
only in this region's database (``audit_pseudonym_key``): the same actor gets
the same id within a region, so the aggregator can count a user's events there,
but ids from two regions cannot be joined, and without the secret an id cannot
be traced back to a user (nor confirmed by guessing user ids).

The chain hashes cover data that never leaves, so the region verifies its own
chain (:class:`ExportVerifier`, the same :class:`~.audit.ChainVerifier` as
``skylift platform audit verify``) and sends only the verdict: ok, how many
records, the head, the first bad ``seq`` and the problem lines (which name
records by ``seq`` only).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from skylift.platform import audit
from skylift.platform.db import Conn
from skylift.platform.errors import BadRequest, Forbidden
from skylift.platform.requests import platform, signed_peer_object

EXPORT_PATH = "/internal/audit/export"
#: the only fields of a record that leave its region
EXPORTED = ("seq", "ts", "region", "event", "actor", "hash")
MAX_PAGE = 5000
MAX_PROBLEMS = 20  # problem lines sent per verify (the first bad seq is always among them)
_PSEUDONYM_CONTEXT = b"skylift audit actor v1\x00"


def pseudonym(secret: bytes, actor: str | None) -> str | None:
    """The actor's id as it leaves the region: 32 hex of HMAC-SHA256 under the region's secret."""
    if actor is None:
        return None
    return hmac.new(secret, _PSEUDONYM_CONTEXT + actor.encode(), hashlib.sha256).hexdigest()[:32]


def project(row: Mapping[str, Any], secret: bytes) -> dict[str, Any]:
    """The metadata of one record (:data:`EXPORTED`), built field by field: no ``data``."""
    ts = row["ts"]
    assert isinstance(ts, datetime)
    actor = row["actor"]
    return {
        "seq": int(row["seq"]),
        "ts": ts.astimezone(UTC).isoformat(),
        "region": str(row["region"]),
        "event": str(row["event"]),
        "actor": pseudonym(secret, actor if isinstance(actor, str) else None),
        "hash": str(row["hash"]),
    }


@dataclass(frozen=True)
class ChainVerdict:
    """A region's verdict on its own chain, as sent to the aggregator."""

    ok: bool
    records: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None
    problems: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "problems": list(self.problems),
        }


class ExportVerifier:
    """:class:`~.audit.ChainVerifier` that also remembers the first record it found bad."""

    def __init__(self) -> None:
        self._chain = audit.ChainVerifier()
        self._head_seq = 0
        self._first_bad: int | None = None

    def add(self, record: audit.AuditRecord) -> None:
        before = len(self._chain.result.problems)
        self._chain.add(record)
        if self._first_bad is None and len(self._chain.result.problems) > before:
            self._first_bad = record.seq
        self._head_seq = record.seq

    def verdict(self) -> ChainVerdict:
        result = self._chain.result
        return ChainVerdict(
            ok=result.ok,
            records=result.records,
            head_seq=self._head_seq,
            head_hash=result.head,
            first_bad_seq=self._first_bad,
            problems=tuple(result.problems[:MAX_PROBLEMS]),
        )


async def region_secret(conn: Conn) -> bytes:
    """This region's pseudonym secret, made on first use (replicas racing keep the first)."""
    await conn.execute(
        "INSERT INTO audit_pseudonym_key (id, secret) VALUES (1, %s) ON CONFLICT (id) DO NOTHING",
        (os.urandom(32),),
    )
    cur = await conn.execute("SELECT secret FROM audit_pseudonym_key WHERE id = 1")
    row = await cur.fetchone()
    secret = row["secret"] if row is not None else None  # inserted just above if missing
    assert isinstance(secret, bytes | memoryview)
    return bytes(secret)


async def verify_chain(conn: Conn) -> ChainVerdict:
    verifier = ExportVerifier()
    async for record in audit.stream_all(conn):
        verifier.add(record)
    return verifier.verdict()


async def export(conn: Conn, after: int, limit: int, with_verdict: bool) -> dict[str, Any]:
    """The answer to one export call: records with ``seq > after``, the anchor, the verdict.

    The anchor is the record at ``after`` (the last one the aggregator holds), so
    the aggregator can see that it was rewritten or is gone (the head moved back).
    Only the exported columns are selected: ``data`` is not even read here.
    """
    secret = await region_secret(conn)
    cur = await conn.execute(
        "SELECT seq, ts, region, event, actor, hash FROM audit_log WHERE seq >= %s "
        "ORDER BY seq LIMIT %s",
        (max(after, 1), limit + 2),
    )
    rows = await cur.fetchall()
    anchor = None
    if after > 0 and rows and int(rows[0]["seq"]) == after:  # type: ignore[call-overload]
        anchor = project(rows.pop(0), secret)
    body: dict[str, Any] = {
        "anchor": anchor,
        "records": [project(r, secret) for r in rows[:limit] if int(r["seq"]) > after],  # type: ignore[call-overload]
        "more": len(rows) > limit,
    }
    if with_verdict:
        body["verify"] = (await verify_chain(conn)).to_json()
    return body


def _int(body: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name!r} must be an integer from {low} to {high}")
    return value


async def export_route(request: Request) -> Response:
    """``POST /internal/audit/export``: signed by a peer, answered only by an opted-in region.

    Routed to a failover region (``to`` is not this one): 421, not its log to give.
    """
    p = platform(request)
    body = await signed_peer_object(request, EXPORT_PATH)
    if body is None or p.regional is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    regional = p.regional
    aggregation = regional.regions.audit
    if aggregation is None or regional.region not in aggregation.sources:
        raise Forbidden(f"audit export is off in {regional.region} (it did not opt in)")
    if body.get("from") != aggregation.region:
        raise Forbidden(f"only the aggregating region {aggregation.region} may pull audit metadata")
    after = _int(body, "after", 0, 2**62, 0)
    limit = _int(body, "limit", 1, MAX_PAGE, 1000)
    async with p.db.write() as conn:  # the primary: a lagging replica would look like a cut
        answer = await export(conn, after, limit, body.get("verify") is True)
    return JSONResponse({"region": regional.region, **answer})


ROUTES = [Route(EXPORT_PATH, export_route, methods=["POST"])]
