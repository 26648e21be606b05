"""The balancer the controller drives: HAProxy membership through its runtime API.

Membership changes (add, drain, remove) never reload HAProxy: they go through
the admin socket and are written into the config file on disk (without a
reload), so any later reload — ours or an operator's — keeps them. Structural
changes (services, ports, timeouts) go through render -> ``haproxy -c`` ->
hitless reload, with the runtime state dumped to the server-state file first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from skylift.config import HAProxySettings, Service
from skylift.lb.errors import NoSuchServer, RuntimeAPIError
from skylift.lb.process import HAProxyProcess
from skylift.lb.render import (
    CheckSpec,
    HAProxySpec,
    ServerSpec,
    ServiceSpec,
    backend_name,
    read_fingerprint,
    render_config,
    structure_fingerprint,
)
from skylift.lb.runtime import RuntimeClient
from skylift.lb.stats import ServerState, StatRow
from skylift.model import Replica

log = structlog.get_logger(__name__)

DEFAULT_WEIGHT = 100
_POLL = 0.1


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What HAProxy says about one replica right now."""

    replica_id: str
    state: ServerState  # up / down / maint / drain / nolb
    sessions: int  # current sessions (in flight)
    queue: int  # requests waiting for a connection slot
    check_status: str  # last check result code: L7OK, L4CON, L7STS, ...
    check_desc: str  # human text of the last check, e.g. "Connection refused"
    last_check: str  # HAProxy's last check detail (last_chk)
    weight: int
    address: str
    raw_status: str  # HAProxy's status text, e.g. "UP 1/3" while failing

    @property
    def is_up(self) -> bool:
        """Passing checks and balanced (``UP``, including ``UP 1/3`` still within ``fall``)."""
        return self.state is ServerState.UP

    @property
    def is_down(self) -> bool:
        """Failed ``fall`` checks (``DOWN``, including ``DOWN 1/2`` on its way back)."""
        return self.state is ServerState.DOWN

    @classmethod
    def from_row(cls, row: StatRow) -> ServerStatus:
        return cls(
            replica_id=row.name,
            state=row.state,
            sessions=row.scur,
            queue=row.qcur,
            check_status=row.check_status,
            check_desc=row.check_desc,
            last_check=row.last_chk,
            weight=row.weight,
            address=row.addr,
            raw_status=row.status,
        )


def check_spec(service: Service) -> CheckSpec:
    h = service.health
    return CheckSpec(
        path=h.path,
        inter=h.interval,
        timeout=h.timeout,
        fall=h.fall,
        rise=h.rise,
        slowstart=service.slowstart,
        expect=h.status_ranges,
    )


def build_spec(
    state_dir: Path,
    settings: HAProxySettings,
    services: Mapping[str, Service],
    members: Mapping[str, Mapping[str, ServerSpec]],
    log_socket: Path | None,
) -> HAProxySpec:
    """Pure: skylift config + current membership -> render input."""
    return HAProxySpec(
        state_dir=str(state_dir),
        metrics_bind=settings.metrics,
        maxconn=settings.maxconn,
        timeout_connect=settings.timeout_connect,
        timeout_client=settings.timeout_client,
        timeout_server=settings.timeout_server,
        log_socket=str(log_socket) if log_socket else None,
        services=tuple(
            ServiceSpec(
                name=name,
                bind=svc.frontend,
                check=check_spec(svc),
                servers=tuple(sorted(members.get(name, {}).values(), key=lambda s: s.name)),
            )
            for name, svc in sorted(services.items())
        ),
    )


