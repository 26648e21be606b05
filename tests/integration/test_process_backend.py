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
from skylift.backends.env import BASE_NAMES
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


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


async def test_replica_gets_only_base_inherited_and_configured_variables(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 8: a secret of the controller's never reaches a replica by accident."""
    monkeypatch.setenv("SKYLIFT_TEST_SECRET", "hunter2")
    monkeypatch.setenv("STORE_URL", "postgresql://skylift:pw@db/skylift")
    monkeypatch.setenv("WANTED", "inherited")
    (harness.tmp_path / "app.env").write_text(
        "# comment\nFROM_FILE=file value\nOVERRIDDEN=from file\nEXPANDED=${SKYLIFT_TEST_SECRET}\n"
    )
    config = ProcessBackendConfig(
        command=command(),
        ports=PortRange(start=harness.ports, end=harness.ports + 4),
        env={"OVERRIDDEN": "from env", "GREETING": "hi"},
        env_file="app.env",
        inherit_env=["WANTED", "NOT_SET_ANYWHERE"],
    )
    backend = ProcessBackend("web", config, harness.tmp_path, harness.tmp_path / "state")
    replica = await harness.start(backend, "web-1")
    wait_for(lambda: answers(replica) == "web-1", what="replica to answer")
    env = environ_of(replica.pid or 0)
    assert "SKYLIFT_TEST_SECRET" not in env and "STORE_URL" not in env
    assert "hunter2" not in "".join(env.values())  # nor through ${...} in the env_file
    assert env["WANTED"] == "inherited" and "NOT_SET_ANYWHERE" not in env
    assert env["FROM_FILE"] == "file value" and env["OVERRIDDEN"] == "from env"
    assert env["GREETING"] == "hi" and env["SKYLIFT_REPLICA"] == "web-1"
    assert env["PORT"] == str(replica.port) and env["PATH"] == os.environ["PATH"]
    allowed = set(BASE_NAMES) | {"WANTED", "FROM_FILE", "OVERRIDDEN", "EXPANDED", "GREETING"}
    allowed |= {"SKYLIFT_REPLICA", "SKYLIFT_SERVICE", "PORT", "PYTHONUNBUFFERED"}
    assert set(env) <= allowed
    writer = psutil.Process(int(replica.handle["log_pid"]))
    assert "SKYLIFT_TEST_SECRET" not in writer.environ()


async def test_missing_env_file_is_a_clear_start_failure(harness: Harness) -> None:
    config = ProcessBackendConfig(
        command=command(),
        ports=PortRange(start=harness.ports, end=harness.ports + 4),
        env_file="missing.env",
    )
    backend = ProcessBackend("web", config, harness.tmp_path, harness.tmp_path / "state")
    with pytest.raises(StartFailed, match=r"env_file .*missing\.env"):
        await backend.start("web", "web-1")


CHATTY = textwrap.dedent(
    """
    import sys, time
    for i in range(int(sys.argv[2])):
        print(f"line {i:06d} " + "x" * 90)
    print("done writing", flush=True)
    if "--exit" in sys.argv:
        sys.exit(4)
    time.sleep(600)
    """
)


def chatty(lines: int, *flags: str) -> str:
    return shlex.join([sys.executable, "-c", CHATTY, "{port}", str(lines), *flags])


def log_backend(harness: Harness, cmd: str, **extra: object) -> ProcessBackend:
    config = ProcessBackendConfig.model_validate(
        {
            "command": cmd,
            "ports": {"start": harness.ports, "end": harness.ports + 4},
            "log_max_bytes": "64Ki",
            **extra,
        }
    )
    return ProcessBackend("web", config, harness.tmp_path, harness.tmp_path / "state")


async def test_replica_log_is_rotated_by_size_and_removed_when_stopped(harness: Harness) -> None:
    backend = log_backend(harness, chatty(5000))  # ~500 KB through a 64 KiB log
    replica = await harness.start(backend, "web-1")
    log = backend.log_path(replica)
    wait_for(lambda: "\ndone writing\n" in log.read_text(), what="the replica's last line")
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["web-1.log", "web-1.log.1"]  # one rotation kept, no more
    limit = 64 * 1024
    assert log.stat().st_size <= limit and (log.parent / "web-1.log.1").stat().st_size <= limit
    rotated = (log.parent / "web-1.log.1").read_text()
    assert rotated.endswith("\n") and rotated.startswith("line ")  # cut at line ends
    assert "line 004999" in log.read_text()

    await backend.stop(replica, grace=5.0)
    assert list(log.parent.iterdir()) == []  # a stopped replica's logs are gone
    assert gone(int(replica.handle["log_pid"]))


async def test_exited_replicas_keep_their_logs_but_only_the_newest(harness: Harness) -> None:
    backend = log_backend(harness, chatty(3, "--exit"), keep_exited_logs=2)
    folder = harness.tmp_path / "state/logs/web"
    for n in range(4):
        replica = await harness.start(backend, f"web.log-{n}")  # ".log" in an id is fine
        wait_for(lambda r=replica: not backend.is_alive(r), what="the replica to exit")
        await backend.stop(replica, grace=1.0)  # what the controller does with a crash
        os.utime(folder / f"web.log-{n}.log", (1000.0 + n, 1000.0 + n))  # mtime order is age
    backend.sweep_logs()
    assert sorted(p.name for p in folder.iterdir()) == ["web.log-2.log", "web.log-3.log"]
    assert "\ndone writing\n" in (folder / "web.log-3.log").read_text()


async def test_adopted_replica_keeps_logging_and_its_logs_go_when_stopped(
    harness: Harness,
) -> None:
    first = log_backend(harness, command())
    replica = await harness.start(first, "web-1")
    wait_for(lambda: answers(replica) == "web-1", what="replica to answer")
    restarted = log_backend(harness, command())  # as after a controller restart
    assert [r.id for r in restarted.adopt([replica])] == ["web-1"]
    log = restarted.log_path(replica)
    wait_for(lambda: answers(replica) == "web-1", what="replica to answer again")
    wait_for(lambda: log.read_text().count('"GET / HTTP/1.1" 200') >= 2, what="both requests")
    await restarted.stop(replica, grace=5.0)
    assert not log.exists() and gone(int(replica.handle["log_pid"]))
