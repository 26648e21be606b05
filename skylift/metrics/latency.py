"""p95 latency per service from HAProxy's request logs.

HAProxy writes one line per request to a ring buffer that it forwards over
a unix stream socket skylift listens on (``log ring@...``, see
``skylift.lb.render.log_ring``); a :class:`LogReceiver` parses each line and
records its latency in the service's sliding-window quantiles; a
:class:`LatencySource` answers the collector from there. A request never
waits for its log line: while skylift reads slowly (or restarts) the lines
wait in the ring, and only when the ring is full are the oldest dropped, so
latency is then measured on a sample of the requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from skylift.metrics.base import SourceError
from skylift.metrics.haproxy_log import parse_line
from skylift.metrics.haproxy_stats import Traffic
from skylift.metrics.quantiles import SlidingQuantiles

MAX_LINE = 64 * 1024
"""Longest partial line kept (HAProxy's ring sends at most 2048 bytes a line)."""


@dataclass(slots=True)
class LogCounters:
    """What the receiver saw since it started (for status and debugging)."""

    lines: int = 0
    requests: int = 0
    not_requests: int = 0  # notices, or lines in another format
    unknown_backend: int = 0


class LatencyTracker:
    """Per-service sliding-window quantiles, fed by backend name.

    ``backends`` maps HAProxy backend names to service names (``be_web`` ->
    ``web``); lines of other backends are counted and ignored.
    """

    def __init__(
        self,
        backends: Mapping[str, str],
        window: float = 60.0,
        slots: int = 12,
        relative_error: float = 0.02,
    ) -> None:
        self._service_of = dict(backends)
        self.window = window - window / slots
        """The shortest span the quantiles cover (a sub-window ages out at once)."""
        self._shape = (window, slots, relative_error)
        self._sketches = {
            service: SlidingQuantiles(window, slots, relative_error)
            for service in set(self._service_of.values())
        }
        self.counters = LogCounters()

    def follow(self, backends: Mapping[str, str]) -> None:
        """Services came or went (``skylift apply``): the others keep their window."""
        self._service_of = dict(backends)
        wanted = set(self._service_of.values())
        self._sketches = {
            service: self._sketches.get(service) or SlidingQuantiles(*self._shape)
            for service in wanted
        }

    def feed(self, line: bytes, now: float) -> None:
        """Parse one log line and record its latency (the receiver's hot path)."""
        counters = self.counters
        counters.lines += 1
        record = parse_line(line)
        if record is None:
            counters.not_requests += 1
            return
        service = self._service_of.get(record.backend)
        if service is None:
            counters.unknown_backend += 1
            return
        counters.requests += 1
        self._sketches[service].record(record.active_ms / 1000.0, now)

    def quantile(self, service: str, q: float, now: float) -> float | None:
        sketch = self._sketches.get(service)
        return None if sketch is None else sketch.quantile(q, now)

    def count(self, service: str, now: float) -> int:
        sketch = self._sketches.get(service)
        return 0 if sketch is None else sketch.count(now)


class LogReceiver:
    """Feeds every log line to a tracker, stamped with ``clock()``.

    Shared by HAProxy's connections (one per worker; an old worker keeps its
    own until it exits). ``clock`` must be the collector's clock
    (``time.monotonic`` in the controller): the receive time is when the
    request ended, near enough (lines HAProxy held while skylift restarted
    count as now, once).
    """

    def __init__(
        self, tracker: LatencyTracker, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.tracker = tracker
        self.clock = clock
        self.error: OSError | None = None
        self.closed = asyncio.Event()
        self.connections: set[asyncio.Transport] = set()

    def connection(self) -> asyncio.Protocol:
        return _LogConnection(self)

    def pause(self) -> None:
        """Stop reading (tests): HAProxy's ring holds the lines meanwhile."""
        for transport in self.connections:
            transport.pause_reading()

    def resume(self) -> None:
        for transport in self.connections:
            transport.resume_reading()


class _LogConnection(asyncio.Protocol):
    """One HAProxy worker's stream of newline-terminated lines."""

    def __init__(self, receiver: LogReceiver) -> None:
        self.receiver = receiver
        self.partial = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.receiver.connections.add(self.transport)

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > MAX_LINE:  # not HAProxy's ring (maxlen 2048): drop, stay alive
            self.partial = b""
        receiver = self.receiver
        now = receiver.clock()
        for line in lines:
            if line:
                receiver.tracker.feed(line, now)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.receiver.connections.discard(self.transport)
        if isinstance(exc, OSError):
            self.receiver.error = exc


def bind_log_socket(path: Path) -> socket.socket:
    """A listening unix stream socket at ``path``, mode 0600, replacing a stale socket file.

    Refuses to replace anything that is not a socket: a misconfigured path
    must never delete a user's file.
    """
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FileExistsError(f"{path} exists and is not a socket: remove it or pick another")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Without write permission nobody can connect, so the default
        # umask's 0755 before the chmod admits no other user.
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class LogSocket:
    """The listening socket and its receiver; :meth:`close` removes the socket file."""

    def __init__(
        self,
        path: Path,
        server: asyncio.Server,
        receiver: LogReceiver,
        inode: tuple[int, int],
    ) -> None:
        self.path = path
        self.server = server
        self.receiver = receiver
        self.inode = inode  # (st_dev, st_ino) of the file bind() made: is it still ours?

    def problem(self) -> str | None:
        """Why HAProxy's log lines cannot reach the receiver, or None.

        The receiver stopped, or the socket file is gone or replaced: HAProxy
        connects to the path, so a removed file cuts the lines at its next
        reconnect (reload, or skylift restarting).
        """
        if not self.is_open:
            error = self.receiver.error
            return f"log socket {self.path} closed" + (f" ({error})" if error else "")
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return f"log socket {self.path} was removed; HAProxy's log lines go nowhere"
        if (now.st_dev, now.st_ino) != self.inode:
            return f"log socket {self.path} was replaced by another file"
        return None

    @classmethod
    async def open(
        cls, path: Path, tracker: LatencyTracker, clock: Callable[[], float] = time.monotonic
    ) -> LogSocket:
        """Bind ``path`` and start accepting HAProxy's connections on the running loop."""
        sock = bind_log_socket(path)
        receiver = LogReceiver(tracker, clock)
        loop = asyncio.get_running_loop()
        try:
            bound = os.stat(path)  # the file bind() just made
            server = await loop.create_unix_server(receiver.connection, sock=sock)
        except BaseException:
            sock.close()
            raise
        return cls(path, server, receiver, (bound.st_dev, bound.st_ino))

    @property
    def is_open(self) -> bool:
        return not self.receiver.closed.is_set()

    def close(self) -> None:
        self.server.close()
        for transport in list(self.receiver.connections):
            transport.close()  # HAProxy re-opens to whoever listens next
        self.receiver.closed.set()
        with contextlib.suppress(FileNotFoundError):
            now = os.stat(self.path)
            if (now.st_dev, now.st_ino) == self.inode:  # never another skylift's socket
                self.path.unlink()


TrafficProbe = Callable[[str, float, float], Awaitable[Traffic | None]]
"""``traffic(service, now, window)``: what HAProxy counted in the window (None: too early).

:meth:`HAProxyStatsSource.requests` is one; it raises ``SourceError`` when it cannot tell.
"""


class LatencySource:
    """Metric source ``haproxy-log``: ``p95_latency`` of each service, in seconds.

    Fails closed. With log lines in the window, their p95. Without any:

    - ``traffic`` says HAProxy counted no request in the window and none is
      running: 0.0 (an idle service has no latency problem, and a MISSING p95
      would block scale-in);
    - ``traffic`` says requests ended in the window: the log pipeline lost
      their lines, so :class:`SourceError` (the collector makes p95 MISSING,
      with an event);
    - ``traffic`` cannot ask HAProxy: :class:`SourceError` too (cannot see);
    - requests counted but all still running (no line can exist yet), no
      ``traffic``, or too early to tell: no sample (MISSING, no failure).

    A removed, replaced or closed log socket is a :class:`SourceError` at once.
    """

    name = "haproxy-log"

    def __init__(
        self,
        tracker: LatencyTracker,
        log_socket: LogSocket | None = None,
        quantile: float = 0.95,
        metric: str = "p95_latency",
        traffic: TrafficProbe | None = None,
    ) -> None:
        self.tracker = tracker
        self.log_socket = log_socket
        self.q = quantile
        self.metric = metric
        self.traffic = traffic

    def provides(self, service: str) -> frozenset[str]:
        return frozenset({self.metric})

    async def sample(self, service: str, now: float) -> Mapping[str, float]:
        sock = self.log_socket
        if sock is not None:
            # One stat(2) of a socket file in the local state dir: microseconds, and a
            # thread hop would tie the metrics to a default executor others may fill.
            problem = sock.problem()
            if problem is not None:
                raise SourceError(problem, "restart skylift so it binds the socket again")
        value = self.tracker.quantile(service, self.q, now)
        if value is not None:
            return {self.metric: value}
        if self.traffic is None:
            return {}
        window = self.tracker.window
        try:
            seen = await self.traffic(service, now, window)
        except SourceError as exc:
            raise SourceError(
                f"no log line for {service} in {window:g}s and HAProxy cannot say whether it "
                f"had traffic ({exc.what})",
                exc.hint,
            ) from exc
        if seen is None:
            return {}
        if seen.finished > 0:
            raise SourceError(
                f"HAProxy counted {seen.counted} request(s) for {service} in the last "
                f"{window:g}s ({seen.in_flight} still running) but no log line arrived: "
                "the log pipeline is broken",
                f"check that HAProxy logs to {sock.path if sock else 'the log socket'} "
                "(`log` in haproxy.cfg) and look for DroppedLogs in `show info`",
            )
        if seen.counted > 0 or seen.in_flight > 0:
            return {}  # requests running, none ended yet: no latency to report so far
        return {self.metric: 0.0}


def backend_map(services: Iterable[str], backend_of: Callable[[str], str]) -> dict[str, str]:
    """``{"be_web": "web", ...}`` for :class:`LatencyTracker`."""
    return {backend_of(service): service for service in services}
