"""The geo-DNS front's loop: probe the edges, choose the answers, rewrite, reload PowerDNS.

Each round (``dns.check.interval``) checks every region's edge at
``/_skylift/region-health``, the path peer edges check: 200 only while the
region's own pool is healthy, so the front reuses what each region's edge
already knows of its region (a refused connection or a timeout counts as
down too: clients could not reach that edge either). :mod:`skylift.dns.health`
applies fall/rise; :func:`skylift.dns.answers.choose_answers` picks the
answers; only when they change is the zone rewritten (atomically) and
PowerDNS reloaded. The time from a region's first failed check to PowerDNS
serving the new answer is logged and kept in ``dns.json`` (``skylift dns
status``); clients whose resolvers cached the old answer follow at most
``dns.ttl`` later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import structlog

from skylift.dns.answers import GeoAnswers, choose_answers
from skylift.dns.health import Flip, RegionHealth, healthy, step
from skylift.dns.mmdb import build_mmdb, mmdb_fresh
from skylift.dns.pdns import PowerDNS, PowerDNSError
from skylift.dns.plan import DnsPlan
from skylift.dns.render import render_pdns_conf, render_zone
from skylift.edge.render import REGION_HEALTH_PATH

log = structlog.get_logger(__name__)
KEEP_CHANGES = 20


def write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` through a temporary file and a rename; False if unchanged.

    Readers (PowerDNS at its reload) see the old file or the new one. No fsync: it
    cost up to hundreds of ms per rewrite on a busy disk, and after a crash ``serve``
    writes every file again before it starts PowerDNS.
    """
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def next_serial(previous: int, now: float) -> int:
    """SOA serial: the clock's seconds, always above the previous one."""
    return max(previous + 1, int(now))


def prepare_files(plan: DnsPlan, answers: GeoAnswers, serial: int) -> bool:
    """Write pdns.conf, the zone and (if stale) the country database; True if it was rebuilt."""
    plan.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    rebuilt = False
    if not mmdb_fresh(plan.geoip_map, plan.extra_countries, plan.mmdb):
        stats = build_mmdb(plan.geoip_map, plan.extra_countries, plan.mmdb)
        log.info("dns.mmdb_built", networks=stats.networks, skipped=stats.skipped)
        rebuilt = True
    write_atomic(plan.pdns_conf, render_pdns_conf(plan))
    write_atomic(plan.zones_file, render_zone(plan, answers, serial))
    return rebuilt


class GeoDnsFront:
    """Keeps PowerDNS's answers matching the regions' health."""

    def __init__(
        self,
        plan: DnsPlan,
        server: PowerDNS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.server = server
        self.clock = clock
        self.book: dict[str, RegionHealth] = {r: RegionHealth() for r in plan.topology.names}
        self.answers = choose_answers(plan.topology, healthy(self.book))
        self.serial = 0
        self.changes: list[dict[str, Any]] = []
        self.pending = False  # a rewrite whose reload failed: retried next round

    async def start(self) -> None:
        """Write every file for the all-healthy answers and start PowerDNS on them."""
        self.serial = next_serial(self.serial, time.time())
        await asyncio.to_thread(prepare_files, self.plan, self.answers, self.serial)
        await self.server.start()
        await self._write_state()

    async def probe(self, client: httpx.AsyncClient) -> dict[str, bool]:
        """One round of checks, every region at once; True where the edge answered 200."""
        names = list(self.plan.probes)
        results = await asyncio.gather(
            *(self._probe_one(client, self.plan.probes[n]) for n in names)
        )
        return dict(zip(names, results, strict=True))

    async def _probe_one(self, client: httpx.AsyncClient, target: str) -> bool:
        try:
            response = await client.get(f"http://{target}{REGION_HEALTH_PATH}")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def round(self, client: httpx.AsyncClient) -> dict[str, Any] | None:
        """Probe, decide, and rewrite + reload if the answers changed; the change, if any."""
        self.server.check_alive()
        results = await self.probe(client)
        self.book, flips = step(
            self.book, results, fall=self.plan.fall, rise=self.plan.rise, now=self.clock()
        )
        if not flips and not self.pending:
            return None
        return await self.apply(flips)

    async def apply(self, flips: list[Flip]) -> dict[str, Any] | None:
        """The regions in ``flips`` changed state: serve the answers that follow from it."""
        answers = choose_answers(self.plan.topology, healthy(self.book))
        for flip in flips:
            log.info("dns.region", region=flip.region, up=flip.up)
        before = self.answers.targets()
        if answers.targets() == before and not self.pending:
            self.answers = answers  # same edges, new reasons (e.g. a whole zone down)
            await self._write_state()
            return None
        started = self.clock()
        self.serial = next_serial(self.serial, time.time())
        rebuilt = await asyncio.to_thread(prepare_files, self.plan, answers, self.serial)
        written = self.clock()
        try:
            reload_s = await self.server.reload()
        except PowerDNSError as exc:
            self.pending = True
            log.error("dns.reload_failed", error=str(exc), retry_in=self.plan.interval)
            return None
        self.pending = False
        done = self.clock()
        moved = {c: r for c, r in answers.targets().items() if before.get(c) != r}
        self.answers = answers
        change = {
            "at": time.time(),
            "serial": self.serial,
            "regions": {f.region: "up" if f.up else "down" for f in flips},
            "moved": moved,
            "since_first_check_s": round(done - min(f.first_seen for f in flips), 4)
            if flips
            else None,
            "rewrite_s": round(written - started, 4),
            "reload_s": round(reload_s, 4),
            "mmdb_rebuilt": rebuilt,
        }
        self.changes = [*self.changes, change][-KEEP_CHANGES:]
        log.info("dns.rewritten", **change)
        await self._write_state()
        return change

    async def refresh_database(self) -> bool:
        """Rebuild the country database if the edge's map changed; reload; True if it did."""
        fresh = await asyncio.to_thread(
            mmdb_fresh, self.plan.geoip_map, self.plan.extra_countries, self.plan.mmdb
        )
        if fresh:
            return False
        await asyncio.to_thread(prepare_files, self.plan, self.answers, self.serial)
        try:
            await self.server.reload()
        except PowerDNSError as exc:
            self.pending = True
            log.error("dns.reload_failed", error=str(exc), retry_in=self.plan.interval)
        return True

    def state(self, running: bool = True) -> dict[str, Any]:
        return {
            "running": running,
            "pid": os.getpid(),
            "pdns_pid": self.server.pid,
            "zone": self.plan.zone,
            "listen": self.plan.listen,
            "ttl": self.plan.ttl,
            "serial": self.serial,
            "health": {r: s.up for r, s in self.book.items()},
            "answers": self.answers.as_dict(),
            "changes": self.changes,
        }

    async def _write_state(self, running: bool = True) -> None:
        text = json.dumps(self.state(running), indent=2, sort_keys=True)
        await asyncio.to_thread(write_atomic, self.plan.state_file, text)

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds every ``interval`` until ``stop`` is set; PowerDNS is stopped on the way out."""
        timeout = httpx.Timeout(self.plan.timeout)
        try:
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
                while not stop.is_set():
                    begun = self.clock()
                    await self.round(client)
                    await self.refresh_database()
                    wait = max(0.0, self.plan.interval - (self.clock() - begun))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
        finally:
            await self.server.stop()
            await self._write_state(running=False)
