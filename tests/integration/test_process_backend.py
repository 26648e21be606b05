"""ProcessBackend with real processes: ports, HTTP, logs, signals, groups, adoption."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from skylift.backends import ProcessBackend, StartFailed
from skylift.config import PortRange
from skylift.config import ProcessBackend as ProcessBackendConfig
from skylift.model import Replica
from skylift.store import Store
from tests.polling import wait_for
from tests.ports import free_port_block

pytestmark = pytest.mark.integration

SERVER = textwrap.dedent(
    """
    import os, signal, subprocess, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    if "--ignore-term" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--spawn-child" in sys.argv:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"spawned:{child.pid}:")
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ["SKYLIFT_REPLICA"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("listening", sys.argv[1])
    server.serve_forever()
    """
)


def command(*flags: str) -> str:
    return shlex.join([sys.executable, "-c", SERVER, "{port}", *flags])


def answers(replica: Replica) -> str | None:
    try:
        return httpx.get(f"http://{replica.address}/", timeout=1.0).text
    except httpx.HTTPError:
        return None


def gone(pid: int) -> bool:
    """Exited and reaped, or a zombie left to a parent that is not us."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Harness:
    """Builds backends for one test and kills every process group it started."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ports = free_port_block(5)
        self.started: list[Replica] = []

    def backend(self, cmd: str) -> ProcessBackend:
        config = ProcessBackendConfig(
            command=cmd,
            ports=PortRange(start=self.ports, end=self.ports + 4),
            env={"GREETING": "hi"},
        )
        return ProcessBackend("web", config, self.tmp_path, self.tmp_path / "state")

    async def start(self, backend: ProcessBackend, rid: str) -> Replica:
        replica = await backend.start("web", rid)
        self.started.append(replica)
        return replica

    def cleanup(self) -> None:
        for replica in self.started:
            assert replica.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(replica.pid, signal.SIGKILL)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.cleanup()


async def test_replicas_serve_on_distinct_ports_and_log_to_files(harness: Harness) -> None:
    backend = harness.backend(command())
    one = await harness.start(backend, "web-1")
    two = await harness.start(backend, "web-2")
    assert one.port != two.port
    assert {one.port, two.port} <= set(range(harness.ports, harness.ports + 5))
    wait_for(lambda: answers(one) == "web-1", what="web-1 to answer")
    wait_for(lambda: answers(two) == "web-2", what="web-2 to answer")
    assert backend.is_alive(one) and backend.exit_code(one) is None
    assert one.handle["create_time"] and one.started_at == psutil.Process(one.pid).create_time()

    log = backend.log_path(one)
    assert log == harness.tmp_path / "state/logs/web/web-1.log"
    wait_for(lambda: f"listening {one.port}" in log.read_text(), what="startup line in log")
    wait_for(lambda: '"GET / HTTP/1.1" 200' in log.read_text(), what="request line in log")

    assert await backend.stop(one, grace=5.0) == -signal.SIGTERM
    assert not backend.is_alive(one) and gone(one.pid or 0)
    assert answers(two) == "web-2"


async def test_stop_escalates_to_sigkill_within_grace(harness: Harness) -> None:
    backend = harness.backend(command("--ignore-term"))
    stubborn = await harness.start(backend, "web-1")
    wait_for(lambda: answers(stubborn) == "web-1", what="replica to answer")
    began = time.monotonic()
    assert await backend.stop(stubborn, grace=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - began < 5.0
    assert gone(stubborn.pid or 0)


async def test_stop_reaches_the_replicas_children(harness: Harness) -> None:
    backend = harness.backend(command("--spawn-child"))
    replica = await harness.start(backend, "web-1")
    log = backend.log_path(replica)
    spawned = re.compile(r"spawned:(\d+):")
    wait_for(lambda: spawned.search(log.read_text()) is not None, what="child pid in log")
    match = spawned.search(log.read_text())
    assert match is not None
    child_pid = int(match.group(1))
    assert not gone(child_pid)
    await backend.stop(replica, grace=5.0)
    wait_for(lambda: gone(child_pid), timeout=5.0, what="the child to be killed too")


async def test_exited_replica_is_reaped_with_its_exit_code(harness: Harness) -> None:
    backend = harness.backend(shlex.join([sys.executable, "-c", "raise SystemExit(3)", "{port}"]))
    replica = await harness.start(backend, "web-1")
    wait_for(lambda: not backend.is_alive(replica), what="the replica to exit")
    assert backend.exit_code(replica) == 3
    wait_for(lambda: not psutil.pid_exists(replica.pid or 0), what="the zombie to be reaped")


async def test_missing_command_is_a_clear_start_failure(harness: Harness) -> None:
    backend = harness.backend("/nonexistent/skylift-app --port {port}")
    with pytest.raises(StartFailed, match=r"check backend\.command"):
        await backend.start("web", "web-1")


async def test_new_controller_adopts_running_replicas_but_not_impostors(harness: Harness) -> None:
    first = harness.backend(command())
    one = await harness.start(first, "web-1")
    two = await harness.start(first, "web-2")
    wait_for(lambda: answers(two) == "web-2", what="web-2 to answer")
    impostor = Replica(
        "web-9",
        "web",
        "127.0.0.1",
        harness.ports + 4,
        pid=one.pid,
        handle={**one.handle, "create_time": repr(float(one.handle["create_time"]) - 60)},
    )

    restarted = harness.backend(command())  # as after a controller restart
    adopted = restarted.adopt([one, two, impostor])
    assert [r.id for r in adopted] == ["web-1", "web-2"]
    assert restarted.is_alive(one) and restarted.exit_code(one) is None

    three = await harness.start(restarted, "web-3")
    assert three.port not in {one.port, two.port}

    assert await restarted.stop(one, grace=5.0) is None  # not its child: code unknown
    wait_for(lambda: not restarted.is_alive(one), what="adopted replica to stop")
    assert answers(two) == "web-2"


async def test_replica_does_not_inherit_the_controller_lock(harness: Harness) -> None:
    with Store.open(state_dir=harness.tmp_path / "state") as store:
        lock = store.acquire_controller_lock("test")
        replica = await harness.start(harness.backend(command()), "web-1")
        wait_for(lambda: answers(replica) == "web-1", what="replica to answer")
        lock.release()
        with store.acquire_controller_lock("after") as again:  # would fail if inherited
            assert again.held
