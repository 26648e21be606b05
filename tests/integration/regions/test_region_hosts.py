"""The region hosts harness on real namespaces: bridge, cuts, delay, per-region services.

Lean on purpose (< 60 s): the hosts and services are built once for the session.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from tests.polling import wait_for
from tests.regions.fixtures import REGIONS
from tests.regions.hosts import PREFIX, STATE_DIR, RegionHosts, read_line, region_rtt, remove_stale
from tests.regions.services import RegionServices, start_postgres

ECHO_PORT = 7000
ECHO = textwrap.dedent(
    """
    import socket, sys, threading
    srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
    print("ready", flush=True)
    def serve(conn, peer):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(peer[0].encode() + b" " + data)
    while True:
        conn, peer = srv.accept()
        threading.Thread(target=serve, args=(conn, peer), daemon=True).start()
    """
)
CLIENT = textwrap.dedent(
    """
    import json, socket, sys, time
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        started = time.monotonic()
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.settimeout(3.0)
            rtts = []
            for _ in range(3):
                t = time.monotonic()
                sock.sendall(b"hi")
                reply = sock.recv(100)
                rtts.append(time.monotonic() - t)
        print(json.dumps({"ok": True, "reply": reply.decode(), "rtts": rtts}))
    except OSError as exc:
        print(json.dumps({"ok": False, "error": repr(exc),
                          "after": time.monotonic() - started}))
    """
)


def _echo(hosts: RegionHosts, region: str) -> None:
    proc = hosts.run(region, [sys.executable, "-c", ECHO, str(ECHO_PORT)],
                     stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert read_line(proc, 10).strip() == "ready"


def _call(hosts: RegionHosts, region: str, target: str) -> dict[str, object]:
    """Connect from ``region`` to ``target`` (host:port) and exchange three messages."""
    host, _, port = target.rpartition(":")
    done = hosts.check_call(region, [sys.executable, "-c", CLIENT, host, port], timeout=30)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_namespaces_talk_over_the_bridge_with_their_own_addresses(
    region_hosts: RegionHosts,
) -> None:
    hosts = region_hosts
    _echo(hosts, "eu-west")
    target = f"{hosts.address('eu-west')}:{ECHO_PORT}"
    result = _call(hosts, "us", target)
    # the server sees the client's own address: edges can trust peers by source
    assert result["ok"] and result["reply"] == f"{hosts.address('us')} hi", result
    # loopback is up in every namespace, and private to it
    assert _call(hosts, "eu-west", f"127.0.0.1:{ECHO_PORT}")["ok"]
    assert not _call(hosts, "us", f"127.0.0.1:{ECHO_PORT}")["ok"]


def test_clients_come_from_addresses_of_their_own(region_hosts: RegionHosts) -> None:
    """A client namespace, or a root-side source address, for source-address (geo) tests."""
    hosts = region_hosts
    _echo(hosts, "eu-central")
    target = f"{hosts.address('eu-central')}:{ECHO_PORT}"
    name = f"client-{time.monotonic_ns()}"
    client = hosts.add_client(name)
    assert client not in {hosts.address(r) for r in hosts.regions} and name not in hosts.regions
    assert _call(hosts, name, target)["reply"] == f"{client} hi"
    source = hosts.add_source_address()
    with socket.create_connection(
        (hosts.address("eu-central"), ECHO_PORT), timeout=3, source_address=(source, 0)
    ) as sock:
        sock.sendall(b"hi")
        assert sock.recv(100) == f"{source} hi".encode()


def test_a_cut_region_times_out_and_restore_brings_it_back(region_hosts: RegionHosts) -> None:
    hosts = region_hosts
    _echo(hosts, "asia")
    target = f"{hosts.address('asia')}:{ECHO_PORT}"
    assert _call(hosts, "eu-central", target)["ok"]
    hosts.cut("asia")
    assert hosts.is_cut("asia")
    failed = _call(hosts, "eu-central", target)
    assert not failed["ok"] and "timed out" in str(failed["error"]), failed
    hosts.restore("asia")
    wait_for(lambda: _call(hosts, "eu-central", target)["ok"], 10, "asia reachable again")


def test_link_adds_the_round_trip_and_keeps_the_source_address(
    region_hosts: RegionHosts,
) -> None:
    hosts = region_hosts
    _echo(hosts, "eu-west")
    via = hosts.link("us", "eu-west", ECHO_PORT, rtt=90)
    assert via.startswith("127.0.0.1:")
    result = _call(hosts, "us", via)
    assert result["ok"] and result["reply"] == f"{hosts.address('us')} hi", result
    rtts = result["rtts"]
    assert isinstance(rtts, list)
    assert min(rtts) >= 0.090, rtts  # a lower bound: the delay is never skipped
    # a cut behind the proxy: the local connect succeeds, then the proxy resets it
    hosts.cut("eu-west")
    assert not _call(hosts, "us", via)["ok"]


def test_mesh_gives_every_pair_its_zone_round_trip(region_hosts: RegionHosts) -> None:
    hosts = region_hosts
    for region in hosts.regions:
        _echo(hosts, region)
    listen = {region: 17000 + i for i, region in enumerate(hosts.regions)}
    peers = hosts.mesh(dict.fromkeys(hosts.regions, ECHO_PORT), listen, region_rtt(REGIONS))
    assert set(peers) == set(hosts.regions)
    for src, dst, rtt in (("eu-west", "eu-central", 40), ("us", "eu-west", 90),
                          ("eu-central", "asia", 150)):  # fmt: skip
        result = _call(hosts, src, peers[dst])
        assert result["ok"] and result["reply"] == f"{hosts.address(src)} hi", result
        rtts = result["rtts"]
        assert isinstance(rtts, list) and min(rtts) >= rtt / 1000, (src, dst, rtts)


def test_haproxy_runs_in_a_region(region_hosts: RegionHosts) -> None:
    """Master-worker HAProxy in a namespace, bound to the region's address and loopback;
    its admin socket is a file, reachable from the root namespace."""
    hosts = region_hosts
    workdir = hosts.workdir / f"haproxy-{time.monotonic_ns()}"
    workdir.mkdir()
    address = hosts.address("us")
    (workdir / "haproxy.cfg").write_text(
        textwrap.dedent(
            f"""
            global
                stats socket {workdir}/admin.sock mode 600 level admin
            defaults
                mode http
                timeout connect 1s
                timeout client 5s
                timeout server 5s
            frontend edge
                bind 127.0.0.1:8080
                bind {address}:8080
                http-request return status 200 content-type text/plain string "us"
            """
        )
    )
    hosts.run("us", ["haproxy", "-W", "-db", "-f", str(workdir / "haproxy.cfg")],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def answered() -> bool:
        with socket.socket(socket.AF_UNIX) as admin:
            try:
                admin.connect(str(workdir / "admin.sock"))
            except OSError:
                return False
            admin.sendall(b"show info\n")
            return b"Name: HAProxy" in admin.recv(4096)

    wait_for(answered, 10, "HAProxy's admin socket")
    curl = ["curl", "-sS", "-m", "3", f"http://{address}:8080/"]
    assert hosts.check_call("asia", curl, timeout=10).stdout == "us"
    local = ["curl", "-sS", "-m", "3", "http://127.0.0.1:8080/"]
    assert hosts.check_call("us", local, timeout=10).stdout == "us"


def _server_addr(dsn: str) -> str:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        row = conn.execute("select host(inet_server_addr())").fetchone()
        assert row is not None
        return str(row[0])


def test_each_region_has_its_own_postgres_and_redis(
    region_hosts: RegionHosts, region_services: RegionServices
) -> None:
    hosts = region_hosts
    for region in hosts.regions:
        cluster = region_services.postgres[region]
        assert cluster.host == hosts.address(region)
        assert _server_addr(cluster.dsn()) == hosts.address(region)  # over the bridge
    # a region reaches another's database from its own namespace (psql runs there)
    west = region_services.postgres["eu-west"]
    out = hosts.check_call(
        "us", ["psql", "-XAtq", "-h", west.host, "-p", str(west.port), "-U", "skylift",
               "-c", "select host(inet_client_addr())", "postgres"], timeout=30,
    )  # fmt: skip
    assert out.stdout.strip() == hosts.address("us")
    redis = region_services.redis["asia"]
    assert redis.host == hosts.address("asia")
    hosts.cut("eu-west")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(west.dsn(), connect_timeout=1).close()


def test_the_standby_in_eu_central_replays_eu_west(
    region_hosts: RegionHosts, region_services: RegionServices
) -> None:
    primary = region_services.postgres["eu-west"]
    standby = region_services.standbys["eu-west"]
    assert standby.region == "eu-central"
    assert standby.cluster.host == region_hosts.address("eu-central")
    marker = f"row-{time.monotonic_ns()}"
    with psycopg.connect(primary.dsn(), autocommit=True, connect_timeout=3) as conn:
        conn.execute("create table if not exists hosts_probe (v text)")
        conn.execute("insert into hosts_probe values (%s)", (marker,))

    def replayed() -> bool:
        try:
            with psycopg.connect(standby.cluster.dsn(), connect_timeout=2) as conn:
                row = conn.execute(
                    "select pg_is_in_recovery(), exists(select 1 from hosts_probe where v = %s)",
                    (marker,),
                ).fetchone()
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
            return False
        assert row is not None and row[0] is True  # still a standby
        return bool(row[1])

    wait_for(replayed, 15, "the row replayed on the standby")


def test_kill_takes_a_region_down_but_spares_its_services(
    region_hosts: RegionHosts, region_services: RegionServices
) -> None:
    hosts = region_hosts
    before = hosts.snapshot()
    _echo(hosts, "eu-central")
    # a daemonized process (like `skylift up --detach`): not a child the harness tracks
    hosts.check_call("eu-central", ["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 &"])
    started = hosts.pids("eu-central") - before["eu-central"]
    assert len(started) >= 2
    killed = hosts.kill("eu-central")
    assert started <= killed
    failed = _call(hosts, "us", f"{hosts.address('eu-central')}:{ECHO_PORT}")
    assert not failed["ok"] and "ConnectionRefused" in str(failed["error"]), failed
    # its databases stay up (the standby of eu-west included), as on a host of their own
    assert _server_addr(region_services.postgres["eu-central"].dsn()) == hosts.address("eu-central")
    assert _server_addr(region_services.standbys["eu-west"].cluster.dsn())


def test_reap_stops_what_appeared_during_a_test(
    region_hosts: RegionHosts, region_services: RegionServices
) -> None:
    hosts = region_hosts
    before = hosts.snapshot()
    hosts.check_call("asia", ["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 &"])
    via = hosts.link("asia", "us", 5432, rtt=150)
    with psycopg.connect(region_services.postgres["asia"].dsn(), connect_timeout=3):
        hosts.reap(before)  # a PostgreSQL backend that appeared meanwhile is spared
        left = hosts.pids("asia") - before["asia"]
        assert left and left <= _backends(hosts, "asia")  # the sleeper and proxy are gone
    assert via


def _backends(hosts: RegionHosts, region: str) -> set[int]:
    return {
        pid
        for pid in hosts.pids(region)
        if "postgres" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    }


def _leftovers(tag: str) -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10)
    return [line for line in (names.stdout + links.stdout).splitlines() if tag in line]


def test_everything_is_removed_even_after_a_failure() -> None:
    """A failing block still removes its namespaces and processes, and a host whose
    PostgreSQL a test killed outright still closes cleanly."""
    tag = ""
    pid = 0
    with pytest.raises(RuntimeError, match="boom"), RegionHosts.create(["a", "b"]) as hosts:
        tag = hosts.tag
        pid = hosts.run("a", ["sleep", "300"]).pid
        start_postgres(hosts, "b")
        assert _leftovers(tag)
        hosts.kill("b", spare=False)  # the whole host, its database included
        raise RuntimeError("boom")  # a cleanup error would replace it
    assert not _leftovers(tag)
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True, timeout=5).returncode


def test_a_killed_run_is_cleaned_up_by_the_next() -> None:
    """SIGKILL a run that holds namespaces and a process: the next run removes both."""
    script = textwrap.dedent(
        """
        import sys
        from tests.regions.hosts import RegionHosts
        with RegionHosts.create(["x"]) as hosts:
            proc = hosts.run("x", ["sleep", "300"])
            print(hosts.tag, proc.pid, flush=True)
            sys.stdin.read()
        """
    )
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as run:  # fmt: skip
        try:
            assert run.stdout is not None
            tag, sleeper = run.stdout.readline().split()
            assert tag.startswith(PREFIX) and (STATE_DIR / f"{tag}.pid").exists()
        finally:
            run.send_signal(signal.SIGKILL)
            run.wait(10)
    assert _leftovers(tag)  # nothing ran its cleanup
    workdir = Path(tempfile.gettempdir()) / f"skylift-hosts-{tag}"
    assert workdir.exists()
    removed = remove_stale()
    assert any(name.startswith(tag) for name in removed), removed
    wait_for(lambda: not _leftovers(tag), 10, "stale namespaces and links gone")
    wait_for(
        lambda: subprocess.run(["kill", "-0", sleeper], capture_output=True, timeout=5).returncode,
        5,
        "the stale run's process killed",
    )
    assert not workdir.exists()
