"""A user-space TCP proxy that adds a fixed one-way delay in each direction.

Why: regions in tests run as network namespaces on one host, and ``tc netem`` is
not available here, so inter-region latency is emulated in user space. A proxy
with ``delay`` seconds each way turns every request/response exchange into at
least ``2 * delay`` of round trip (20 ms each way = 40 ms RTT).

Each byte read from one side is stamped with its arrival time and written to the
other side no earlier than ``stamp + delay``; chunks leave in arrival order
(one queue and one writer per direction), so the byte stream is never reordered.
A half close (EOF) travels with the same delay; a reset or error on either side
aborts both. What is not modelled: the TCP handshake (the client's connect
completes at once, locally) and bandwidth.

Run it as its own process (e.g. inside a network namespace)::

    python -m skylift.netdelay --listen 127.0.0.1:7000 --target 10.213.7.3:5432 --delay-ms 45

It prints ``listening on HOST:PORT`` once it accepts connections (port 0 picks a
free port) and stops cleanly on SIGTERM or SIGINT. One process may serve several
proxies (``--route LISTEN,TARGET,DELAY_MS``, repeatable; one line printed per route,
in order), so a region needs one proxy process, not one per peer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import struct
import sys
from collections.abc import Sequence

CHUNK = 64 * 1024
QUEUE_CHUNKS = 64
"""Chunks held per direction before reading pauses (back-pressure: at most ~4 MiB)."""

_EOF = b""


def split_hostport(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk held until ``delay`` after it arrived.

    A reader task feeds a bounded queue (back-pressure) and this task writes in order.
    EOF is passed on as a half close (``write_eof``) and a read error (a reset) is
    raised here, each once its own delay has elapsed, like the bytes before them.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes | OSError]] = asyncio.Queue(QUEUE_CHUNKS)

    async def read() -> None:
        while True:
            try:
                data = await reader.read(CHUNK)
            except OSError as exc:
                await queue.put((loop.time(), exc))
                return
            await queue.put((loop.time(), data))
            if not data:
                return

    reading = asyncio.create_task(read())
    try:
        while True:
            stamp, item = await queue.get()
            wait = stamp + delay - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if isinstance(item, OSError):
                raise item
            if item == _EOF:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(item)
            await writer.drain()
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


_RESET = struct.pack("ii", 1, 0)
"""SO_LINGER on, 0 s: close() then sends RST, not FIN (a reset is passed on as a reset)."""


async def _close(writer: asyncio.StreamWriter, abort: bool) -> None:
    if abort:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        writer.transport.abort()
    else:
        writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await asyncio.wait_for(writer.wait_closed(), 5.0)


async def _relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    delay: float,
    connect_timeout: float,
) -> None:
    """One proxied connection: both directions pumped until both ended, then closed."""
    try:
        upstream_reader, upstream_writer = await asyncio.wait_for(
            asyncio.open_connection(*target), connect_timeout
        )
    except (TimeoutError, OSError):
        # the far side is unreachable: the client sees its connection reset
        await _close(client_writer, abort=True)
        return
    pumps = [
        asyncio.create_task(_pump(client_reader, upstream_writer, delay)),
        asyncio.create_task(_pump(upstream_reader, client_writer, delay)),
    ]
    abort = False
    try:
        pending: set[asyncio.Task[None]] = set(pumps)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(not t.cancelled() and t.exception() is not None for t in done):
                abort = True  # a reset on one side resets the other
                break
    finally:
        for task in pumps:
            task.cancel()
        for task in pumps:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await task
        await _close(upstream_writer, abort)
        await _close(client_writer, abort)


async def serve_delay_proxy(
    listen: str, target: str, delay: float, connect_timeout: float = 5.0
) -> asyncio.Server:
    """Listen on ``listen`` (HOST:PORT) and relay to ``target`` with ``delay`` s each way."""
    if delay < 0:
        raise ValueError("delay must be >= 0")
    host, port = split_hostport(listen)
    destination = split_hostport(target)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The connection's root task: a cancellation at shutdown ends it (sockets closed by
        # _relay's finally) and is not re-raised, or Python 3.11's start_server callback
        # prints it as an unhandled error.
        with contextlib.suppress(asyncio.CancelledError):
            await _relay(reader, writer, destination, delay, connect_timeout)

    return await asyncio.start_server(handle, host, port)


Route = tuple[str, str, float]
"""(listen HOST:PORT, target HOST:PORT, one-way delay in seconds)."""


def parse_route(value: str) -> Route:
    """``LISTEN,TARGET,DELAY_MS`` (the ``--route`` form) -> a route."""
    parts = value.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected LISTEN,TARGET,DELAY_MS, got {value!r}")
    listen, target, delay_ms = parts
    try:
        split_hostport(listen)
        split_hostport(target)
        delay = float(delay_ms) / 1000.0
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return listen, target, delay


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m skylift.netdelay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--listen", help="HOST:PORT to accept on (port 0: free)")
    parser.add_argument("--target", help="HOST:PORT to relay to")
    parser.add_argument("--delay-ms", type=float, help="one-way delay, each way")
    parser.add_argument(
        "--route",
        type=parse_route,
        action="append",
        default=[],
        metavar="LISTEN,TARGET,DELAY_MS",
        help="a further proxy served by this process (repeatable)",
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=5.0, help="seconds to reach the target"
    )
    args = parser.parse_args(argv)
    single = (args.listen, args.target, args.delay_ms)
    if any(v is not None for v in single) and not all(v is not None for v in single):
        parser.error("--listen, --target and --delay-ms go together")
    routes: list[Route] = []
    if args.listen is not None:
        routes.append((args.listen, args.target, args.delay_ms / 1000.0))
    routes += args.route
    if not routes:
        parser.error("give --listen/--target/--delay-ms or at least one --route")
    args.routes = routes
    return args


async def _main(routes: Sequence[Route], connect_timeout: float) -> None:
    servers = [
        await serve_delay_proxy(listen, target, delay, connect_timeout)
        for listen, target, delay in routes
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    for server in servers:  # one line per route, in order, once all accept
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        # no wait_closed(): from Python 3.12 it waits for open connections; asyncio.run
        # cancels the relays next, and each closes its two sockets
        for server in servers:
            server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: run the proxies until SIGTERM/SIGINT."""
    args = _parse(argv)
    try:
        asyncio.run(_main(args.routes, args.connect_timeout))
    except (OSError, ValueError) as exc:
        print(f"netdelay: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
