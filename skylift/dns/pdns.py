"""Run PowerDNS (``pdns_server`` with the geoip backend) in its own directory, and reload it.

The server reads ``pdns.conf`` from the front's state dir (``--config-dir``),
never ``/etc/powerdns``. A new zone file (and a new country database) is
picked up by ``pdns_control reload``, which makes the geoip backend re-read
both; ``pdns_control purge`` then empties PowerDNS's packet and query caches
so no answer older than the rewrite is served from them. Every call that
leaves the process has a timeout; the server is stopped by its own PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import time
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import structlog

from skylift.dns.plan import DnsPlan

log = structlog.get_logger(__name__)
SBIN = ("/usr/sbin", "/usr/bin", "/sbin")
INSTALL_HINT = "install it (Debian/Ubuntu: `apt-get install pdns-server pdns-backend-geoip`)"


class PowerDNSError(RuntimeError):
    """PowerDNS could not be found, started, reloaded or reached; the message says why."""


def find_binary(name: str) -> str:
    """``name`` on PATH, else in the sbin dirs Debian installs PowerDNS to."""
    found = shutil.which(name) or next(
        (str(Path(d) / name) for d in SBIN if os.access(Path(d) / name, os.X_OK)), None
    )
    if found is None:
        raise PowerDNSError(f"{name} not found: {INSTALL_HINT}")
    return found


def prepare_socket_dir(path: Path) -> None:
    """Create the control socket dir 0700 and check it is ours (it may be a short one in /tmp)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PowerDNSError(f"{path} (PowerDNS's socket dir) is not a directory of ours")
    os.chmod(path, 0o700)


class PowerDNS:
    """One ``pdns_server`` for one plan: ``start``, ``reload``, ``stop``."""

    def __init__(
        self,
        plan: DnsPlan,
        *,
        server_binary: str = "pdns_server",
        control_binary: str = "pdns_control",
        timeout: float = 10.0,
    ) -> None:
        self.plan = plan
        self.server_binary = server_binary
        self.control_binary = control_binary
        self.timeout = timeout
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        """Start the server and wait until it answers the zone's SOA (or raise with its log)."""
        binary = find_binary(self.server_binary)
        find_binary(self.control_binary)
        prepare_socket_dir(self.plan.socket_dir)
        log_file = await asyncio.to_thread(self.plan.log_file.open, "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                binary,
                f"--config-dir={self.plan.state_dir}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log_file.close()
        await asyncio.to_thread(self.plan.pid_file.write_text, f"{self.proc.pid}\n")
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        log.info("dns.pdns_started", pid=self.proc.pid, listen=self.plan.listen)

    def check_alive(self) -> None:
        """Raise if the server has exited (its supervisor, or ``serve``'s, restarts it)."""
        if self.proc is not None and self.proc.returncode is not None:
            raise PowerDNSError(
                f"pdns_server exited with {self.proc.returncode}: {self._log_tail()}"
            )

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                await self.query_soa(wait=0.5)
                return
            except (dns.exception.DNSException, OSError, PowerDNSError) as exc:
                last = str(exc) or type(exc).__name__
            await asyncio.sleep(0.05)
        raise PowerDNSError(
            f"PowerDNS did not answer on {self.plan.listen} within {self.timeout:g}s "
            f"({last}): {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            lines = self.plan.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:]) or "(empty log)"

    async def query_soa(self, wait: float = 1.0) -> None:
        """One SOA query for the zone over UDP; raise unless PowerDNS answers NOERROR."""
        query = dns.message.make_query(self.plan.zone, "SOA")
        answer = await dns.asyncquery.udp(
            query, self.plan.listen_host, port=self.plan.listen_port, timeout=wait
        )
        if answer.rcode() != dns.rcode.NOERROR:
            raise PowerDNSError(f"SOA query answered {dns.rcode.to_text(answer.rcode())}")

    async def control(self, *args: str) -> str:
        """``pdns_control ARGS`` against this server, with a timeout; its answer."""
        proc = await asyncio.create_subprocess_exec(
            find_binary(self.control_binary),
            f"--config-dir={self.plan.state_dir}",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise PowerDNSError(f"pdns_control {' '.join(args)} timed out") from None
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0:
            raise PowerDNSError(f"pdns_control {' '.join(args)} failed: {text}")
        return text

    async def reload(self) -> float:
        """Make PowerDNS serve the files on disk now; the seconds it took."""
        started = time.monotonic()
        await self.control("reload")
        await self.control("purge")
        return time.monotonic() - started

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after the timeout; the PID file goes."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            log.info("dns.pdns_stopped", pid=proc.pid, code=proc.returncode)
        self.plan.pid_file.unlink(missing_ok=True)
