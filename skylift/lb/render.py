"""Render an HAProxy configuration from a frozen spec: pure, model in, text out.

Membership changes go through the runtime API; this text only matters at
start and at a (validated, hitless) reload. It therefore carries the current
servers too, so a reload never loses a replica, and a ``structure``
fingerprint (everything except the server lines) in its header, so an adopted
HAProxy can tell whether its running structure matches what skylift wants.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

#: Header line carrying :func:`structure_fingerprint` in every rendered file.
FINGERPRINT_PREFIX = "# skylift-structure: "

#: HAProxy's standard HTTP log format (the one ``option httplog`` produces), so
#: any httplog parser reads it. Timers: %TR request, %Tw queue, %Tc connect,
#: %Tr server response, %Ta total active time (ms); then status, bytes,
#: termination state, connection counts and queues, and the request line.
LOG_FORMAT = (
    "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %{+Q}r"
)

#: How often idle keep-alive server connections are purged. HAProxy's default
#: (5s) would hold up ``del server`` of a removed replica for up to 5s after
#: its last request, because ``del server`` refuses while idle ones remain.
POOL_PURGE_DELAY = 1.0

#: Fixed timeouts that are not (yet) config options, in seconds.
TIMEOUT_HTTP_REQUEST = 10.0
TIMEOUT_HTTP_KEEP_ALIVE = 10.0
TIMEOUT_QUEUE = 10.0

#: HAProxy refuses a UNIX socket path longer than this (``sun_path`` less the
#: temporary suffix it binds under first).
SOCKET_PATH_MAX = 97
#: Parent of the short socket directories used when a state dir is too deep.
SHORT_SOCKET_PARENT = "/tmp"  # noqa: S108 (created 0700 and checked to be ours)


def socket_dir(state_dir: str) -> str:
    """Where HAProxy's admin sockets live: the state dir, unless that makes their path too long.

    Then a short private directory named after the state dir (``/tmp/skylift-<hash>``),
    which :class:`skylift.lb.process.HAProxyProcess` creates 0700 and checks is ours.
    """
    if len(state_dir) + len("/haproxy.sock") <= SOCKET_PATH_MAX:
        return state_dir
    digest = hashlib.sha256(state_dir.encode()).hexdigest()[:16]
    return f"{SHORT_SOCKET_PARENT}/skylift-{digest}"


# HAProxy accepts letters, digits, '-', '_', '.', ':' in proxy and server names.
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_ADDR_RE = re.compile(r"^\S+:\d{1,5}$")


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One backend server; ``name`` is the replica id."""

    name: str
    address: str  # HOST:PORT, an IP address (runtime-added servers are never resolved)
    weight: int = 100


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """Health check and ramp-up of every server of one backend (seconds)."""

    path: str = "/healthz"
    inter: float = 2.0
    timeout: float = 1.0
    fall: int = 3
    rise: int = 2
    slowstart: float = 5.0
    #: Healthy statuses as inclusive ranges; the controller's own probe accepts the same.
    expect: tuple[tuple[int, int], ...] = ((200, 299),)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A frontend ``fe_<name>`` bound to ``bind`` and its backend ``be_<name>``."""

    name: str
    bind: str  # HOST:PORT
    check: CheckSpec = CheckSpec()
    servers: tuple[ServerSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class HAProxySpec:
    """Everything the configuration depends on; durations in seconds."""

    state_dir: str  # absolute path; sockets, pidfile and the server-state file live here
    metrics_bind: str = "127.0.0.1:8405"
    maxconn: int = 4096
    timeout_connect: float = 2.0
    timeout_client: float = 30.0
    timeout_server: float = 30.0
    log_socket: str | None = None  # unix stream socket skylift listens on, or no logging
    services: tuple[ServiceSpec, ...] = ()


def backend_name(service: str) -> str:
    return f"be_{service}"


def frontend_name(service: str) -> str:
    return f"fe_{service}"


def expect_codes(ranges: tuple[tuple[int, int], ...]) -> str:
    """``((200, 299), (301, 301))`` -> ``200-299,301``: HAProxy's ``status`` list syntax."""
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def haproxy_time(seconds: float) -> str:
    """``2.0`` -> ``2s``, ``0.3`` -> ``300ms`` (HAProxy's default unit is ms)."""
    millis = round(seconds * 1000)
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


