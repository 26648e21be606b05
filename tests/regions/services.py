"""Per-region services inside the region namespaces: PostgreSQL, Redis, an in-zone standby.

Each region's PostgreSQL listens on ``<region address>:5432`` and on 127.0.0.1 inside
its namespace (ports are per namespace, so every region uses the same well-known
ports), with a unix socket directory of its own (sockets are files shared by every
namespace, and two clusters on port 5432 in one directory would collide on
``.s.PGSQL.5432``). Trust auth on loopback and the test /24 only.

Clusters are copies of one ``initdb`` template (initdb once, ``cp -a`` per region: a
copy is much cheaper than initdb on a busy 2-core machine). The server refuses to run
as root, so it runs as the user :mod:`tests.fixtures.postgres` picks, entered with
``setpriv`` after ``ip netns exec`` (which itself needs root).

A standby is ``pg_basebackup -R -X stream`` from the primary, run inside the holder's
namespace (so the primary sees the holder's address), started on port 5433 there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.fixtures.postgres import SUPERUSER, PostgresCluster
from tests.regions.hosts import RegionHosts, running

PG_PORT = 5432
STANDBY_PORT = 5433
REDIS_PORT = 6379
_FAST = "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"


@dataclass(frozen=True)
class RegionRedis:
    region: str
    host: str
    port: int

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"


@dataclass(frozen=True)
class Standby:
    """A streaming replica of ``of``'s primary, running in ``region``."""

    of: str
    region: str
    cluster: PostgresCluster
    primary_conninfo_host: str
    """host:port the standby streams from (the primary, or a delay proxy to it)."""


@dataclass
class RegionServices:
    """What :func:`start_region_services` started, by region."""

    postgres: dict[str, PostgresCluster] = field(default_factory=dict)
    redis: dict[str, RegionRedis] = field(default_factory=dict)
    standbys: dict[str, Standby] = field(default_factory=dict)
    """Keyed by the region whose primary they follow (``standbys["eu-west"]``)."""


