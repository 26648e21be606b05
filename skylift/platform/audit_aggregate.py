"""The aggregating side of cross-region audit aggregation: pull, judge, store, query.

Run in the region the config names (``audit_aggregation.region``), against
that region's own PostgreSQL. :func:`pull_region` asks one opted-in region
(through its edge, selector header naming it, the request signed with the peer
key) for the metadata of its records after the last one stored here, and for
its verdict on its own chain. :func:`judge` (pure) compares what it answered
with what was collected before: a region whose chain fails its own verify, or
whose head moved backwards (fewer records than seen before, or another hash
at a ``seq`` seen before), is flagged with its first bad ``seq``. Records
already stored are never overwritten: the hash seen first stays as evidence.

Regions that did not opt in are never called (:func:`sources`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from skylift.platform import peers
from skylift.platform.audit_export import EXPORT_PATH
from skylift.platform.db import Conn
from skylift.platform.topology import Regions

PAGE = 1000


class AggregationOff(LookupError):
    """The topology has no ``audit_aggregation``, or names another aggregating region."""


def sources(regions: Regions, here: str, only: Sequence[str] = ()) -> tuple[str, ...]:
    """The regions to pull from: opted-in ones (narrowed to ``only``); only in the aggregator."""
    aggregation = regions.audit
    if aggregation is None:
        raise AggregationOff("audit aggregation is off: the config has no `audit_aggregation`")
    if here != aggregation.region:
        raise AggregationOff(
            f"audit aggregation runs in region {aggregation.region}, not in {here}: run this "
            f"with {aggregation.region}'s platform settings"
        )
    unknown = [n for n in only if n not in aggregation.sources]
    if unknown:
        raise AggregationOff(
            f"regions {unknown} did not opt in to audit aggregation (opted in: "
            f"{', '.join(aggregation.sources)})"
        )
    return tuple(n for n in aggregation.sources if not only or n in only)


@dataclass(frozen=True)
class Seen:
    """What the aggregator holds of a region: its last stored record."""

    seq: int
    hash: str


@dataclass
class RegionCheck:
    """One region's state as the aggregator judges it."""

    region: str
    ok: bool
    records: int = 0
    head_seq: int = 0
    head_hash: str = ""
    first_bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)
    reachable: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "ok": self.ok,
            "reachable": self.reachable,
            "records": self.records,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "problems": self.problems,
        }


def rewound(seen: Seen | None, anchor: Mapping[str, Any] | None) -> str | None:
    """Pure: why the region's record at the last ``seq`` held here is not the one held, if so."""
    if seen is None or (anchor is not None and anchor.get("hash") == seen.hash):
        return None
    return (
        f"record {seen.seq}: gone, or its hash differs from the one the aggregator "
        "collected (the chain was rewritten or cut from there or before)"
    )


def judge(
    region: str, seen: Seen | None, anchor: Mapping[str, Any] | None, verdict: Mapping[str, Any]
) -> RegionCheck:
    """Pure: the region's own verify verdict plus what only the aggregator can see.

    ``seen`` is the last record stored here before this pull, ``anchor`` what the
    region now has at that ``seq`` (None: nothing). The chain alone cannot show
    records cut off its end; the aggregator's memory of the head can.
    """
    problems = [str(p) for p in verdict.get("problems", [])]
    bad: list[int] = []
    if not verdict.get("ok", False):
        first = verdict.get("first_bad_seq")
        if isinstance(first, int):
            bad.append(first)
    head_seq = int(verdict.get("head_seq", 0))
    if seen is not None:
        if head_seq < seen.seq:
            problems.append(
                f"head moved backwards: the chain now ends at record {head_seq}, the aggregator "
                f"saw record {seen.seq} (records {head_seq + 1}..{seen.seq} cut off the end)"
            )
            bad.append(head_seq + 1)
        elif (problem := rewound(seen, anchor)) is not None:
            problems.append(problem)
            bad.append(seen.seq)
    return RegionCheck(
        region=region,
        ok=not problems,
        records=int(verdict.get("records", 0)),
        head_seq=head_seq,
        head_hash=str(verdict.get("head_hash", "")),
        first_bad_seq=min(bad) if bad else None,
        problems=problems,
    )


class PullError(RuntimeError):
    """A region could not be asked (unreachable, refused, or answered nonsense)."""


