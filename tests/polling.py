"""Poll with a deadline: the one way tests wait (never a sleep as synchronisation)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    every: float = 0.05,
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail saying ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what} (last: {last!r})"
            )
        time.sleep(every)


async def wait_for_async(
    predicate: Callable[[], Any],
    within: float = 10.0,
    what: str = "condition",
    every: float = 0.01,
) -> Any:
    """:func:`wait_for` inside an event loop: yields to other tasks between polls."""
    deadline = time.monotonic() + within
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(every)
