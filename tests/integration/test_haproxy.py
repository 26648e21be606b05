"""skylift.lb against a real HAProxy 2.6 and real HTTP backends on free ports.

Backends are stdlib HTTP servers in threads of the test process, so a test can
count the requests each one served and kill one abruptly. Everything is polled
with deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import textwrap
import threading
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from skylift.config import HAProxySettings, HealthCheck, ProcessBackend, Service
from skylift.lb import HAProxyBalancer, HAProxyNotFound, ServerState
from skylift.lb.errors import ConfigInvalid
from skylift.lb.process import HAProxyProcess, pid_alive
from skylift.model import Replica
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed"),
]


class Backend:
    """A replica: answers its id on /, 200 on /healthz, counts requests."""

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        self.hits = 0
        self.crash_on_post = False
        self.lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path != "/healthz":
                    with backend.lock:
                        backend.hits += 1
                if self.path == "/slow":
                    time.sleep(1.0)
                body = backend.replica_id.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if backend.crash_on_post:  # dies while handling: no answer at all
                    self.close_connection = True
                    return
                reply = backend.replica_id.encode() + b":" + body
                self.send_response(200)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # health checks hang up early; that is not an error

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.alive = True

    @property
    def replica(self) -> Replica:
        return Replica(id=self.replica_id, service="web", host="127.0.0.1", port=self.port)

    def kill(self) -> None:
        """Stop listening and cut open connections (a crashed replica)."""
        if self.alive:
            self.alive = False
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def backends() -> Iterator[Callable[[str], Backend]]:
    made: list[Backend] = []

    def make(replica_id: str) -> Backend:
        b = Backend(replica_id)
        made.append(b)
        return b

    yield make
    for b in made:
        b.kill()


def make_service(port: int, **overrides: Any) -> Service:
    health = HealthCheck(path="/healthz", interval=0.2, timeout=0.5, fall=2, rise=1)
    fields: dict[str, Any] = {
        "frontend": f"127.0.0.1:{port}",
        "backend": ProcessBackend(command="app --port {port}"),
        "health": health,
        "slowstart": 0.0,
        "drain_timeout": 5.0,
    }
    fields.update(overrides)
    return Service(**fields)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Short path: unix socket paths are limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="sl-lb-"))
    yield path / "state"
    pidfile = path / "state" / "haproxy.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text())
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings() -> HAProxySettings:
    return HAProxySettings(metrics=f"127.0.0.1:{free_port()}", timeout_server=5.0)


@pytest.fixture
async def balancer(state_dir: Path, settings: HAProxySettings) -> AsyncIterator[HAProxyBalancer]:
    lb = HAProxyBalancer(state_dir, settings)
    try:
        yield lb
    finally:
        await lb.stop()


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


def up(lb: HAProxyBalancer, replica_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        found = (await lb.status("web")).get(replica_id)
        return found is not None and found.state is ServerState.UP

    return check


async def get_many(url: str, n: int, concurrency: int = 8) -> list[int | str]:
    """``n`` GETs; the list of status codes, or error names for transport failures."""
    results: list[int | str] = []
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=10.0) as client:

        async def one() -> None:
            async with sem:
                try:
                    results.append((await client.get(url)).status_code)
                except httpx.HTTPError as exc:
                    results.append(type(exc).__name__)

        await asyncio.gather(*(one() for _ in range(n)))
    return results


async def load_until(url: str, stop: asyncio.Event, concurrency: int) -> list[int | str]:
    """Keep-alive clients sending GETs until ``stop``; status codes or error names."""
    results: list[int | str] = []
    async with httpx.AsyncClient(timeout=10.0) as client:

        async def worker() -> None:
            while not stop.is_set():
                try:
                    results.append((await client.get(url)).status_code)
                except httpx.HTTPError as exc:
                    results.append(type(exc).__name__)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def test_start_serves_with_private_sockets(
    balancer: HAProxyBalancer, backends: Callable[[str], Backend], settings: HAProxySettings
) -> None:
    b1 = backends("web-1")
    port = free_port()
    await balancer.start({"web": make_service(port)}, {"web": [b1.replica]})
    await eventually(up(balancer, "web-1"), what="web-1 UP")
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"http://127.0.0.1:{port}/")
        assert (reply.status_code, reply.text) == (200, "web-1")
        metrics = await client.get(f"http://{settings.metrics}/metrics")
        assert "haproxy_backend_current_sessions" in metrics.text
    paths = balancer.process.paths
    assert stat.S_IMODE(paths.root.stat().st_mode) == 0o700
    for sock in (paths.stats_socket, paths.master_socket):
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600, sock
    assert stat.S_IMODE(paths.config.stat().st_mode) == 0o600


async def test_add_server_at_runtime_gets_traffic(
    balancer: HAProxyBalancer, backends: Callable[[str], Backend]
) -> None:
    b1, b2 = backends("web-1"), backends("web-2")
    port = free_port()
    await balancer.start({"web": make_service(port)}, {"web": [b1.replica]})
    await balancer.add("web", b2.replica)
    await balancer.add("web", b2.replica)  # idempotent
    await eventually(up(balancer, "web-2"), what="web-2 UP")
    results = await get_many(f"http://127.0.0.1:{port}/", 40)
    assert results == [200] * 40
    assert b2.hits > 0 and b1.hits > 0
    assert "server web-2 127.0.0.1:" in balancer.process.paths.config.read_text()


async def test_drain_gets_no_new_requests_and_remove(
    balancer: HAProxyBalancer, backends: Callable[[str], Backend]
) -> None:
    b1, b2 = backends("web-1"), backends("web-2")
    port = free_port()
    await balancer.start({"web": make_service(port)}, {"web": [b1.replica, b2.replica]})
    await eventually(up(balancer, "web-1"), what="web-1 UP")
    await eventually(up(balancer, "web-2"), what="web-2 UP")
    await balancer.drain("web", "web-2")
    assert (await balancer.status("web"))["web-2"].state is ServerState.DRAIN
    before = b2.hits
    assert await get_many(f"http://127.0.0.1:{port}/", 30) == [200] * 30
    assert b2.hits == before
    assert await balancer.sessions("web", "web-2") == 0

    await balancer.remove("web", "web-2")
    assert "web-2" not in await balancer.status("web")
    assert "web-2" not in balancer.process.paths.config.read_text()
    await balancer.remove("web", "web-2")  # already gone: tolerated
    assert await get_many(f"http://127.0.0.1:{port}/", 10) == [200] * 10


async def test_added_server_is_not_up_before_a_check_passes(
    balancer: HAProxyBalancer, backends: Callable[[str], Backend]
) -> None:
    b1 = backends("web-1")
    port = free_port()
    service = make_service(port, health=HealthCheck(interval=1.0, fall=2, rise=2))
    await balancer.start({"web": service}, {"web": [b1.replica]})
    await eventually(up(balancer, "web-1"), what="web-1 UP")
    nobody = Replica(id="web-9", service="web", host="127.0.0.1", port=free_port())
    await balancer.add("web", nobody)
    assert (await balancer.status("web"))["web-9"].state is ServerState.DOWN
    assert await get_many(f"http://127.0.0.1:{port}/", 20) == [200] * 20


async def test_remove_waits_for_in_flight_request(
    balancer: HAProxyBalancer, backends: Callable[[str], Backend]
) -> None:
    b1 = backends("web-1")
    port = free_port()
    await balancer.start({"web": make_service(port)}, {"web": [b1.replica]})
    await eventually(up(balancer, "web-1"), what="web-1 UP")
    async with httpx.AsyncClient(timeout=10.0) as client:
        slow = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/slow"))

        async def busy() -> bool:
            return await balancer.sessions("web", "web-1") > 0

        await eventually(busy, what="request in flight")
        await balancer.remove("web", "web-1")
        assert slow.done()  # remove returned only after the request ended
        assert (await slow).status_code == 200
    assert "web-1" not in await balancer.status("web")


async def test_dead_server_goes_down_and_requests_keep_succeeding(
    balancer: HAProxyBalancer, backends: Callable[[str], Backend]
) -> None:
    b1, b2 = backends("web-1"), backends("web-2")
    port = free_port()
    await balancer.start({"web": make_service(port)}, {"web": [b1.replica]})
    await balancer.add("web", b2.replica)
    await eventually(up(balancer, "web-1"), what="web-1 UP")
    await eventually(up(balancer, "web-2"), what="web-2 UP")
    b2.kill()
    # Requests right after the crash, before checks notice: retried elsewhere.
    assert await get_many(f"http://127.0.0.1:{port}/", 40) == [200] * 40

    async def down() -> bool:
        return (await balancer.status("web"))["web-2"].state is ServerState.DOWN

    await eventually(down, what="web-2 DOWN")
    st = (await balancer.status("web"))["web-2"]
    assert st.check_status.startswith("L4"), st
    assert await get_many(f"http://127.0.0.1:{port}/", 20) == [200] * 20


def post_in_two_parts(port: int, body: bytes) -> bytes:
    """A POST whose body follows its headers a moment later, as from a slow
    client or a client writing headers and body apart; the raw response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode())
        time.sleep(0.1)  # the stimulus, not a synchronisation: the body comes later
        sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


