"""Async client of HAProxy's runtime API (the admin stats socket).

One command per connection: HAProxy answers and closes in non-interactive
mode, so there is no framing to get wrong and no shared connection state.
Parsing lives in :mod:`skylift.lb.stats` so it is tested without sockets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from skylift.lb.errors import NoSuchServer, RuntimeAPIError, SocketUnavailable
from skylift.lb.render import CheckSpec, server_keywords
from skylift.lb.stats import ServerStateRow, StatRow, parse_servers_state, parse_stat_csv

_MAX_ANSWER = 16 * 1024 * 1024


async def send_command(path: Path, command: str, answer_within: float = 5.0) -> str:
    """Send one command to a HAProxy unix socket (stats or master CLI) and return the answer."""
    if "\n" in command or ";" in command:
        raise ValueError(f"one command at a time, got {command!r}")
    try:
        async with asyncio.timeout(answer_within):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=_MAX_ANSWER)
            try:
                writer.write(command.encode() + b"\n")
                await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
                data = await reader.read(_MAX_ANSWER)
                chunks = [data]
                while data:
                    data = await reader.read(_MAX_ANSWER)
                    chunks.append(data)
            finally:
                writer.close()
    except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError) as exc:
        raise SocketUnavailable(command, f"{path}: {exc}") from exc
    except TimeoutError as exc:
        raise SocketUnavailable(command, f"{path}: no answer within {answer_within}s") from exc
    return b"".join(chunks).decode(errors="replace")


def _check_answer(command: str, answer: str, ok: tuple[str, ...] = ("",)) -> str:
    """Raise a typed error unless ``answer`` is one of the known success replies."""
    text = answer.strip()
    if text in ok:
        return text
    if text.startswith(("No such server", "No such backend", "No such proxy")):
        raise NoSuchServer(command, text)
    raise RuntimeAPIError(command, text)


class RuntimeClient:
    """Typed commands over the admin socket at ``socket_path``."""

    def __init__(self, socket_path: Path, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    async def command(self, command: str) -> str:
        return await send_command(self.socket_path, command, self.timeout)

    async def _expect(self, command: str, ok: tuple[str, ...] = ("",)) -> str:
        return _check_answer(command, await self.command(command), ok)

    async def add_server(
        self, backend: str, name: str, address: str, check: CheckSpec, weight: int = 100
    ) -> None:
        """Create a server (in maintenance); every keyword is explicit, nothing is inherited."""
        cmd = f"add server {backend}/{name} {address} {server_keywords(check, weight)}"
        await self._expect(cmd, ok=("New server registered.",))

    async def enable_health(self, backend: str, name: str) -> None:
        await self._expect(f"enable health {backend}/{name}")

    async def enable_server(self, backend: str, name: str) -> None:
        await self._expect(f"enable server {backend}/{name}")

    async def set_state(self, backend: str, name: str, state: str) -> None:
        """``ready`` (take traffic), ``drain`` (no new requests) or ``maint`` (none, no checks)."""
        if state not in ("ready", "drain", "maint"):
            raise ValueError(f"state must be ready, drain or maint, got {state!r}")
        await self._expect(f"set server {backend}/{name} state {state}")

    async def set_health(self, backend: str, name: str, health: str) -> None:
        """Force the check result: ``down`` makes a server earn ``rise`` passing checks."""
        if health not in ("up", "stopping", "down"):
            raise ValueError(f"health must be up, stopping or down, got {health!r}")
        await self._expect(f"set server {backend}/{name} health {health}")

    async def set_weight(self, backend: str, name: str, weight: int) -> None:
        await self._expect(f"set server {backend}/{name} weight {weight}")

    async def shutdown_sessions(self, backend: str, name: str) -> None:
        await self._expect(f"shutdown sessions server {backend}/{name}")

    async def del_server(self, backend: str, name: str) -> None:
        await self._expect(f"del server {backend}/{name}", ok=("Server deleted.",))

    async def show_stat(self, proxy: str | None = None) -> list[StatRow]:
        """Server rows (type 4) of ``proxy``, or of every backend."""
        cmd = f"show stat {proxy or '-1'} 4 -1"
        answer = await self.command(cmd)
        if not answer.startswith("# pxname"):
            _check_answer(cmd, answer, ok=())
        return parse_stat_csv(answer)

    async def show_servers_state(self, backend: str | None = None) -> str:
        """The raw dump, in the format ``server-state-file`` loads at a reload."""
        cmd = "show servers state" + (f" {backend}" if backend else "")
        answer = await self.command(cmd)
        if not answer.startswith("1\n"):
            _check_answer(cmd, answer, ok=())
        return answer

    async def servers_state(self, backend: str | None = None) -> list[ServerStateRow]:
        return parse_servers_state(await self.show_servers_state(backend))