def server_keywords(check: CheckSpec, weight: int) -> str:
    """Every per-server keyword, spelled out.

    Used for both rendered and runtime-added servers: ``add server`` inherits
    nothing from ``default-server``, so both paths share this one string.
    """
    return (
        f"check inter {haproxy_time(check.inter)} fall {check.fall} rise {check.rise} "
        f"slowstart {haproxy_time(check.slowstart)} "
        f"pool-purge-delay {haproxy_time(POOL_PURGE_DELAY)} weight {weight}"
    )


def hard_stop_after(spec: HAProxySpec) -> float:
    """Longest life of an old worker: a full request plus one keep-alive idle period."""
    return max(spec.timeout_client, spec.timeout_server) + TIMEOUT_HTTP_KEEP_ALIVE + 5.0


def validate_spec(spec: HAProxySpec) -> None:
    """Raise ValueError for names/addresses that would break or inject config lines."""
    if not spec.state_dir.startswith("/") or any(c.isspace() for c in spec.state_dir):
        raise ValueError(f"state_dir must be an absolute path without spaces: {spec.state_dir!r}")
    if spec.log_socket is not None and (
        not spec.log_socket.startswith("/") or any(c.isspace() for c in spec.log_socket)
    ):
        raise ValueError(f"log_socket must be an absolute path without spaces: {spec.log_socket!r}")
    seen: set[str] = set()
    for addr in [spec.metrics_bind, *(s.bind for s in spec.services)]:
        if not _ADDR_RE.match(addr):
            raise ValueError(f"invalid bind address {addr!r}: write HOST:PORT")
    for svc in spec.services:
        if not _NAME_RE.match(svc.name) or svc.name in seen:
            raise ValueError(f"invalid or duplicate service name {svc.name!r}")
        seen.add(svc.name)
        if any(c.isspace() for c in svc.check.path) or not svc.check.path.startswith("/"):
            raise ValueError(f"invalid health check path {svc.check.path!r}")
        if not svc.check.expect or any(not 100 <= lo <= hi <= 599 for lo, hi in svc.check.expect):
            raise ValueError(f"invalid expected statuses {svc.check.expect!r} in {svc.name}")
        names: set[str] = set()
        for server in svc.servers:
            if not _NAME_RE.match(server.name) or server.name in names:
                raise ValueError(f"invalid or duplicate server name {server.name!r} in {svc.name}")
            names.add(server.name)
            if not _ADDR_RE.match(server.address):
                raise ValueError(f"invalid server address {server.address!r}: write HOST:PORT")
            if not 0 <= server.weight <= 256:
                raise ValueError(f"server weight {server.weight} outside 0-256")


def structure_fingerprint(spec: HAProxySpec) -> str:
    """Hash of the config without its server lines: changes only when a reload is needed."""
    bare = replace(spec, services=tuple(replace(s, servers=()) for s in spec.services))
    return hashlib.sha256(_body(bare).encode()).hexdigest()[:16]


def read_fingerprint(config_text: str) -> str | None:
    """The fingerprint recorded in a rendered file, or None for a foreign file."""
    for line in config_text.splitlines()[:5]:
        if line.startswith(FINGERPRINT_PREFIX):
            return line.removeprefix(FINGERPRINT_PREFIX).strip()
    return None


def render_config(spec: HAProxySpec) -> str:
    """The complete haproxy.cfg for ``spec``."""
    validate_spec(spec)
    header = (
        "# Generated by skylift: edits are overwritten at the next reload.\n"
        f"{FINGERPRINT_PREFIX}{structure_fingerprint(spec)}\n"
    )
    return header + _body(spec)


def _body(spec: HAProxySpec) -> str:
    out: list[str] = []
    out += _global(spec)
    if spec.log_socket:
        out += log_ring(spec.log_socket)
    out += _defaults(spec)
    out += _metrics_frontend(spec)
    for svc in spec.services:
        out += _service(svc)
    return "\n".join(out) + "\n"


def _global(spec: HAProxySpec) -> list[str]:
    d = spec.state_dir
    lines = [
        "",
        "global",
        "    master-worker",
        f"    pidfile {d}/haproxy.pid",
        # mode 600: the admin socket can add servers and read traffic stats.
        f"    stats socket {socket_dir(d)}/haproxy.sock mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        # Runtime state (maint/drain, health, weights) is dumped here before a
        # reload and loaded back by the new worker.
        f"    server-state-file {d}/server-state",
        f"    maxconn {spec.maxconn}",
        # An old worker lives on after a reload while its connections finish;
        # bound that, so reloads never pile up processes.
        f"    hard-stop-after {haproxy_time(hard_stop_after(spec))}",
    ]
    if spec.log_socket:
        lines.append(f"    log ring@{LOG_RING} local0")
    return lines


