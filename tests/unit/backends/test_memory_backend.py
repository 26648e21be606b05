"""The in-memory backend behaves like a backend, so controller tests can trust it."""

from __future__ import annotations

import pytest

from skylift.backends import Backend, MemoryBackend, StartFailed


async def test_start_stop_crash_and_calls() -> None:
    backend = MemoryBackend("web")
    assert isinstance(backend, Backend)
    one = await backend.start("web", "web-1")
    two = await backend.start("web", "web-2")
    assert one.port != two.port and backend.is_alive(one)
    backend.crash("web-1", code=3)
    assert not backend.is_alive(one) and backend.exit_code(one) == 3
    assert await backend.stop(two, grace=1.0) == -15
    assert not backend.is_alive(two)
    assert backend.calls == [("start", "web-1"), ("start", "web-2"), ("stop", "web-2")]


async def test_start_failures_and_adoption_after_restart() -> None:
    backend = MemoryBackend("web", fail_next_starts=1)
    with pytest.raises(StartFailed):
        await backend.start("web", "web-1")
    kept = await backend.start("web", "web-2")
    lost = await backend.start("web", "web-3")
    backend.crash("web-3")
    restarted = MemoryBackend("web", survivors=set(backend.survivors))
    assert restarted.adopt([kept, lost]) == [kept]
    assert restarted.is_alive(kept) and not restarted.is_alive(lost)