async def test_a_post_to_a_replica_that_dies_is_retried_elsewhere(
    balancer: HAProxyBalancer, backends: Callable[[str], Backend]
) -> None:
    """HAProxy retries a request only if it holds the whole of it when it
    sends it: a body that arrives after the headers must be waited for, else a
    replica dying under a POST costs that POST (a 502, or a silently closed
    keep-alive connection)."""
    b1, b2 = backends("web-1"), backends("web-2")
    b2.crash_on_post = True
    port = free_port()
    await balancer.start({"web": make_service(port)}, {"web": [b1.replica, b2.replica]})
    await eventually(up(balancer, "web-1"), what="web-1 UP")
    await eventually(up(balancer, "web-2"), what="web-2 UP")
    for n in range(4):  # round robin: some of them go to web-2 first
        answer = await asyncio.to_thread(post_in_two_parts, port, f"order-{n}".encode())
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


async def test_reload_keeps_runtime_servers_and_drops_nothing(
    balancer: HAProxyBalancer, backends: Callable[[str], Backend]
) -> None:
    b1, b2 = backends("web-1"), backends("web-2")
    port = free_port()
    await balancer.start({"web": make_service(port)}, {"web": [b1.replica]})
    await balancer.add("web", b2.replica)
    await eventually(up(balancer, "web-2"), what="web-2 UP")
    pid = balancer.process.read_pid()

    stop = asyncio.Event()
    load = asyncio.create_task(load_until(f"http://127.0.0.1:{port}/", stop, concurrency=6))
    await eventually(served((b1, b2), more_than=20), what="load running")
    for i in range(5):
        changed = make_service(
            port,
            health=HealthCheck(path="/healthz", interval=0.2 + i / 10, timeout=0.5, fall=2, rise=1),
        )
        await balancer.reload({"web": changed})
        hits = b1.hits + b2.hits
        await eventually(served((b1, b2), more_than=hits + 20), what="traffic after reload")
    stop.set()
    results = await load
    failures = [r for r in results if r != 200]
    assert len(results) > 200
    assert not failures, failures[:5]
    assert balancer.process.read_pid() == pid  # same master, new workers
    assert (await balancer.process.show_proc()).reloads == 5
    status = await balancer.status("web")
    assert set(status) == {"web-1", "web-2"}
    await eventually(up(balancer, "web-2"), what="web-2 UP after reload")


