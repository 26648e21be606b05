"""The delay proxy on loopback: the round trip pays the delay both ways, bytes stay intact
and in order, half closes and resets pass through, an unreachable target resets the client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from skylift.netdelay import serve_delay_proxy, split_hostport
from tests.ports import free_port

DELAY = 0.05


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then close: the target of every test here."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        return
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _proxied_echo(delay: float = DELAY) -> AsyncIterator[tuple[str, int]]:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    proxy = await serve_delay_proxy("127.0.0.1:0", f"127.0.0.1:{echo_port}", delay)
    try:
        yield "127.0.0.1", proxy.sockets[0].getsockname()[1]
    finally:
        proxy.close()
        echo.close()
        await proxy.wait_closed()
        await echo.wait_closed()


async def test_round_trip_takes_twice_the_delay() -> None:
    async with _proxied_echo() as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        for _ in range(3):
            started = time.monotonic()
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            assert time.monotonic() - started >= 2 * DELAY
        writer.close()
        await writer.wait_closed()


async def test_bytes_arrive_intact_and_in_order_and_eof_passes() -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)  # more than the queue holds: back-pressure
    async with _proxied_echo(0.01) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)

        async def send() -> None:
            for i in range(0, len(payload), 10_000):
                writer.write(payload[i : i + 10_000])
                await writer.drain()
            writer.write_eof()  # half close: the echo server sees EOF, echoes all, closes

        sending = asyncio.create_task(send())
        echoed = await asyncio.wait_for(reader.read(-1), 30)  # until the proxy passes EOF back
        await sending
        assert echoed == payload
        writer.close()
        await writer.wait_closed()


async def test_unreachable_target_resets_the_client() -> None:
    dead = free_port()  # nothing listens there
    proxy = await serve_delay_proxy("127.0.0.1:0", f"127.0.0.1:{dead}", DELAY)
    try:
        port = proxy.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    finally:
        proxy.close()
        await proxy.wait_closed()


async def test_target_closing_closes_the_client() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        writer.close()

    target = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]
    proxy = await serve_delay_proxy("127.0.0.1:0", f"127.0.0.1:{target_port}", DELAY)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.sockets[0].getsockname()[1]
        )
        assert await asyncio.wait_for(reader.read(), 5) == b"bye"  # then EOF
        writer.close()
        await writer.wait_closed()
    finally:
        proxy.close()
        target.close()
        await proxy.wait_closed()
        await target.wait_closed()


async def test_a_reset_by_the_target_resets_the_client() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        linger = struct.pack("ii", 1, 0)  # close() sends RST, not FIN
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.transport.abort()

    target = await asyncio.start_server(reset, "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]
    proxy = await serve_delay_proxy("127.0.0.1:0", f"127.0.0.1:{target_port}", DELAY)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.sockets[0].getsockname()[1]
        )
        writer.write(b"x")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    finally:
        proxy.close()
        target.close()
        await proxy.wait_closed()
        await target.wait_closed()


def test_split_hostport() -> None:
    assert split_hostport("10.0.0.1:80") == ("10.0.0.1", 80)
    assert split_hostport("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ValueError):
        split_hostport("nohost")


def test_command_line_runs_as_its_own_process() -> None:
    """``python -m skylift.netdelay`` prints where it listens, relays, stops on SIGTERM."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    target_port = listener.getsockname()[1]

    def serve_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(conn.recv(100).upper())

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    argv = [sys.executable, "-m", "skylift.netdelay", "--listen", "127.0.0.1:0",
            "--target", f"127.0.0.1:{target_port}", "--delay-ms", "30"]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("listening on 127.0.0.1:"), line
            port = int(line.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                started = time.monotonic()
                sock.sendall(b"abc")
                assert sock.recv(100) == b"ABC"
                assert time.monotonic() - started >= 0.06
            proc.terminate()
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            listener.close()
            thread.join(5)


def test_one_process_serves_several_routes() -> None:
    """``--route`` repeated: one line per route, each relaying with its own delay."""

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    target = f"127.0.0.1:{listener.getsockname()[1]}"
    routes = ["--route", f"127.0.0.1:0,{target},10", "--route", f"127.0.0.1:0,{target},60"]
    argv = [sys.executable, "-m", "skylift.netdelay", *routes]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            ports = [int(proc.stdout.readline().rsplit(":", 1)[1]) for _ in range(2)]
            for port, least in zip(ports, (0.02, 0.12), strict=True):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    conn, _ = listener.accept()
                    with conn:
                        started = time.monotonic()
                        sock.sendall(b"x")
                        conn.sendall(conn.recv(1))
                        assert sock.recv(1) == b"x"
                        assert time.monotonic() - started >= least
            proc.terminate()
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            listener.close()


def test_bad_routes_are_refused_by_the_command_line() -> None:
    from skylift.netdelay import main

    with pytest.raises(SystemExit):
        main(["--route", "127.0.0.1:0,nohost,5"])
    with pytest.raises(SystemExit):
        main(["--listen", "127.0.0.1:0"])
