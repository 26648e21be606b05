"""Helpers of the I/O fault tests: a private dockerd to freeze, a PostgreSQL to stop.

Freezing the dockerd the other docker tests share would disturb them, so the
dockerd test runs an Engine of its own: own data root, exec root, unix socket,
pid file and bridge (``--iptables=false``: published loopback ports go through
docker-proxy, which needs no rules), stopped and removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
import requests

from tests.fixtures.postgres import PostgresCluster, _pg, _run_as, find_pg_bin

DOCKERD_START_TIMEOUT = 60.0


@dataclass
class PrivateDockerd:
    host: str  # DOCKER_HOST value
    pid: int
    client: docker.DockerClient
    root: Path


def _answers(host: str) -> docker.DockerClient | None:
    if not Path(host.removeprefix("unix://")).exists():
        return None  # a failed connect to a missing socket leaks it inside urllib3
    # a fixed API version: the constructor makes no call (so nothing leaks when it fails)
    client = docker.DockerClient(base_url=host, timeout=10, version="1.41")
    try:
        client.version()
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        client.close()
        return None
    return client


def _free_subnet() -> str:
    used = subprocess.run(
        ["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    for _ in range(50):
        candidate = f"172.29.{random.randint(1, 254)}"
        if f" {candidate}." not in used:
            return candidate
    raise RuntimeError("no free 172.29.x.0/24 for the private dockerd's bridge")


@contextlib.contextmanager
def private_dockerd() -> Iterator[PrivateDockerd]:
    """Start a dockerd of our own; always stopped (SIGCONT first) and cleaned up."""
    dockerd = shutil.which("dockerd")
    if dockerd is None or shutil.which("ip") is None:
        pytest.skip("dockerd or ip not installed")
    if os.geteuid() != 0:
        pytest.skip("only root can start a dockerd here")
    root = Path(tempfile.mkdtemp(prefix="skio-", dir="/tmp"))  # short: unix socket path
    bridge = f"br-io{uuid.uuid4().hex[:6]}"
    net = _free_subnet()
    ip = ["ip"]
    subprocess.run([*ip, "link", "add", bridge, "type", "bridge"], check=True, timeout=10)
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([*ip, "addr", "add", f"{net}.1/24", "dev", bridge], check=True, timeout=10)
        subprocess.run([*ip, "link", "set", bridge, "up"], check=True, timeout=10)
        host = f"unix://{root}/docker.sock"
        with (root / "dockerd.log").open("ab") as log:
            argv = [dockerd, "--data-root", str(root / "data"), "--exec-root", str(root / "exec")]
            argv += ["-H", host, "--pidfile", str(root / "docker.pid"), "--bridge", bridge]
            argv += ["--iptables=false", "--ip-masq=false"]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + DOCKERD_START_TIMEOUT
        client = _answers(host)
        while client is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "dockerd.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"private dockerd did not answer:\n{tail}")
            time.sleep(0.2)
            client = _answers(host)
        try:
            yield PrivateDockerd(host, proc.pid, client, root)
        finally:
            client.close()
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # never leave it frozen
            cleanup = docker.DockerClient(
                base_url=f"unix://{root}/docker.sock", timeout=30, version="1.41"
            )  # a fixed version: the constructor makes no call that could raise here
            with contextlib.suppress(Exception):  # best effort: the daemon may be gone
                for summary in cleanup.api.containers(all=True):
                    cleanup.api.remove_container(summary["Id"], force=True, v=True)
            cleanup.close()
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        subprocess.run([*ip, "link", "del", bridge], check=False, timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def livez(api: str) -> tuple[int, dict[str, Any]]:
    """``/livez`` of the controller: status and body (no token needed)."""
    try:
        response = httpx.get(f"http://{api}/livez", timeout=3, trust_env=False)
    except httpx.HTTPError as exc:
        return 0, {"error": str(exc)}
    return response.status_code, response.json()


# -- PostgreSQL ---------------------------------------------------------------------


def pg_ctl(cluster: PostgresCluster, *args: str) -> None:
    """Run ``pg_ctl`` on the test cluster as the server's user."""
    bindir = find_pg_bin()
    assert bindir is not None
    _pg(_run_as(), bindir / "pg_ctl", *args)


def stop_postgres(cluster: PostgresCluster) -> None:
    pg_ctl(cluster, "stop", "-D", str(cluster.data_dir), "-m", "fast", "-w", "-t", "60")


def start_postgres(cluster: PostgresCluster) -> None:
    """Start it again on the same port and socket dir, as ``running_cluster`` did."""
    options = (
        f"-p {cluster.port} -k {cluster.socket_dir} -c listen_addresses=127.0.0.1 "
        "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    )
    log = cluster.data_dir.parent / "server.log"
    data = str(cluster.data_dir)
    pg_ctl(cluster, "start", "-D", data, "-w", "-t", "60", "-l", str(log), "-o", options)
