"""Run one region's edge HAProxy and keep it matching its :class:`EdgeSpec`.

The process side is :class:`skylift.lb.process.HAProxyProcess` (detached
master-worker, validated configs, hitless reloads, adoption after a restart).
What changes often goes through the runtime API instead of a reload: map
files (country -> region, extra CIDRs, the latency choice) are replaced
atomically with ``prepare map`` / ``add map @VER`` / ``commit map @VER``.
A reload happens only when the config text or a key file changed (HAProxy
reads keys at start only), and the health state of every region survives it
through the server-state file.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import structlog

from skylift.edge.render import LATENCY_KEY, LATENCY_MAP, EdgeFiles, render_edge
from skylift.edge.spec import EdgeSpec
from skylift.lb.errors import HAProxyError, RuntimeAPIError
from skylift.lb.process import HAProxyProcess, write_private
from skylift.lb.runtime import RuntimeClient
from skylift.lb.stats import ServerState

log = structlog.get_logger(__name__)

_VERSION_RE = re.compile(r"New version created:\s*(\d+)")
CHECK_BACKENDS = ("be_check_local", "be_check_peers")
#: What the edge's operations raise, for callers kept apart from skylift.lb (the CLI).
EdgeError = HAProxyError


def _write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, text)


def _stamp(path: Path | None) -> tuple[int, int] | None:
    """What tells a rebuilt geoip file apart (HAProxy reads it at load only)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class Edge:
    """One region's edge HAProxy: ``start``, ``apply`` a new spec, ``stop``."""

    def __init__(self, spec: EdgeSpec, *, haproxy_binary: str = "haproxy") -> None:
        self.spec = spec
        self.process = HAProxyProcess(spec.state_dir, haproxy_binary)
        self.runtime = RuntimeClient(self.process.paths.stats_socket)
        self._files: EdgeFiles | None = None
        self._geoip: tuple[int, int] | None = None
        self._latency_best: str | None = None
        self._lock = asyncio.Lock()

    def _materialise(self, files: EdgeFiles) -> dict[str, str]:
        """Rendered files plus the runner's own live state (the latency choice)."""
        out = dict(files.files)
        if self._latency_best in self.spec.topology:
            out[LATENCY_MAP] = f"{LATENCY_KEY} {self._latency_best}\n"
        return out

    async def start(self) -> None:
        """Start the edge (or adopt the one already running here and bring it up to date)."""
        async with self._lock:
            await self._start_locked()

    async def _start_locked(self) -> None:
        files = render_edge(self.spec)
        self.process.prepare_state_dir()
        await asyncio.to_thread(_write_files, self.spec.state_dir, self._materialise(files))
        adopted = await self.process.start(files.config)
        if adopted:
            await self._reload(files)
        self._files = files
        self._geoip = await asyncio.to_thread(_stamp, self.spec.geoip_map)
        log.info("edge.started", region=self.spec.region, listen=self.spec.listen)

    async def _reload(self, files: EdgeFiles) -> None:
        before: str | None
        try:
            before = await self.runtime.show_servers_state()
        except RuntimeAPIError:
            before = None  # health restarts from the checks: safe, just slower
        await self.process.reload(files.config, before=before)

    async def apply(self, spec: EdgeSpec) -> None:
        """Make the running edge match ``spec``: maps live, a reload only when needed.

        An edge found dead is started again with ``spec`` (each call is a
        reconcile step, so the caller can simply call it again after an error).
        """
        async with self._lock:
            if self._files is None:
                raise RuntimeError("edge not started")
            if await self.process.running_pid() is None:
                # The edge died (killed, host rebooted): level-triggered, start it again.
                self.spec = spec
                log.warning("edge.revived", region=spec.region)
                await self._start_locked()
                return
            old = self._files
            files = render_edge(spec)
            self.spec = spec
            geoip = await asyncio.to_thread(_stamp, spec.geoip_map)
            content = self._materialise(files)
            if files.reload_fingerprint != old.reload_fingerprint or geoip != self._geoip:
                await asyncio.to_thread(_write_files, spec.state_dir, content)
                await self._reload(files)
                log.info("edge.reloaded", region=spec.region)
            else:
                changed = {
                    rel: text
                    for rel, text in content.items()
                    if rel in files.maps and old.files.get(rel) != files.files.get(rel)
                }
                await asyncio.to_thread(_write_files, spec.state_dir, changed)
                for rel, text in changed.items():
                    await self._replace_map(rel, text)
                if changed:
                    log.info("edge.maps_updated", region=spec.region, maps=sorted(changed))
            self._files = files
            self._geoip = geoip
            # Drop key files of kids no longer published (their tokens now fail).
            keys_dir = spec.state_dir / "keys"
            wanted = {Path(rel).name for rel in files.files if rel.startswith("keys/")}
            for path in await asyncio.to_thread(lambda: list(keys_dir.glob("*.pem"))):
                if path.name not in wanted:
                    path.unlink(missing_ok=True)

    async def _replace_map(self, rel: str, text: str) -> None:
        """Swap a whole map atomically through the runtime API."""
        path = self.spec.state_dir / rel
        answer = await self.runtime.command(f"prepare map {path}")
        found = _VERSION_RE.search(answer)
        if found is None:
            raise RuntimeAPIError(f"prepare map {path}", answer)
        version = found.group(1)
        for line in text.splitlines():
            key, _, value = line.strip().partition(" ")
            if not key:
                continue
            cmd = f"add map @{version} {path} {key} {value.strip()}"
            reply = (await self.runtime.command(cmd)).strip()
            if reply:
                raise RuntimeAPIError(cmd, reply)
        cmd = f"commit map @{version} {path}"
        reply = (await self.runtime.command(cmd)).strip()
        if reply:
            raise RuntimeAPIError(cmd, reply)

    async def purge_cache(self) -> bool:
        """Empty the edge cache: HAProxy 2.6 has no purge command, a reload starts a new one.

        Reloads the config the edge already runs (so a caller without the token
        keys, the CLI, changes nothing else); region health survives through the
        server-state file. False when no edge runs in this state dir.
        """
        async with self._lock:
            if await self.process.running_pid() is None:
                return False
            try:
                before: str | None = await self.runtime.show_servers_state()
            except RuntimeAPIError:
                before = None  # health restarts from the checks: safe, just slower
            await self.process.reload_installed(before)
            log.info("edge.cache_purged", region=self.spec.region)
            return True

    async def set_latency_best(self, region: str) -> None:
        """Anonymous requests in ``latency`` mode go to ``region`` from now on (live)."""
        if region not in self.spec.topology:
            raise ValueError(f"unknown region {region!r}")
        async with self._lock:
            if region == self._latency_best:
                return
            self._latency_best = region
            text = f"{LATENCY_KEY} {region}\n"
            await asyncio.to_thread(_write_files, self.spec.state_dir, {LATENCY_MAP: text})
            await self._replace_map(LATENCY_MAP, text)
            log.info("edge.latency_best", region=self.spec.region, best=region)

    @property
    def latency_best(self) -> str | None:
        return self._latency_best

    async def region_health(self) -> dict[str, bool]:
        """Region -> up, as this edge's health checks see it right now."""
        out: dict[str, bool] = {}
        for backend in CHECK_BACKENDS:
            for row in await self.runtime.show_stat(backend):
                if row.name in self.spec.topology:
                    out[row.name] = row.state == ServerState.UP
        return out

    async def stop(self) -> None:
        """Soft-stop: in-flight requests finish, then the edge exits."""
        async with self._lock:
            await self.process.stop()
            self._files = None
