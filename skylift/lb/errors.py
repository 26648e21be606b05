"""Errors raised by ``skylift.lb``; catch :class:`HAProxyError` for all of them.

::

    HAProxyError                 anything HAProxy-related failed
    ├── HAProxyNotFound          no haproxy binary (permanent: install it)
    ├── ConfigInvalid            `haproxy -c` refused a config (permanent until config changes)
    ├── HAProxyStartError        HAProxy did not start, or a stranger owns the state dir
    ├── ReloadError              a reload did not produce a new worker (old one keeps serving)
    └── RuntimeAPIError          a runtime API command failed; carries HAProxy's answer
        ├── SocketUnavailable    the socket is missing or does not answer (temporary)
        └── NoSuchServer         backend/server does not exist
"""

from __future__ import annotations


class HAProxyError(Exception):
    """Base of every error raised by skylift.lb."""


class HAProxyNotFound(HAProxyError):
    """The haproxy binary is not installed or not on PATH."""


class ConfigInvalid(HAProxyError):
    """``haproxy -c`` rejected a configuration; ``output`` is HAProxy's own message."""

    def __init__(self, path: str, output: str) -> None:
        self.path = path
        self.output = output
        super().__init__(f"HAProxy rejected {path}:\n{output.strip()}")


class HAProxyStartError(HAProxyError):
    """HAProxy could not be started or adopted."""


class ReloadError(HAProxyError):
    """A reload was refused or no new worker appeared; the previous worker keeps serving."""


class RuntimeAPIError(HAProxyError):
    """A runtime API command failed; ``answer`` is what HAProxy replied."""

    def __init__(self, command: str, answer: str) -> None:
        self.command = command
        self.answer = answer.strip()
        super().__init__(f"HAProxy refused {command!r}: {self.answer or '(no answer)'}")


class SocketUnavailable(RuntimeAPIError):
    """The unix socket is missing or did not answer in time (HAProxy down or reloading)."""


class NoSuchServer(RuntimeAPIError):
    """The backend or server named in the command does not exist."""