def served(backs: tuple[Backend, ...], more_than: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return sum(b.hits for b in backs) > more_than

    return check


async def test_reload_keeps_drain_state(
    balancer: HAProxyBalancer, backends: Callable[[str], Backend]
) -> None:
    b1, b2 = backends("web-1"), backends("web-2")
    port = free_port()
    await balancer.start({"web": make_service(port)}, {"web": [b1.replica]})
    await balancer.add("web", b2.replica)
    await eventually(up(balancer, "web-2"), what="web-2 UP")
    await balancer.drain("web", "web-2")
    await balancer.reload({"web": make_service(port, drain_timeout=9.0)})
    assert (await balancer.status("web"))["web-2"].state is ServerState.DRAIN


async def test_invalid_config_is_refused_and_old_worker_keeps_serving(
    balancer: HAProxyBalancer, backends: Callable[[str], Backend]
) -> None:
    b1 = backends("web-1")
    port = free_port()
    await balancer.start({"web": make_service(port)}, {"web": [b1.replica]})
    good = balancer.process.paths.config.read_text()
    with pytest.raises(ConfigInvalid) as info:
        await balancer.process.reload(good + "\nbackend broken\n    balance nonsense\n")
    assert "[ALERT]" in str(info.value) and "balance" in str(info.value)
    assert balancer.process.paths.config.read_text() == good
    assert await get_many(f"http://127.0.0.1:{port}/", 5) == [200] * 5


async def test_adopts_running_haproxy(
    state_dir: Path,
    settings: HAProxySettings,
    balancer: HAProxyBalancer,
    backends: Callable[[str], Backend],
) -> None:
    b1, b2, b3 = backends("web-1"), backends("web-2"), backends("web-3")
    port = free_port()
    services = {"web": make_service(port)}
    await balancer.start(services, {"web": [b1.replica]})
    await balancer.add("web", b2.replica)
    pid = balancer.process.read_pid()

    # A restarted controller: new object, same state dir, knows web-1 and web-3.
    again = HAProxyBalancer(state_dir, settings)
    await again.start(services, {"web": [b1.replica, b3.replica]})
    assert again.process.read_pid() == pid
    assert (await again.process.show_proc()).reloads == 0  # same structure: no reload
    assert set(await again.status("web")) == {"web-1", "web-2", "web-3"}
    await eventually(up(again, "web-3"), what="web-3 UP")

    # Adopted with a different structure: validated hitless reload, membership kept.
    third = HAProxyBalancer(state_dir, settings)
    await third.start(
        {
            "web": make_service(
                port,
                drain_timeout=3.0,
                health=HealthCheck(path="/healthz", interval=0.4, timeout=0.5, fall=2, rise=1),
            )
        },
        {"web": [b1.replica]},
    )
    assert third.process.read_pid() == pid
    assert (await third.process.show_proc()).reloads == 1
    assert set(await third.status("web")) == {"web-1", "web-2", "web-3"}
    config = third.process.paths.config.read_text()
    assert "inter 400ms" in config
    assert f"server web-2 127.0.0.1:{b2.port} check weight 100" in config


async def test_haproxy_survives_controller_sigkill(
    state_dir: Path, settings: HAProxySettings, backends: Callable[[str], Backend]
) -> None:
    b1 = backends("web-1")
    port = free_port()
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from pathlib import Path
        from skylift.config import HAProxySettings, HealthCheck, ProcessBackend, Service
        from skylift.lb import HAProxyBalancer
        from skylift.model import Replica
        async def main():
            svc = Service(frontend="127.0.0.1:{port}",
                          backend=ProcessBackend(command="x {{port}}"),
                          health=HealthCheck(interval=0.2, fall=2, rise=1))
            lb = HAProxyBalancer(Path({str(state_dir)!r}),
                                 HAProxySettings(metrics={settings.metrics!r}))
            replica = Replica("web-1", "web", "127.0.0.1", {b1.port})
            await lb.start({{"web": svc}}, {{"web": [replica]}})
            print("started", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=REPO, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert b"started" in out
    lb = HAProxyBalancer(state_dir, settings)
    try:
        pid = lb.process.read_pid()
        assert pid is not None and pid_alive(pid)
        assert await get_many(f"http://127.0.0.1:{port}/", 5) == [200] * 5
    finally:
        await lb.stop()
    assert not pid_alive(pid)


async def test_missing_binary_says_how_to_install(state_dir: Path) -> None:
    lb = HAProxyBalancer(state_dir, HAProxySettings(binary="haproxy-not-installed-here"))
    with pytest.raises(HAProxyNotFound, match="apt-get install haproxy"):
        await lb.start({"web": make_service(free_port())}, {"web": []})


async def test_validate_reports_haproxy_message(state_dir: Path) -> None:
    proc = HAProxyProcess(state_dir)
    proc.prepare_state_dir()
    bad = state_dir / "bad.cfg"
    bad.write_text("defaults\n    mode http\n    timeout connect banana\n")
    with pytest.raises(ConfigInvalid, match="timeout connect"):
        await proc.validate(bad)


def write_pidfile(state_dir: Path, pid: int) -> None:
    state_dir.mkdir(parents=True, mode=0o700)
    (state_dir / "haproxy.pid").write_text(f"{pid}\n")


async def test_stale_pidfile_does_not_block_start(
    state_dir: Path, balancer: HAProxyBalancer, backends: Callable[[str], Backend]
) -> None:
    """A pidfile left by a crashed host (pid gone) must not be adopted."""
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    write_pidfile(state_dir, gone.pid)
    b1 = backends("web-1")
    port = free_port()
    await balancer.start({"web": make_service(port)}, {"web": [b1.replica]})
    pid = balancer.process.read_pid()
    assert pid is not None and pid != gone.pid and pid_alive(pid)
    assert await get_many(f"http://127.0.0.1:{port}/", 3) == [200] * 3