class HAProxyBalancer:
    """One local HAProxy balancing every service; no I/O until :meth:`start`."""

    def __init__(
        self,
        state_dir: Path,
        settings: HAProxySettings,
        log_socket: Path | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.state_dir = state_dir
        self.settings = settings
        self.log_socket = log_socket
        self.process = HAProxyProcess(state_dir, settings.binary, timeout=timeout)
        self.runtime = RuntimeClient(self.process.paths.stats_socket, timeout=timeout)
        self._services: dict[str, Service] = {}
        self._members: dict[str, dict[str, ServerSpec]] = {}
        self._lock = asyncio.Lock()

    # -- structure -----------------------------------------------------------

    def _spec(self) -> HAProxySpec:
        return build_spec(
            self.state_dir.absolute(),
            self.settings,
            self._services,
            self._members,
            self.log_socket,
        )

    async def start(
        self, services: Mapping[str, Service], replicas: Mapping[str, Sequence[Replica]]
    ) -> None:
        """Start HAProxy, or adopt the one already serving this state dir.

        When adopting, servers HAProxy already has are kept (the controller
        removes the ones it does not want), missing replicas are added through
        the runtime API, and a validated hitless reload happens only if the
        rendered structure differs from what runs.
        """
        async with self._lock:
            self._services = dict(services)
            self._members = {
                name: {
                    r.id: ServerSpec(r.id, r.address, DEFAULT_WEIGHT)
                    for r in replicas.get(name, ())
                }
                for name in services
            }
            adopted = await self.process.start(render_config(self._spec()))
            if not adopted:
                return
            # `show servers state` gives the configured (user) weight, not the
            # effective one that slowstart or drain lower for a while.
            running = await self.runtime.servers_state()
            wanted = {svc: dict(members) for svc, members in self._members.items()}
            for row in running:
                svc = row.backend.removeprefix("be_")
                if row.backend.startswith("be_") and svc in self._members:
                    self._members[svc].setdefault(
                        row.name, ServerSpec(row.name, row.address, row.weight)
                    )
            spec = self._spec()
            current = read_fingerprint(self._read_config())
            if current != structure_fingerprint(spec):
                log.info("haproxy.structure_changed", running=current)
                state = await self.runtime.show_servers_state()
                await self.process.reload(render_config(spec), before=state)
                return
            have = {(row.backend, row.name) for row in running}
            for svc, members in wanted.items():
                for server in members.values():
                    if (backend_name(svc), server.name) not in have:
                        await self._add_runtime(svc, server)
            self.process.write_config_unchecked(render_config(spec))

    def _read_config(self) -> str:
        try:
            return self.process.paths.config.read_text()
        except OSError:
            return ""

    async def reload(self, services: Mapping[str, Service] | None = None) -> None:
        """Re-render (optionally with new services) and reload hitlessly, keeping membership."""
        async with self._lock:
            if services is not None:
                self._services = dict(services)
                self._members = {n: self._members.get(n, {}) for n in services}
            state = await self.runtime.show_servers_state()
            await self.process.reload(render_config(self._spec()), before=state)

    async def revive(self) -> bool:
        """Start HAProxy again, with the membership skylift knows, if its master died.

        Returns True when it had to be started, False when one still runs here
        (its stats socket may just be slow or gone: nothing to start then).
        Servers start from the rendered config; runtime states (held, drained)
        are re-applied by the controller's next tick.
        """
        async with self._lock:
            if not self._services or await self.process.running_pid() is not None:
                return False
            adopted = await self.process.start(render_config(self._spec()))
        if not adopted:
            log.warning("haproxy.revived", members=sum(len(m) for m in self._members.values()))
        return not adopted

    async def stop(self) -> None:
        """Stop HAProxy (``skylift down``): in-flight requests finish first."""
        async with self._lock:
            await self.process.stop()

    # -- membership ------------------------------------------------------------

    def _service(self, service: str) -> Service:
        try:
            return self._services[service]
        except KeyError:
            raise KeyError(f"unknown service {service!r}: not passed to start()") from None

    async def _add_runtime(self, service: str, server: ServerSpec) -> None:
        """add (maint) -> health on -> drain -> health down -> ready.

        Leaving maint, HAProxy assumes a server UP before any check ran. It
        leaves maint into drain (no traffic), is forced down, then made ready:
        it must pass `rise` checks before a single request reaches it.
        (Weight 0 instead of drain would change the server's initial weight,
        and the server-state file then refuses its state at a reload.)
        """
        backend = backend_name(service)
        check = check_spec(self._service(service))
        try:
            await self.runtime.add_server(
                backend, server.name, server.address, check, server.weight
            )
        except RuntimeAPIError as exc:
            if "already exists" not in exc.answer.lower():
                raise
            existing = {r.name: r for r in await self.runtime.show_stat(backend)}
            row = existing.get(server.name)
            if row is None or row.addr != server.address:
                raise
            if row.state is not ServerState.MAINT:
                return  # already added and enabled: idempotent
        await self.runtime.enable_health(backend, server.name)
        await self.runtime.set_state(backend, server.name, "drain")
        await self.runtime.set_health(backend, server.name, "down")
        await self.runtime.set_state(backend, server.name, "ready")

    def _persist(self) -> None:
        self.process.write_config_unchecked(render_config(self._spec()))

    async def add(self, service: str, replica: Replica, weight: int = DEFAULT_WEIGHT) -> None:
        """Add a replica: created in maint, health checks on, then enabled; checks decide UP."""
        self._service(service)
        server = ServerSpec(replica.id, replica.address, weight)
        async with self._lock:
            await self._add_runtime(service, server)
            self._members.setdefault(service, {})[replica.id] = server
            self._persist()
        log.info("haproxy.server_added", service=service, replica=replica.id, addr=server.address)

    async def drain(self, service: str, replica_id: str) -> None:
        """No new requests; in-flight ones finish; health checks go on."""
        self._service(service)
        await self.runtime.set_state(backend_name(service), replica_id, "drain")
        log.info("haproxy.server_draining", service=service, replica=replica_id)

    async def ready(self, service: str, replica_id: str) -> None:
        """Undo :meth:`drain` or :meth:`hold`: back in rotation."""
        self._service(service)
        await self.runtime.set_state(backend_name(service), replica_id, "ready")
        log.info("haproxy.server_ready", service=service, replica=replica_id)

    async def hold(self, service: str, replica_id: str) -> None:
        """MAINT: no traffic, no checks, until :meth:`ready` (an operator's hold)."""
        self._service(service)
        await self.runtime.set_state(backend_name(service), replica_id, "maint")
        log.info("haproxy.server_held", service=service, replica=replica_id)

    async def remove(
        self, service: str, replica_id: str, drain_timeout: float | None = None
    ) -> None:
        """Maint, wait for its sessions to end (then cut them), delete; absent is fine."""
        svc = self._service(service)
        backend = backend_name(service)
        wait = svc.drain_timeout if drain_timeout is None else drain_timeout
        try:
            await self.runtime.set_state(backend, replica_id, "maint")
            await self._delete_when_idle(backend, replica_id, wait)
        except NoSuchServer:
            pass
        async with self._lock:
            self._members.get(service, {}).pop(replica_id, None)
            self._persist()
        log.info("haproxy.server_removed", service=service, replica=replica_id)

    async def _delete_when_idle(self, backend: str, name: str, wait: float) -> None:
        """Poll until no session or queue, then ``del server``; cut sessions after ``wait``."""
        deadline = time.monotonic() + wait
        cut = False
        while True:
            rows = {r.name: r for r in await self.runtime.show_stat(backend)}
            row = rows.get(name)
            if row is None:
                return
            refusal: RuntimeAPIError | None = None
            if row.scur == 0 and row.qcur == 0:
                try:
                    await self.runtime.del_server(backend, name)
                    return
                except NoSuchServer:
                    return
                except RuntimeAPIError as exc:
                    refusal = exc  # idle keep-alive connections not closed yet
            if time.monotonic() >= deadline:
                if cut:
                    raise refusal or RuntimeAPIError(
                        f"del server {backend}/{name}", f"{row.scur} sessions after {wait}s"
                    )
                log.warning(
                    "haproxy.drain_timeout", backend=backend, server=name, sessions=row.scur
                )
                await self.runtime.shutdown_sessions(backend, name)
                cut = True
                deadline = time.monotonic() + 2.0
            await asyncio.sleep(_POLL)

    # -- observation -------------------------------------------------------------

    async def status(self, service: str) -> dict[str, ServerStatus]:
        """Every server of the service's backend, keyed by replica id."""
        self._service(service)
        rows = await self.runtime.show_stat(backend_name(service))
        return {row.name: ServerStatus.from_row(row) for row in rows}

    async def sessions(self, service: str, replica_id: str) -> int:
        """Current sessions of one replica; :class:`NoSuchServer` when HAProxy lacks it."""
        found = (await self.status(service)).get(replica_id)
        if found is None:
            raise NoSuchServer(f"show stat {backend_name(service)}", "No such server.")
        return found.sessions

    def members(self, service: str) -> list[str]:
        """Replica ids this balancer believes are in the backend (what a reload keeps)."""
        return sorted(self._members.get(service, {}))
