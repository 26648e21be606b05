"""Free loopback ports chosen at run time (never hard-coded in tests).

Ports come from below the kernel's ephemeral range: outgoing connections
(thousands per load test) take their local ports from that range, so a
listener placed there could find its port taken a moment later.
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 15000, 32000  # below the usual ip_local_port_range (32768-60999)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    return free_port_block(1)


def free_port_block(size: int) -> int:
    """First port of ``size`` consecutive ports that are free right now."""
    rng = random.SystemRandom()
    for _ in range(500):
        start = rng.randrange(LOW, HIGH - size)
        if all(_bindable(port) for port in range(start, start + size)):
            return start
    raise RuntimeError(f"no block of {size} free ports found in {LOW}-{HIGH}")
