"""Backends act: they start, stop, watch and re-find replicas.

The controller depends only on :class:`Backend`; :class:`ProcessBackend` runs
local processes, :class:`MemoryBackend` is the fake for tests and the simulator.
"""

from skylift.backends.base import Backend, BackendError, NoFreePort, StartFailed
from skylift.backends.memory import MemoryBackend
from skylift.backends.process import ProcessBackend

__all__ = [
    "Backend",
    "BackendError",
    "MemoryBackend",
    "NoFreePort",
    "ProcessBackend",
    "StartFailed",
]