@dataclass(frozen=True)
class Puller:
    """How the aggregator reaches regions: its own name, the topology, the peer key, a client."""

    here: str
    regions: Regions
    peer_key: bytes
    client: httpx.AsyncClient
    page_size: int = PAGE

    async def page(self, region: str, after: int, verify: bool) -> dict[str, Any]:
        body = json.dumps(
            {
                "from": self.here,
                "to": region,
                "after": after,
                "limit": self.page_size,
                "verify": verify,
            }
        ).encode()
        headers = {
            "content-type": "application/json",
            peers.SELECTOR: region,
            peers.SIGNATURE: peers.sign(
                self.peer_key, method="POST", path=EXPORT_PATH, body=body, now=int(time.time())
            ),
        }
        edge = self.regions.edges[region]
        try:
            answer = await self.client.post(
                f"http://{edge}{EXPORT_PATH}", content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise PullError(f"{region} unreachable through {edge}: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise PullError(f"{region} answered {answer.status_code}: {answer.text[:200]}")
        try:
            data = answer.json()
        except ValueError:
            raise PullError(f"{region} answered something that is not JSON") from None
        if not isinstance(data, dict) or data.get("region") != region:
            raise PullError(f"{region}'s export was answered by another region")
        return data


async def last_seen(conn: Conn, region: str) -> Seen | None:
    cur = await conn.execute(
        "SELECT seq, hash FROM audit_agg_records WHERE region = %s ORDER BY seq DESC LIMIT 1",
        (region,),
    )
    row = await cur.fetchone()
    return Seen(int(row["seq"]), str(row["hash"])) if row else None  # type: ignore[call-overload]


def _metadata(region: str, item: Any) -> tuple[Any, ...]:
    """One exported record as a row; anything but the exported fields is dropped here too."""
    if not isinstance(item, dict):
        raise PullError(f"{region} sent a record that is not an object")
    try:
        seq, ts = int(item["seq"]), datetime.fromisoformat(str(item["ts"]))
        event, actor, digest = str(item["event"]), item.get("actor"), str(item["hash"])
    except (KeyError, TypeError, ValueError):
        raise PullError(f"{region} sent a record without seq, ts, event and hash") from None
    if actor is not None and (not isinstance(actor, str) or len(actor) != 32):
        raise PullError(f"{region} sent an actor that is not a 32-hex pseudonym")
    if len(digest) != 64:
        raise PullError(f"{region} sent a hash that is not 64 hex")
    return (region, seq, ts, event[:200], actor, digest)


async def pull_region(conn: Conn, puller: Puller, region: str, verify: bool) -> RegionCheck:
    """Collect ``region``'s new records and (with ``verify``) its verdict; store both here.

    A region whose record at the last ``seq`` stored here is gone or changed gets
    nothing stored: new records on a rewound chain would hide the rewind from
    every later check (the next pull would start from them).
    """
    seen = await last_seen(conn, region)
    try:
        first = await puller.page(region, seen.seq if seen else 0, verify)
        anchor = first.get("anchor")
        anchor = anchor if isinstance(anchor, dict) else None
        pages = [first] if not rewound(seen, anchor) else []
        while pages and pages[-1].get("more") and pages[-1].get("records"):
            after = int(pages[-1]["records"][-1]["seq"])
            pages.append(await puller.page(region, after, False))
        rows = [_metadata(region, item) for page in pages for item in page.get("records", [])]
    except PullError as exc:
        return RegionCheck(region=region, ok=False, problems=[str(exc)], reachable=False)
    verdict = first.get("verify")
    if not verify:
        await _store(conn, rows)
        problem = rewound(seen, anchor)
        return RegionCheck(
            region=region,
            ok=problem is None,
            records=len(rows),
            problems=[problem] if problem else [],
        )
    if not isinstance(verdict, dict):
        return RegionCheck(
            region=region, ok=False, problems=[f"{region} sent no verdict"], reachable=False
        )
    check = judge(region, seen, anchor, verdict)
    async with conn.transaction():
        await _store(conn, rows)
        await conn.execute(
            "INSERT INTO audit_agg_regions (region, checked_at, ok, records, head_seq, head_hash, "
            "first_bad_seq, problems) VALUES (%s, now(), %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (region) DO UPDATE SET checked_at = now(), ok = EXCLUDED.ok, "
            "records = EXCLUDED.records, head_seq = EXCLUDED.head_seq, "
            "head_hash = EXCLUDED.head_hash, first_bad_seq = EXCLUDED.first_bad_seq, "
            "problems = EXCLUDED.problems",
            (
                region,
                check.ok,
                check.records,
                check.head_seq,
                check.head_hash,
                check.first_bad_seq,
                "\n".join(check.problems),
            ),
        )
    return check


async def _store(conn: Conn, rows: list[tuple[Any, ...]]) -> None:
    """Insert new records; a ``seq`` already held keeps the hash seen first (evidence)."""
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO audit_agg_records (region, seq, ts, event, actor, hash) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (region, seq) DO NOTHING",
            rows,
        )


async def pull_all(
    conn: Conn, puller: Puller, names: Sequence[str], verify: bool
) -> list[RegionCheck]:
    """Each named region in turn (one connection; a failing region fails alone)."""
    return [await pull_region(conn, puller, name, verify) for name in names]


@dataclass(frozen=True)
class Query:
    regions: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 1000


async def query(conn: Conn, q: Query) -> list[dict[str, Any]]:
    """Stored metadata across regions, oldest first."""
    cur = await conn.execute(
        "SELECT region, seq, ts, event, actor, hash FROM audit_agg_records "
        "WHERE (cardinality(%(regions)s::text[]) = 0 OR region = ANY(%(regions)s)) "
        "AND (cardinality(%(events)s::text[]) = 0 OR event = ANY(%(events)s)) "
        "AND (%(since)s::timestamptz IS NULL OR ts >= %(since)s) "
        "AND (%(until)s::timestamptz IS NULL OR ts < %(until)s) "
        "ORDER BY ts, region, seq LIMIT %(limit)s",
        {
            "regions": list(q.regions),
            "events": list(q.events),
            "since": q.since,
            "until": q.until,
            "limit": q.limit,
        },
    )
    return [
        {
            "region": row["region"],
            "seq": row["seq"],
            "ts": row["ts"].isoformat(),  # type: ignore[attr-defined]
            "event": row["event"],
            "actor": row["actor"],
            "hash": row["hash"],
        }
        for row in await cur.fetchall()
    ]
