"""LogSocket on a real unix datagram socket (fast, local): mode, feeding, closing."""

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
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            for _ in range(3):
                sender.sendto(RFC3164, str(sock.path))
        deadline = time.monotonic() + 5
        while tracker.counters.requests < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        source = LatencySource(tracker, sock)
        assert await source.sample("web", 5.0) == {"p95_latency": pytest.approx(0.007, rel=0.021)}
    finally:
        sock.close()
    assert not sock.path.exists()
    await asyncio.wait_for(sock.receiver.closed.wait(), 5)
    with pytest.raises(SourceError, match="closed"):
        await LatencySource(tracker, sock).sample("web", 5.0)
    assert loop_errors == []


async def test_replaces_a_stale_socket_but_never_a_file(tmp_path: Path) -> None:
    tracker = LatencyTracker({})
    first = await LogSocket.open(tmp_path / "log.sock", tracker)
    first.transport.close()  # a crashed skylift leaves the file behind
    second = await LogSocket.open(tmp_path / "log.sock", tracker)
    second.close()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a socket"):
        await LogSocket.open(tmp_path / "notes.txt", tracker)
    assert (tmp_path / "notes.txt").read_text() == "mine"


async def test_no_traffic_is_no_sample_not_a_failure() -> None:
    assert await LatencySource(LatencyTracker({"be_web": "web"})).sample("web", 1.0) == {}
