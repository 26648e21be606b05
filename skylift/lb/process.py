"""Run one HAProxy (master-worker) per state directory, detached from skylift.

HAProxy is the data plane: it must keep serving when the controller dies, so
it runs as a daemon in its own session and the controller only *adopts* it
after a restart (pidfile + live master + master CLI answers). Every config is
checked with ``haproxy -c`` before HAProxy sees it; reloads go through the
master CLI and are confirmed by a new worker showing up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from skylift.lb.errors import (
    ConfigInvalid,
    HAProxyNotFound,
    HAProxyStartError,
    ReloadError,
    RuntimeAPIError,
)
from skylift.lb.render import socket_dir
from skylift.lb.runtime import send_command

log = structlog.get_logger(__name__)

_POLL = 0.05


@dataclass(frozen=True, slots=True)
class StatePaths:
    """Files HAProxy and skylift share inside the state directory (0700)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "haproxy.cfg"

    @property
    def pidfile(self) -> Path:
        return self.root / "haproxy.pid"

    @property
    def sockets(self) -> Path:
        """The state dir, or a short private dir when socket paths in it would be too long."""
        return Path(socket_dir(str(self.root)))

    @property
    def stats_socket(self) -> Path:
        return self.sockets / "haproxy.sock"

    @property
    def master_socket(self) -> Path:
        return self.sockets / "master.sock"

    @property
    def server_state(self) -> Path:
        return self.root / "server-state"

    @property
    def stderr_log(self) -> Path:
        return self.root / "haproxy.stderr"


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """Parsed master CLI ``show proc``."""

    master_pid: int
    reloads: int
    failed_reloads: int
    workers: tuple[tuple[int, int], ...]  # (pid, reloads survived); current workers only


