"""Free loopback ports chosen at run time (never hard-coded in tests).

Ports come from below the kernel's ephemeral range: outgoing connections
(thousands per load test) take their local ports from that range, so a
listener placed there could find its port taken a moment later.

Under pytest-xdist each worker takes ports from its own slice of that range:
``_HANDED_OUT`` only knows this process's ports, and a port handed out but not
yet bound looks free to every other process.
"""

from __future__ import annotations

import os
import random
import socket

LOW, HIGH = 15000, 32000  # below the usual ip_local_port_range (32768-60999)


def port_range() -> tuple[int, int]:
    """[low, high) for this process: the whole range, or this xdist worker's slice."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1")
    if count <= 1 or not worker.startswith("gw") or not worker[2:].isdigit():
        return LOW, HIGH
    index = int(worker[2:]) % count
    width = (HIGH - LOW) // count
    return LOW + index * width, LOW + (index + 1) * width


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    return free_port_block(1)


_HANDED_OUT: set[int] = set()
"""Ports already given to a test in this session: free now, but taken once it starts."""


def free_port_block(size: int) -> int:
    """First port of ``size`` consecutive ports that are free right now and were not
    handed out before (a config's API port must not land in its replicas' range)."""
    rng = random.SystemRandom()
    low, high = port_range()
    for _ in range(500):
        start = rng.randrange(low, high - size)
        block = range(start, start + size)
        if _HANDED_OUT.isdisjoint(block) and all(_bindable(port) for port in block):
            _HANDED_OUT.update(block)
            return start
    raise RuntimeError(f"no block of {size} free ports found in {low}-{high}")
