"""Replicas as local processes: the embedded default backend.

Each replica runs in its own session (process group), so a controller crash
leaves it running and a signal to the group reaches the children it spawned.
A replica is identified by PID *and* process start time: PIDs are reused, and
signalling a stranger's process group is the one mistake a controller must
never make.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from skylift.backends.base import StartFailed
from skylift.backends.env import base_env, replica_env
from skylift.backends.ports import LOOPBACK, pick_port
from skylift.model import Replica, ReplicaState

if TYPE_CHECKING:  # config pulls in the whole model tree; the backend only reads it
    from skylift.config import ProcessBackend as ProcessBackendConfig

# psutil derives create_time from boot time + start ticks; boot time as read by a
# new controller can differ by up to a second after a clock step, so allow that.
# A reused PID would also need to have been started within this second.
START_TIME_TOLERANCE = 1.0
_POLL = 0.05  # seconds between checks while waiting for a process group to exit ...
_POLL_MAX = 0.5  # ... growing to this
_KILL_WAIT = 5.0  # after SIGKILL, how long to wait for the kernel to clean up
_LOG_WAIT = 5.0  # after the replica is gone, how long its log writer may take to drain
LOG_WRITER = str(Path(__file__).with_name("logwriter.py"))
_REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LOG_FILE = re.compile(r"^(.+)\.log(?:\.\d+)?(?:\.tmp)?$")  # <replica>.log, rotations


class ProcessBackend:
    """Runs the replicas of one service as local processes on loopback ports.

    No I/O happens here until :meth:`start`, :meth:`stop` or :meth:`adopt`.
    """

    epoch: int | None = None  # the controller's fencing token, as SKYLIFT_EPOCH in replicas

    def __init__(
        self,
        service_name: str,
        config: ProcessBackendConfig,
        base_dir: Path,
        state_dir: Path,
    ) -> None:
        self.service_name = service_name
        self._config = config
        self._base_dir = base_dir
        self._state_dir = state_dir
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # replicas we started
        self._writers: dict[str, subprocess.Popen[bytes]] = {}  # their log writers
        self._known: dict[str, Replica] = {}  # started or adopted, not yet stopped
        self._last_port: int | None = None
        self._lock = threading.Lock()  # port choice + spawn happen in worker threads

    # -- the Backend protocol ------------------------------------------------

    async def start(self, service: str, replica_id: str) -> Replica:
        if service != self.service_name:
            raise ValueError(f"this backend runs {self.service_name!r}, not {service!r}")
        if not _REPLICA_ID.match(replica_id):
            raise ValueError(
                f"invalid replica id {replica_id!r}: use letters, digits, '.', '_', '-' "
                "(it names the log file)"
            )
        if replica_id in self._known:
            raise ValueError(f"replica {replica_id!r} is already running")
        return await asyncio.to_thread(self._start_sync, replica_id)

    async def stop(self, replica: Replica, grace: float) -> int | None:
        """Stop the replica, then its log writer; remove its logs unless it had exited
        on its own (those are kept for diagnosis, ``keep_exited_logs`` of them)."""
        child = self._children.get(replica.id)
        pgid = _int(replica.handle.get("pgid")) or replica.pid
        exited_by_itself = not self.is_alive(replica)
        try:
            if pgid is None or not self._safe_to_signal(replica):
                return None
            _killpg(pgid, signal.SIGTERM)
            if not await _wait_group_gone(pgid, grace):
                _killpg(pgid, signal.SIGKILL)
                await _wait_group_gone(pgid, _KILL_WAIT)
            if child is None:
                return None
            return await asyncio.to_thread(_wait_child, child, _KILL_WAIT)
        finally:
            writer = self._writers.get(replica.id)
            self._forget(replica.id)
            await self._end_log(replica, writer, keep=exited_by_itself)

    def is_alive(self, replica: Replica) -> bool:
        child = self._children.get(replica.id)
        if child is not None:
            return child.poll() is None
        return _same_process(replica, allow_zombie=False)

    def exit_code(self, replica: Replica) -> int | None:
        child = self._children.get(replica.id)
        return None if child is None else child.poll()

    def adopt(self, records: Sequence[Replica]) -> list[Replica]:
        adopted = []
        for record in records:
            if record.service != self.service_name:
                continue
            if record.id in self._known or _same_process(record, allow_zombie=False):
                self._known[record.id] = record
                adopted.append(record)
        self.sweep_logs()  # replicas that died while no controller watched
        return adopted

    def log_path(self, replica: Replica) -> Path:
        return self._log_path(replica.service, replica.id)

    def sweep_logs(self) -> list[Path]:
        """Remove the logs of gone replicas beyond the newest ``keep_exited_logs``."""
        folder = self._state_dir / "logs" / self.service_name
        try:
            files = list(folder.iterdir())
        except FileNotFoundError:
            return []
        gone: dict[str, list[Path]] = {}
        for path in files:
            match = _LOG_FILE.match(path.name)
            if match and match.group(1) not in self._known:
                gone.setdefault(match.group(1), []).append(path)

        def newest(paths: list[Path]) -> float:
            return max((_mtime(p) for p in paths), default=0.0)

        ordered = sorted(gone.values(), key=newest, reverse=True)
        removed: list[Path] = []
        for paths in ordered[self._config.keep_exited_logs :]:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
        return removed

    async def _end_log(
        self, replica: Replica, writer: subprocess.Popen[bytes] | None, *, keep: bool
    ) -> None:
        """Wait for the log writer to drain the replica's last output, then clean up."""
        if writer is not None:
            if await asyncio.to_thread(_wait_child, writer, _LOG_WAIT) is None:
                writer.kill()  # a daemonised grandchild still holds the pipe
        else:  # adopted: the writer is not our child
            pid = _int(replica.handle.get("log_pid"))
            started = _float(replica.handle.get("log_create_time"))
            if pid is not None and started is not None:
                await _wait_process_gone(pid, started, _LOG_WAIT)
        if keep:
            await asyncio.to_thread(self.sweep_logs)
        else:
            await asyncio.to_thread(self._remove_logs, replica.id)

    def _remove_logs(self, replica_id: str) -> None:
        log = self._log_path(self.service_name, replica_id)
        for path in log.parent.glob(f"{replica_id}.log*"):
            match = _LOG_FILE.match(path.name)
            if match and match.group(1) == replica_id:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- internals -----------------------------------------------------------

    def _log_path(self, service: str, replica_id: str) -> Path:
        return self._state_dir / "logs" / service / f"{replica_id}.log"

    def _start_sync(self, replica_id: str) -> Replica:
        with self._lock:
            taken = {r.port for r in self._known.values()}
            ports = self._config.ports
            port = pick_port(ports.start, ports.end, taken, after=self._last_port)
            self._last_port = port
            argv = [
                token.replace("{port}", str(port)).replace("{replica}", replica_id)
                for token in shlex.split(self._config.command)
            ]
            log = self._log_path(self.service_name, replica_id)
            log.parent.mkdir(parents=True, exist_ok=True)
            log.touch()  # there from the start, before the writer gets to open it
            child, writer = self._spawn(argv, log, self._env(replica_id, port))
            writer_start = _create_time(writer.pid)
            create_time = _create_time(child.pid)
            # Reap in the background so an exited replica never lingers as a zombie;
            # Popen keeps the exit code for exit_code().
            threading.Thread(target=child.wait, name=f"reap-{replica_id}", daemon=True).start()
            threading.Thread(target=writer.wait, name=f"reap-log-{replica_id}", daemon=True).start()
            replica = Replica(
                id=replica_id,
                service=self.service_name,
                host=LOOPBACK,
                port=port,
                state=ReplicaState.STARTING,
                pid=child.pid,
                started_at=create_time,
                handle={
                    "pid": str(child.pid),
                    "pgid": str(child.pid),
                    "create_time": repr(create_time),
                    "log": str(log),
                    "log_pid": str(writer.pid),
                    "log_create_time": repr(writer_start),
                },
            )
            self._children[replica_id] = child
            self._writers[replica_id] = writer
            self._known[replica_id] = replica
            return replica

    def _spawn(
        self, argv: list[str], log: Path, env: Mapping[str, str]
    ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
        """Start the log writer, then the replica with its output on the writer's pipe."""
        cwd = self._base_dir / self._config.workdir if self._config.workdir else self._base_dir
        read_end, write_end = os.pipe()
        try:
            writer = self._spawn_writer(read_end, log, argv, cwd)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,  # own process group; survives the controller
                close_fds=True,  # never leak the controller lock or sockets
            )
        except OSError as exc:
            threading.Thread(target=writer.wait, name="reap-log", daemon=True).start()
            raise StartFailed(
                f"cannot start replica of {self.service_name!r} with {shlex.join(argv)!r} "
                f"in {cwd}: {exc.strerror or exc}; check backend.command and backend.workdir"
            ) from exc
        finally:
            os.close(write_end)  # the writer sees EOF once the replica's copies close
            # (on a failed start: at once, and it exits)
        return child, writer

    def _spawn_writer(
        self, read_end: int, log: Path, argv: list[str], cwd: Path
    ) -> subprocess.Popen[bytes]:
        """The replica's log writer (see :mod:`skylift.backends.logwriter`)."""
        try:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-I",  # no user site, no PYTHON* variables: only the standard library
                    "-S",
                    LOG_WRITER,
                    str(log),
                    "--max-bytes",
                    str(self._config.log_max_bytes),
                    "--backups",
                    str(self._config.log_backups),
                    "--header",
                    f"--- skylift: starting {shlex.join(argv)} in {cwd}",
                ],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=base_env(os.environ, self._config.inherit_env),
                start_new_session=True,  # outlives the controller, like the replica
                close_fds=True,  # above all never the pipe's write end: EOF ends it
            )
        except OSError as exc:
            raise StartFailed(
                f"cannot start the log writer of {self.service_name!r} for {log}: "
                f"{exc.strerror or exc}"
            ) from exc

    def _env(self, replica_id: str, port: int) -> dict[str, str]:
        """A minimal base, ``inherit_env``, ``env_file``, ``env``, then skylift's own.

        Never the controller's whole environment: it holds tokens and store URLs.
        Unbuffered Python output so logs show up while the replica runs; the
        service's own env can still override it.
        """
        cfg = self._config
        return replica_env(
            base={**base_env(os.environ, cfg.inherit_env), "PYTHONUNBUFFERED": "1"},
            env_file=self._base_dir / cfg.env_file if cfg.env_file else None,
            env=cfg.env,
            own={
                "SKYLIFT_REPLICA": replica_id,
                "SKYLIFT_SERVICE": self.service_name,
                "PORT": str(port),
                **({"SKYLIFT_EPOCH": str(self.epoch)} if self.epoch is not None else {}),
            },
        )

    def _safe_to_signal(self, replica: Replica) -> bool:
        """True unless the leader's PID now belongs to a different process.

        While any member of a process group lives, the kernel does not hand its
        id out again, so a group whose leader is gone is still the replica's.
        """
        if replica.pid is None:
            return False
        try:
            proc = psutil.Process(replica.pid)
            return _start_matches(proc.create_time(), replica)
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False

    def _forget(self, replica_id: str) -> None:
        self._known.pop(replica_id, None)
        self._children.pop(replica_id, None)
        self._writers.pop(replica_id, None)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:  # pragma: no cover - gone before we looked
        return time.time()


