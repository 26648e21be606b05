"""Choosing a loopback port for a new replica."""

from __future__ import annotations

import socket
from collections.abc import Container

from skylift.backends.base import NoFreePort

LOOPBACK = "127.0.0.1"


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when ``host:port`` can be bound right now.

    SO_REUSEADDR mirrors what servers set, so a port whose old connections sit
    in TIME_WAIT counts as free, while a listening socket still blocks it (Linux).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(
    start: int, end: int, taken: Container[int], *, after: int | None = None, host: str = LOOPBACK
) -> int:
    """First bindable port in ``start..end`` (inclusive) not in ``taken``.

    The scan begins just after ``after`` and wraps around, so a port freed a
    moment ago (still known to the balancer, or in TIME_WAIT) is reused last.
    """
    size = end - start + 1
    first = 0 if after is None or not start <= after <= end else after - start + 1
    for i in range(size):
        port = start + (first + i) % size
        if port not in taken and port_is_free(port, host):
            return port
    raise NoFreePort(
        f"no free port in {start}-{end} on {host}: every port is held by a replica or "
        "another program; stop some replicas or widen backend.ports"
    )
