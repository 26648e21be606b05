"""LogSocket on a real unix stream socket (fast, local): mode, feeding, closing."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from skylift.metrics.base import SourceError
from skylift.metrics.haproxy_stats import Traffic
from skylift.metrics.latency import LatencySource, LatencyTracker, LogSocket, backend_map
from tests.unit.metrics.test_haproxy_log import RFC3164


async def test_receives_parses_and_closes(tmp_path: Path) -> None:
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: loop_errors.append(ctx))
    tracker = LatencyTracker(backend_map(["web"], lambda s: f"be_{s}"))
    sock = await LogSocket.open(tmp_path / "log.sock", tracker, clock=lambda: 5.0)
    try:
        mode = os.stat(sock.path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        reader, writer = await asyncio.open_unix_connection(str(sock.path))
        # lines split across writes, as a stream may deliver them
        burst = (RFC3164 + b"\n") * 3
        writer.write(burst[:10])
        await writer.drain()
        writer.write(burst[10:])
        await writer.drain()
        deadline = time.monotonic() + 5
        while tracker.counters.requests < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        source = LatencySource(tracker, sock)
        assert await source.sample("web", 5.0) == {"p95_latency": pytest.approx(0.007, rel=0.021)}
        assert tracker.counters.lines == 3
    finally:
        sock.close()
    assert not sock.path.exists()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the sender sees the close
    writer.close()
    with pytest.raises(SourceError, match="closed"):
        await LatencySource(tracker, sock).sample("web", 5.0)
    assert loop_errors == []


async def test_replaces_a_stale_socket_but_never_a_file(tmp_path: Path) -> None:
    tracker = LatencyTracker({})
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "log.sock"))
    stale.close()  # a crashed skylift leaves the file behind
    second = await LogSocket.open(tmp_path / "log.sock", tracker)
    second.close()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a socket"):
        await LogSocket.open(tmp_path / "notes.txt", tracker)
    assert (tmp_path / "notes.txt").read_text() == "mine"


async def test_no_traffic_is_no_sample_not_a_failure() -> None:
    assert await LatencySource(LatencyTracker({"be_web": "web"})).sample("web", 1.0) == {}


class Stats:
    """What HAProxy's stats say about a service: counts, too early (None), or an error."""

    def __init__(self, answer: Traffic | SourceError | None) -> None:
        self.answer = answer
        self.asked: list[tuple[str, float, float]] = []

    async def __call__(self, service: str, now: float, window: float) -> Traffic | None:
        self.asked.append((service, now, window))
        if isinstance(self.answer, SourceError):
            raise self.answer
        return self.answer


def quiet_tracker() -> LatencyTracker:
    """A tracker that received no log line (the pipeline is cut, or nobody came)."""
    return LatencyTracker({"be_web": "web"}, window=30.0, slots=6)


async def test_no_log_line_and_no_request_is_an_idle_zero() -> None:
    traffic = Stats(Traffic(counted=0, in_flight=0))
    source = LatencySource(quiet_tracker(), traffic=traffic)
    assert await source.sample("web", 100.0) == {"p95_latency": 0.0}
    assert traffic.asked == [("web", 100.0, 25.0)]  # the shortest span the sketch covers


async def test_no_log_line_while_haproxy_counted_requests_fails_closed() -> None:
    """Finding 7: a cut log pipeline under traffic is MISSING, never a 0 s p95."""
    source = LatencySource(quiet_tracker(), traffic=Stats(Traffic(counted=42, in_flight=2)))
    with pytest.raises(SourceError, match=r"counted 42 request.*2 still running.*is broken"):
        await source.sample("web", 100.0)


async def test_requests_still_running_are_no_sample_yet() -> None:
    """Counted when they start, logged when they end: no line can exist yet, and no 0 s."""
    for running in (Traffic(counted=3, in_flight=3), Traffic(counted=0, in_flight=1)):
        source = LatencySource(quiet_tracker(), traffic=Stats(running))
        assert await source.sample("web", 100.0) == {}


async def test_no_log_line_and_no_stats_is_missing() -> None:
    cannot = Stats(SourceError("show stat failed", "start HAProxy"))
    with pytest.raises(SourceError, match="cannot say whether it had traffic"):
        await LatencySource(quiet_tracker(), traffic=cannot).sample("web", 100.0)
    too_early = LatencySource(quiet_tracker(), traffic=Stats(None))
    assert await too_early.sample("web", 100.0) == {}


async def test_log_lines_answer_without_asking_haproxy() -> None:
    tracker = quiet_tracker()
    tracker.feed(RFC3164, 99.0)
    traffic = Stats(SourceError("show stat failed"))  # stats down: the logs still see
    sample = await LatencySource(tracker, traffic=traffic).sample("web", 100.0)
    assert sample == {"p95_latency": pytest.approx(0.007, rel=0.021)}
    assert traffic.asked == []


async def test_a_removed_or_replaced_log_socket_fails_at_once(tmp_path: Path) -> None:
    tracker = quiet_tracker()
    sock = await LogSocket.open(tmp_path / "log.sock", tracker)
    try:
        source = LatencySource(tracker, sock, traffic=Stats(Traffic(0, 0)))
        assert await source.sample("web", 1.0) == {"p95_latency": 0.0}
        sock.path.rename(tmp_path / "moved.sock")  # cut at HAProxy's next connect
        with pytest.raises(SourceError, match="was removed"):
            await source.sample("web", 2.0)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
            other.bind(str(sock.path))  # someone else's socket at the path
            with pytest.raises(SourceError, match="replaced by another file"):
                await source.sample("web", 3.0)
            sock.path.unlink()
        (tmp_path / "moved.sock").rename(sock.path)  # put back: the pipeline works again
        assert await source.sample("web", 4.0) == {"p95_latency": 0.0}
    finally:
        sock.close()