async def _wait_process_gone(pid: int, started: float, within: float) -> None:
    """Wait until ``pid`` (started at ``started``) has exited; SIGKILL it after ``within``."""
    deadline = time.monotonic() + within
    while True:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) > START_TIME_TOLERANCE:
                return  # the PID was reused: ours is gone
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.Error:
            return
        if time.monotonic() >= deadline:
            with contextlib.suppress(psutil.Error):
                proc.kill()
            return
        await asyncio.sleep(_POLL)


def _recorded_start(replica: Replica) -> float | None:
    raw = replica.handle.get("create_time")
    if raw:
        try:
            return float(raw)
        except ValueError:
            return None
    return replica.started_at


def _start_matches(create_time: float, replica: Replica) -> bool:
    recorded = _recorded_start(replica)
    return recorded is not None and abs(create_time - recorded) <= START_TIME_TOLERANCE


def _same_process(replica: Replica, *, allow_zombie: bool) -> bool:
    """The recorded PID runs and is the very process started (same start time)."""
    if replica.pid is None:
        return False
    try:
        proc = psutil.Process(replica.pid)
        if not _start_matches(proc.create_time(), replica):
            return False
        return allow_zombie or proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_child(child: subprocess.Popen[bytes], within: float) -> int | None:
    try:
        return child.wait(within)
    except subprocess.TimeoutExpired:
        return None


def _group_alive(pgid: int) -> bool:
    """Any non-zombie process left in the group (zombies wait for a reaper, not us)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False


async def _wait_group_gone(pgid: int, within: float) -> bool:
    """Poll with a growing interval; the process-table walk runs in a worker thread
    (it reads every /proc entry: on the event loop, every 50 ms, it stalled all loops)."""
    deadline = time.monotonic() + within
    delay = _POLL
    while await asyncio.to_thread(_group_alive, pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(_POLL_MAX, delay * 2)
    return True