def parse_show_proc(text: str) -> ProcInfo:
    """Parse ``show proc`` (2.6 layout); raise ValueError when there is no master line."""
    master: ProcInfo | None = None
    workers: list[tuple[int, int]] = []
    section = "master"
    for line in text.splitlines():
        if line.startswith("#"):  # "#<PID> ...", "# workers", "# old workers", "# programs"
            section = "master" if line.startswith("#<PID>") else line.strip("# ").strip()
            continue
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        if parts[1] == "master":
            failed = 0
            if "[failed:" in line:
                failed = int(line.split("[failed:", 1)[1].split("]", 1)[0])
            master = ProcInfo(int(parts[0]), int(parts[2]), failed, ())
        elif section == "workers" and parts[1] == "worker":
            workers.append((int(parts[0]), int(parts[2])))
    if master is None:
        raise ValueError(f"no master line in show proc answer: {text!r}")
    return ProcInfo(master.master_pid, master.reloads, master.failed_reloads, tuple(workers))


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (reaped by nobody) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class HAProxyProcess:
    """Start, adopt, validate, reload and stop the HAProxy of one state directory."""

    def __init__(self, state_dir: Path, binary: str = "haproxy", timeout: float = 10.0) -> None:
        self.paths = StatePaths(state_dir)
        self.binary_name = binary
        self.timeout = timeout
        self._lock = asyncio.Lock()

    def find_binary(self) -> str:
        path = shutil.which(self.binary_name)
        if path is None:
            raise HAProxyNotFound(
                f"HAProxy binary {self.binary_name!r} not found on PATH: install it "
                "(Debian/Ubuntu: `apt-get install haproxy`, version 2.6 or later) or set "
                "haproxy.binary in skylift.yaml to its absolute path"
            )
        return path

    def prepare_state_dir(self) -> None:
        """Create the state dir 0700 (sockets in it give admin rights over HAProxy)."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.paths.root, 0o700)
        sockets = self.paths.sockets
        if sockets != self.paths.root:  # a short dir in a shared /tmp: must be ours alone
            with contextlib.suppress(FileExistsError):
                sockets.mkdir(mode=0o700)
            info = os.lstat(sockets)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                raise HAProxyStartError(
                    f"{sockets} (HAProxy's socket dir for the deep state dir {self.paths.root}) "
                    "is not a directory of ours: remove it, or use a shorter state_dir"
                )
            os.chmod(sockets, 0o700)

    async def _run(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            self.find_binary(),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace")

    async def validate(self, path: Path) -> None:
        """``haproxy -c``; raise :class:`ConfigInvalid` with HAProxy's message."""
        code, out = await self._run("-c", "-f", str(path))
        if code != 0:
            lines = [line for line in out.splitlines() if "[NOTICE]" not in line]
            raise ConfigInvalid(str(path), "\n".join(lines))

    async def install_config(self, text: str) -> None:
        """Validate ``text`` in a temporary file, then atomically make it the config."""
        self.prepare_state_dir()
        candidate = self.paths.root / "haproxy.cfg.new"
        write_private(candidate, text)
        try:
            await self.validate(candidate)
        except ConfigInvalid:
            candidate.unlink(missing_ok=True)
            raise
        os.replace(candidate, self.paths.config)

    async def check(self, text: str) -> None:
        """``haproxy -c`` of ``text`` without installing it (:class:`ConfigInvalid` if refused)."""
        self.prepare_state_dir()
        candidate = self.paths.root / "haproxy.cfg.check"
        write_private(candidate, text)
        try:
            await self.validate(candidate)
        finally:
            candidate.unlink(missing_ok=True)

    def write_config_unchecked(self, text: str) -> None:
        """Persist membership between reloads; validated by the next :meth:`reload`."""
        write_private(self.paths.config, text)

    def read_pid(self) -> int | None:
        try:
            return int(self.paths.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _owns_our_config(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return True  # no procfs: the socket check below decides
        return str(self.paths.config).encode() in cmdline

    async def master_command(self, command: str) -> str:
        return await send_command(self.paths.master_socket, command, self.timeout)

    async def show_proc(self) -> ProcInfo:
        return parse_show_proc(await self.master_command("show proc"))

    async def running_pid(self) -> int | None:
        """The master pid of a live HAProxy serving this state dir, or None.

        Raises :class:`HAProxyStartError` when a live process holds the pidfile
        but is not ours or does not answer: starting a second one would fight it.
        """
        pid = self.read_pid()
        if pid is None or not pid_alive(pid):
            return None
        if not self._owns_our_config(pid):
            return None  # pid reused by an unrelated process: stale pidfile
        try:
            info = await self.show_proc()
        except (RuntimeAPIError, ValueError) as exc:
            raise HAProxyStartError(
                f"HAProxy pid {pid} from {self.paths.pidfile} is alive but its master CLI "
                f"{self.paths.master_socket} does not answer ({exc}); stop it before retrying"
            ) from exc
        if info.master_pid != pid:
            raise HAProxyStartError(f"master CLI reports pid {info.master_pid}, pidfile {pid}")
        return pid

    async def start(self, config_text: str) -> bool:
        """Start HAProxy with ``config_text`` unless one already runs here.

        Returns True when an existing HAProxy was adopted (its config untouched:
        the caller decides whether to :meth:`reload`), False when started.
        """
        async with self._lock:
            self.prepare_state_dir()
            pid = await self.running_pid()
            if pid is not None:
                log.info("haproxy.adopted", pid=pid, state_dir=str(self.paths.root))
                return True
            await self.install_config(config_text)
            # A fresh HAProxy must not inherit runtime state from an earlier life.
            write_private(self.paths.server_state, "1\n")
            self.paths.pidfile.unlink(missing_ok=True)
            await self._spawn()
            info = await self._wait_ready(None)
            log.info("haproxy.started", pid=info.master_pid, workers=len(info.workers))
            return False

    async def _spawn(self) -> None:
        binary = self.find_binary()
        fd = os.open(self.paths.stderr_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # -W master-worker, -D daemon (forks, own session); start_new_session
            # also covers the instant before the fork. stdio never points at us.
            proc = await asyncio.create_subprocess_exec(
                binary,
                "-W",
                "-D",
                "-S",
                f"{self.paths.master_socket},mode,600",
                "-f",
                str(self.paths.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=fd,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        code = await proc.wait()
        if code != 0:
            raise HAProxyStartError(f"haproxy exited with status {code}:\n{self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        try:
            lines = self.paths.stderr_log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no output)"
        return "\n".join(lines[-20:])

    async def _wait_ready(self, previous: ProcInfo | None) -> ProcInfo:
        """Poll the master CLI until a (new) worker runs and the stats socket answers."""
        deadline = time.monotonic() + self.timeout
        last: str = "no answer yet"
        old_workers = {pid for pid, _ in previous.workers} if previous else set()
        while time.monotonic() < deadline:
            try:
                info = await self.show_proc()
            except (RuntimeAPIError, ValueError) as exc:
                last = str(exc)
            else:
                if (
                    previous is not None
                    and info.reloads > previous.reloads
                    and info.failed_reloads > 0
                ):
                    raise ReloadError(
                        "HAProxy refused the new configuration; the previous worker "
                        f"keeps serving. Output:\n{self._stderr_tail()}"
                    )
                new = [pid for pid, survived in info.workers if survived == 0]
                if new and (previous is None or (set(new) - old_workers)):
                    with contextlib.suppress(RuntimeAPIError):
                        await send_command(self.paths.stats_socket, "show info", 2.0)
                        return info
                last = f"workers {info.workers}, reloads {info.reloads}"
            await asyncio.sleep(_POLL)
        error = ReloadError if previous is not None else HAProxyStartError
        raise error(f"no new HAProxy worker within {self.timeout}s ({last})\n{self._stderr_tail()}")

    async def reload(self, config_text: str, before: str | None = None) -> None:
        """Hitless reload: validate + install ``config_text``, ``reload``, await the new worker.

        ``before`` is a ``show servers state`` dump written to the state file
        first, so drain/maint/health survive the reload.
        """
        async with self._lock:
            await self.install_config(config_text)
            if before is not None:
                write_private(self.paths.server_state, before)
            previous = await self.show_proc()
            with contextlib.suppress(RuntimeAPIError):
                # The master re-executes itself and closes the CLI connection.
                await self.master_command("reload")
            info = await self._wait_ready(previous)
            log.info("haproxy.reloaded", pid=info.master_pid, reloads=info.reloads)

    async def reload_installed(self, before: str | None = None) -> None:
        """Reload the config already installed, unchanged: a fresh worker and nothing else.

        Race-free against another process installing a newer config: the master
        re-reads whatever file is there. (The edge cache's purge: see docs/edge-cache.md.)
        """
        async with self._lock:
            if before is not None:
                write_private(self.paths.server_state, before)
            previous = await self.show_proc()
            with contextlib.suppress(RuntimeAPIError):
                await self.master_command("reload")
            info = await self._wait_ready(previous)
            log.info("haproxy.reloaded", pid=info.master_pid, reloads=info.reloads)

    async def stop(self, grace: float = 10.0) -> None:
        """Soft-stop (finish in-flight requests), then SIGTERM, then SIGKILL."""
        async with self._lock:
            pid = self.read_pid()
            if pid is None or not pid_alive(pid) or not self._owns_our_config(pid):
                self._cleanup()
                return
            for sig, wait in (
                (signal.SIGUSR1, grace),
                (signal.SIGTERM, 2.0),
                (signal.SIGKILL, 2.0),
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while pid_alive(pid) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(_POLL)  # a pid has no awaitable exit: poll
                if not pid_alive(pid):
                    break
            log.info("haproxy.stopped", pid=pid)
            self._cleanup()

    def _cleanup(self) -> None:
        for path in (self.paths.pidfile, self.paths.master_socket, self.paths.stats_socket):
            path.unlink(missing_ok=True)
        if self.paths.sockets != self.paths.root:
            with contextlib.suppress(OSError):
                self.paths.sockets.rmdir()  # the short socket dir, once empty