class _Pg:
    """PostgreSQL binaries and the unprivileged user they run as."""

    def __init__(self) -> None:
        # private helpers of the postgres fixture, as tests/fixtures/pg_replica.py does
        from tests.fixtures.postgres import _run_as, find_pg_bin

        bindir = find_pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found: install postgresql")
        self.bindir = bindir
        entry = _run_as()
        self.user = None if entry is None else entry.pw_name
        self.uid = -1 if entry is None else entry.pw_uid
        self.gid = -1 if entry is None else entry.pw_gid

    def own_dir(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if self.uid >= 0:
            os.chown(path, self.uid, self.gid)
        return path

    def bin(self, name: str) -> str:
        return str(self.bindir / name)


def _hba(subnet: str) -> str:
    return (
        "local all all trust\n"
        "local replication all trust\n"
        "host all all 127.0.0.1/32 trust\n"
        "host replication all 127.0.0.1/32 trust\n"
        f"host all all {subnet} trust\n"
        f"host replication all {subnet} trust\n"
    )


def _template(hosts: RegionHosts, pg: _Pg) -> Path:
    """One initdb'd data directory (made once per RegionHosts) that regions copy."""
    data = hosts.workdir / "pg-template" / "data"
    if not data.exists():
        pg.own_dir(data.parent)
        # initdb needs no network: run it in the first region like everything else
        hosts.check_call(hosts.regions[0], [pg.bin("initdb"), "-D", str(data), "-U", SUPERUSER,
                         "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                         user=pg.user)  # fmt: skip
        (data / "pg_hba.conf").write_text(_hba(str(hosts.subnet)))
    return data


def _start_cluster(
    hosts: RegionHosts, pg: _Pg, region: str, base: Path, port: int
) -> PostgresCluster:
    """Start the cluster in ``base/data`` inside ``region``; stopped at the hosts' close."""
    data, sockets = base / "data", pg.own_dir(base / "run")
    address = hosts.address(region)
    options = (
        f"-p {port} -k {sockets} -c listen_addresses='127.0.0.1,{address}' {_FAST} "
        "-c wal_level=logical -c max_wal_senders=10 -c hot_standby=on "
        "-c wal_receiver_timeout=5s -c wal_retrieve_retry_interval=500ms"
    )
    argv = [pg.bin("pg_ctl"), "start", "-D", str(data), "-w", "-t", "60",
            "-l", str(base / "server.log"), "-o", options]  # fmt: skip
    try:
        hosts.check_call(region, argv, user=pg.user)
    except RuntimeError as exc:
        log = base / "server.log"
        text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"{exc}\nserver log:\n{text}") from None

    def stop() -> None:
        pid_file = data / "postmaster.pid"
        if not pid_file.exists() or not running(int(pid_file.read_text().split()[0])):
            return  # stopped, or killed by a test (hosts.kill(..., spare=False))
        hosts.check_call(region, [pg.bin("pg_ctl"), "stop", "-D", str(data), "-m", "immediate",
                         "-w", "-t", "30"], user=pg.user, timeout=40)  # fmt: skip

    hosts.on_close(f"postgres {base.name}", stop)
    # the postmaster (first line of postmaster.pid): spared by hosts.kill with its children
    hosts.infrastructure.add(int((data / "postmaster.pid").read_text().split()[0]))
    return PostgresCluster(address, port, sockets, data)


def start_postgres(hosts: RegionHosts, region: str, port: int = PG_PORT) -> PostgresCluster:
    """A primary PostgreSQL of ``region`` on ``<address>:port`` and 127.0.0.1 in its netns."""
    pg = _Pg()
    template = _template(hosts, pg)
    base = pg.own_dir(hosts.workdir / f"pg-{region}")
    subprocess.run(["cp", "-a", str(template), str(base / "data")], check=True, timeout=60)
    return _start_cluster(hosts, pg, region, base, port)


def start_standby(
    hosts: RegionHosts,
    primary: PostgresCluster,
    of: str,
    region: str,
    port: int = STANDBY_PORT,
    rtt: float | None = None,
) -> Standby:
    """A hot standby of ``of``'s ``primary`` running in ``region`` (streaming, ``-R``).

    With ``rtt`` (ms) the standby streams through a delay proxy in its own namespace, as
    it would across regions; otherwise straight over the bridge.
    """
    pg = _Pg()
    source = f"{primary.host}:{primary.port}"
    if rtt is not None:
        source = hosts.link(region, of, primary.port, rtt)
    host, _, source_port = source.rpartition(":")
    base = pg.own_dir(hosts.workdir / f"pg-standby-{of}-in-{region}")
    hosts.check_call(region, [pg.bin("pg_basebackup"), "-h", host, "-p", source_port,
                     "-U", SUPERUSER, "-D", str(base / "data"), "-R", "-X", "stream",
                     "--no-sync"], user=pg.user)  # fmt: skip
    cluster = _start_cluster(hosts, pg, region, base, port)
    return Standby(of, region, cluster, source)


def promote(hosts: RegionHosts, standby: Standby) -> None:
    """``pg_ctl promote -w``: the standby becomes a primary (for tests that do it by hand)."""
    pg = _Pg()
    hosts.check_call(standby.region, [pg.bin("pg_ctl"), "promote", "-D",
                     str(standby.cluster.data_dir), "-w", "-t", "30"], user=pg.user)  # fmt: skip


def _redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(
    hosts: RegionHosts, region: str, port: int = REDIS_PORT, timeout: float = 10.0
) -> RegionRedis:
    """A redis-server of ``region`` on ``<address>:port`` and 127.0.0.1 in its netns."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server")
    workdir = hosts.workdir / f"redis-{region}"
    workdir.mkdir(exist_ok=True)
    address = hosts.address(region)
    proc = hosts.run(
        region,
        [binary, "--port", str(port), "--bind", "127.0.0.1", address, "--protected-mode", "no",
         "--dir", str(workdir), "--save", "", "--appendonly", "no", "--daemonize", "no",
         "--logfile", str(workdir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not _redis_ping(address, port):  # from the root namespace, over the bridge
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (workdir / "redis.log").read_text(errors="replace")[-2000:]
            hosts.stop(proc)
            raise RuntimeError(f"redis-server in {region} did not start:\n{log}")
        time.sleep(0.02)  # poll interval; the loop checks readiness
    hosts.infrastructure.add(proc.pid)  # spared by hosts.kill
    return RegionRedis(region, address, port)


def start_region_services(
    hosts: RegionHosts,
    standbys: dict[str, str] | None = None,
    standby_rtt: dict[str, float] | None = None,
) -> RegionServices:
    """PostgreSQL and Redis in every region, plus ``standbys`` ({of: holder region}).

    Everything is stopped at ``hosts``' close; on a failure half way, what started is
    stopped there too (the caller's ``RegionHosts.create`` block ends).
    """
    services = RegionServices()
    for region in hosts.regions:
        services.postgres[region] = start_postgres(hosts, region)
        services.redis[region] = start_redis(hosts, region)
    for of, holder in (standbys or {}).items():
        rtt = (standby_rtt or {}).get(of)
        services.standbys[of] = start_standby(hosts, services.postgres[of], of, holder, rtt=rtt)
    return services
