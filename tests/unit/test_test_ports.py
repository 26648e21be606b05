"""tests/ports.py under pytest-xdist: each worker gets its own slice of the port range."""

from __future__ import annotations

import pytest

from tests import ports


def test_one_process_uses_the_whole_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert ports.port_range() == (ports.LOW, ports.HIGH)


def test_workers_get_disjoint_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    slices = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        slices.append(ports.port_range())
    (a_low, a_high), (b_low, b_high) = slices
    assert ports.LOW == a_low < a_high <= b_low < b_high <= ports.HIGH
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    block = ports.free_port_block(40)
    assert b_low <= block and block + 40 <= b_high
