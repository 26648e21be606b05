"""Store reads the API makes, off the event loop and with a deadline.

A listing (events, decisions, scaling events) that waits on a slow or
unreachable store must not freeze the API, ``/livez`` or the service loops:
it runs in a small pool of its own (so hung reads cannot starve other thread
work) and answers :class:`StoreUnavailable` after ``timeout`` seconds, which
the API turns into a 503 with a clear message.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from skylift.controller.writer import TRANSIENT

P = ParamSpec("P")
T = TypeVar("T")

READ_TIMEOUT = 5.0
"""Seconds an API read may wait on the store before the API answers 503."""
READ_WORKERS = 2


class StoreUnavailable(Exception):
    """The store did not answer a read in time, or cannot be reached."""


class StoreReader:
    """Runs blocking store reads in its own threads, each bounded by ``timeout``."""

    def __init__(self, timeout: float = READ_TIMEOUT, workers: int = READ_WORKERS) -> None:
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store-read")

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise StoreUnavailable(
                f"the store did not answer within {self.timeout:g}s; the controller keeps "
                "running and writes what it records once the store answers (see /livez)"
            ) from None
        except TRANSIENT as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise StoreUnavailable(
                f"the store cannot be reached ({first}); the controller keeps running and "
                "writes what it records once the store answers"
            ) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
