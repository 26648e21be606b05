"""Port choice: skip known replicas and ports someone else is listening on."""

from __future__ import annotations

import socket

import pytest

from skylift.backends import NoFreePort
from skylift.backends.ports import pick_port, port_is_free
from tests.ports import free_port_block


def test_skips_taken_and_bound_ports() -> None:
    start = free_port_block(4)
    with socket.socket() as other:
        other.bind(("127.0.0.1", start + 1))
        other.listen()
        assert not port_is_free(start + 1)
        assert pick_port(start, start + 3, taken={start}) == start + 2


def test_scan_starts_after_the_last_port_and_wraps() -> None:
    start = free_port_block(3)
    assert pick_port(start, start + 2, taken=set(), after=start + 1) == start + 2
    assert pick_port(start, start + 2, taken=set(), after=start + 2) == start
    assert pick_port(start, start + 2, taken=set(), after=1) == start  # outside: from the start


def test_no_free_port_says_what_to_do() -> None:
    start = free_port_block(2)
    with pytest.raises(NoFreePort, match=r"widen backend\.ports"):
        pick_port(start, start + 1, taken={start, start + 1})