LOG_RING = "skylift_log"
LOG_RING_SIZE = 2 * 1024 * 1024
"""Bytes of log lines HAProxy holds while skylift reads slowly or restarts (~10k lines)."""


def log_ring(log_socket: str) -> list[str]:
    """The ring that carries request log lines to skylift over a unix stream.

    Why not ``log <unix datagram socket>``: a datagram socket's queue holds
    ``net.unix.max_dgram_qlen`` lines (10 by default), so a burst of requests
    ending together while the controller's loop is busy loses lines and
    biases p95. A ring buffers them in HAProxy (never blocking a request: when
    full, the oldest lines go) and forwards them over one stream connection,
    which HAProxy re-opens by itself when skylift restarts.
    """
    return [
        "",
        f"ring {LOG_RING}",
        "    format rfc3164",
        "    maxlen 2048",
        f"    size {LOG_RING_SIZE}",
        "    timeout connect 2s",
        "    timeout server 1h",
        f"    server skylift unix@{log_socket}",
    ]


def _defaults(spec: HAProxySpec) -> list[str]:
    lines = ["", "defaults", "    mode http"]
    if spec.log_socket:
        lines += ["    log global", f'    log-format "{LOG_FORMAT}"', "    option dontlognull"]
    lines += [
        f"    timeout connect {haproxy_time(spec.timeout_connect)}",
        f"    timeout client {haproxy_time(spec.timeout_client)}",
        f"    timeout server {haproxy_time(spec.timeout_server)}",
        f"    timeout http-request {haproxy_time(TIMEOUT_HTTP_REQUEST)}",
        f"    timeout http-keep-alive {haproxy_time(TIMEOUT_HTTP_KEEP_ALIVE)}",
        f"    timeout queue {haproxy_time(TIMEOUT_QUEUE)}",
        "    load-server-state-from-file global",
        # Keep-alive on both sides (see docs/haproxy.md): idle server
        # connections are reused only where safe, and maint purges them.
        "    option http-keep-alive",
        "    http-reuse safe",
        # At a reload the old worker would close idle client connections at
        # once, racing with a request the client is sending on one; instead
        # it answers that request with "Connection: close" (measured: without
        # it ~1 in 3 reloads under load cost a request).
        "    option idle-close-on-response",
        "    option forwardfor",
        # A dying replica must not cost a request: retry on a failed connect,
        # a connection closed without answer, or a response timeout, and let
        # the retry go to another server.
        "    retries 3",
        "    retry-on conn-failure empty-response response-timeout",
        "    option redispatch 1",
        # HAProxy replays only a request it held whole when it sent it: wait
        # for the body (up to one buffer) so a POST is retried too (measured:
        # without it a POST whose body came after its headers got a 502, or
        # on a kept-alive connection a silent close, when its replica died).
        "    option http-buffer-request",
    ]
    return lines


def _metrics_frontend(spec: HAProxySpec) -> list[str]:
    return [
        "",
        "frontend prometheus",
        f"    bind {spec.metrics_bind}",
        "    http-request set-log-level silent",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    http-request return status 404",
    ]


def _service(svc: ServiceSpec) -> list[str]:
    c = svc.check
    lines = [
        "",
        f"frontend {frontend_name(svc.name)}",
        f"    bind {svc.bind}",
        f"    default_backend {backend_name(svc.name)}",
        "",
        f"backend {backend_name(svc.name)}",
        # roundrobin is dynamic: required by `add server` on the runtime API.
        "    balance roundrobin",
        f"    option httpchk GET {c.path}",
        f"    http-check expect status {expect_codes(c.expect)}",
        f"    timeout check {haproxy_time(c.timeout)}",
        f"    default-server inter {haproxy_time(c.inter)} fall {c.fall} rise {c.rise} "
        f"slowstart {haproxy_time(c.slowstart)} pool-purge-delay {haproxy_time(POOL_PURGE_DELAY)}",
    ]
    lines += [f"    server {s.name} {s.address} check weight {s.weight}" for s in svc.servers]
    return lines
