"""Regions as real hosts in tests: one network namespace per region, joined by a bridge.

Layout (``tag`` = ``skr<pid>x<n>``, unique per instance)::

    root namespace (pytest)          switch namespace <tag>-sw           <tag>-<region>
      <tag>r 10.213.X.1/24 ---veth--- root   \\                       /--- eth0 10.213.X.2/24
                                               br0 --- p0 ---veth-----     lo 127.0.0.1 (up)
                                               br0 --- p1 ---veth--- <tag>-<region2> eth0 .3

Why the bridge lives in a namespace of its own, not in the root namespace: Docker sets
the root ``FORWARD`` policy to ``DROP`` and ``bridge-nf-call-iptables`` is 1 here, so
frames bridged between two veths in the root namespace are dropped by iptables (a
per-bridge ``nf_call_iptables 0`` does not help: the global sysctl wins). A fresh
namespace has an empty ruleset, so bridging there just works, and the root's firewall is
never touched. The root namespace still reaches every region through its own port.

A region's link is cut by setting its switch port down (``cut``/``restore``): packets to
and from it are dropped, so connections time out as to a dead host (``kill`` instead
kills its processes: connections are refused at once). Unix sockets are
files, not network: a cut does not stop a process from reaching another region's unix
socket, so region services use TCP to each other and unix sockets only locally.

Stale state of a killed earlier run (namespaces, the root veth, processes in those
namespaces) is removed at start: each run writes ``/run/skylift-hosts/<tag>.pid`` (pid and
process start time); a tag whose process is gone is cleaned up.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import os
import pwd
import random
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_DIR = Path("/run/skylift-hosts")
PREFIX = "skr"
SUBNET_BASE = "10.213"
"""Test addresses come from 10.213.X.0/24, X chosen free at run time."""

_TAG = re.compile(rf"^({PREFIX}(\d+)x\d+)(?:-|r$)")
_instances = itertools.count()

RTT_MS: dict[frozenset[str], float] = {
    frozenset({"eu"}): 40.0,
    frozenset({"eu", "us"}): 90.0,
    frozenset({"eu", "asia"}): 150.0,
    frozenset({"us", "asia"}): 150.0,
}
"""Round trip between two zones (issue 13: 40 ms inside the EU, 90 EU-US, 150 EU-Asia;
US-Asia is not given there and is taken as 150)."""


def rtt_ms(zone_a: str, zone_b: str) -> float:
    """Emulated round trip between two zones (a zone with itself: the EU figure)."""
    return RTT_MS.get(frozenset({zone_a, zone_b}), RTT_MS[frozenset({"eu"})])


def region_rtt(zones: Mapping[str, str]) -> Callable[[str, str], float]:
    """``rtt(src, dst)`` in ms for regions given their zones (``{"eu-west": "eu", ...}``)."""
    return lambda src, dst: rtt_ms(zones[src], zones[dst])


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be used here (not root, no ``ip netns``)."""


def _ip(*args: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def netns_unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"{PREFIX}{os.getpid()}x0-probe"
    try:
        added = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns add failed: {exc}"
    if added.returncode != 0:
        return f"ip netns add failed: {added.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): tells a reused pid from ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(tag: str) -> bool:
    """Whether the run that owns ``tag`` still runs (its pid file names a live process)."""
    try:
        pid_text, started = (STATE_DIR / f"{tag}.pid").read_text().split()
    except (OSError, ValueError):
        return False
    return _start_time(int(pid_text)) == started


def _workdir(tag: str) -> Path:
    """Data dirs, sockets and logs of one instance (not pytest's tmp_path: that is
    root-only 0700, and PostgreSQL runs as another user)."""
    return Path(tempfile.gettempdir()) / f"skylift-hosts-{tag}"


def _kill_pids_in(namespace: str) -> None:
    """SIGKILL every process still in ``namespace`` (only our own namespaces get here)."""
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def remove_stale() -> list[str]:
    """Remove namespaces, root veths and processes of earlier runs that were killed."""
    removed: list[str] = []
    namespaces = [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line]
    links = [
        line.split(":")[1].strip().split("@")[0]
        for line in _ip("-o", "link", "show").stdout.splitlines()
    ]
    for name in namespaces + links:
        match = _TAG.match(name)
        if match is None:
            continue
        tag = match.group(1)
        if int(match.group(2)) == os.getpid() or _alive(tag):
            continue
        if name in namespaces:
            _kill_pids_in(name)
            _ip("netns", "del", name, check=False)
        else:
            _ip("link", "del", name, check=False)
        removed.append(name)
        shutil.rmtree(_workdir(tag), ignore_errors=True)
        with contextlib.suppress(OSError):
            (STATE_DIR / f"{tag}.pid").unlink()
    return removed


def _used_subnets() -> set[int]:
    """Third octets of 10.213.X.0/24 already on an interface or route of the root namespace."""
    text = _ip("-4", "-o", "addr", "show").stdout + _ip("-4", "route", "show").stdout
    return {int(x) for x in re.findall(rf"\b{re.escape(SUBNET_BASE)}\.(\d+)\.", text)}


@dataclass
class Host:
    """One region's namespace: its name, address and switch port."""

    region: str
    namespace: str
    address: str
    port: str
    """Its veth end in the switch namespace (set down to cut the region)."""
    kind: str = "region"
    """``region`` or ``client`` (:meth:`RegionHosts.add_client`)."""


@dataclass
class RegionHosts:
    """Network namespaces as region hosts; build with :meth:`create` (a context manager).

    ``run`` starts a process inside a region (tracked, stopped at close); ``cut`` and
    ``restore`` take a region's link down and up, ``kill`` kills its processes (an
    outage either way); ``link``/``links``/``mesh`` start delay proxies so that a process
    in one region reaches another region's port with an emulated round trip;
    ``add_client``/``add_source_address`` give clients addresses of their own.
    """

    tag: str
    subnet: ipaddress.IPv4Network
    hosts: dict[str, Host]
    switch: str
    root_link: str
    workdir: Path
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    _cleanups: list[tuple[str, Any]] = field(default_factory=list)
    _aliases: list[str] = field(default_factory=list)
    infrastructure: set[int] = field(default_factory=set)
    """Pids :meth:`kill` spares with their descendants: services and delay proxies."""

    # ------------------------------------------------------------------ building
    @classmethod
    @contextlib.contextmanager
    def create(cls, regions: Sequence[str]) -> Iterator[RegionHosts]:
        """Namespaces for ``regions`` joined by a bridge; everything removed afterwards.

        Raises :class:`NetnsUnavailable` when namespaces cannot be used here.
        """
        reason = netns_unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        if len(set(regions)) != len(regions) or len(regions) > 250:
            raise ValueError(f"regions must be distinct (and at most 250): {regions}")
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tag = f"{PREFIX}{os.getpid()}x{next(_instances)}"  # unique per instance and run
        workdir = _workdir(tag)
        hosts: RegionHosts | None = None
        try:
            with open(STATE_DIR / "lock", "w") as lock:
                # one run at a time picks its /24 and claims it by addressing its root link
                fcntl.flock(lock, fcntl.LOCK_EX)
                remove_stale()
                (STATE_DIR / f"{tag}.pid").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
                free = sorted(set(range(1, 255)) - _used_subnets())
                if not free:
                    raise RuntimeError(f"no free {SUBNET_BASE}.X.0/24 left")
                subnet = ipaddress.IPv4Network(f"{SUBNET_BASE}.{random.choice(free)}.0/24")
                hosts = cls._build(tag, subnet, list(regions), workdir)
            yield hosts
        finally:
            try:
                if hosts is not None:
                    hosts.close()
                else:  # the build failed half way: remove whatever it made
                    _teardown(tag)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
                with contextlib.suppress(OSError):
                    (STATE_DIR / f"{tag}.pid").unlink()

    @classmethod
    def _build(
        cls, tag: str, subnet: ipaddress.IPv4Network, regions: list[str], workdir: Path
    ) -> RegionHosts:
        addresses = list(subnet.hosts())
        switch, root_link = f"{tag}-sw", f"{tag}r"
        _ip("netns", "add", switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        _ip("link", "add", root_link, "type", "veth", "peer", "name", "root", "netns", switch)
        _ip("-n", switch, "link", "set", "root", "master", "br0", "up")
        _ip("addr", "add", f"{addresses[0]}/{subnet.prefixlen}", "dev", root_link)
        _ip("link", "set", root_link, "up")
        workdir.mkdir(mode=0o755, exist_ok=True)
        built = cls(tag, subnet, {}, switch, root_link, workdir)
        for region in regions:
            built._add_host(region, "region")
        return built

    def add_client(self, name: str) -> str:
        """Another namespace on the bridge that is not a region: a client host with an
        address of its own (e.g. for source-address geo tests); returns its address."""
        return self._add_host(name, "client")

    def _add_host(self, name: str, kind: str) -> str:
        if name in self.hosts:
            raise ValueError(f"{name} is already a host")
        index = len(self.hosts)
        used = {self.root_address, *self._aliases, *(h.address for h in self.hosts.values())}
        address = next(str(a) for a in self.subnet.hosts() if str(a) not in used)
        namespace, port = f"{self.tag}-{name}", f"p{index}"
        _ip("netns", "add", namespace)
        _ip("link", "add", port, "netns", self.switch, "type", "veth",
            "peer", "name", "eth0", "netns", namespace)  # fmt: skip
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        self.hosts[name] = Host(name, namespace, address, port, kind)
        return address

    def add_source_address(self) -> str:
        """A further address of the root namespace on the bridge: bind a client to it
        (``httpx.HTTPTransport(local_address=...)``) to come from an address of its own."""
        used = {self.root_address, *self._aliases, *(h.address for h in self.hosts.values())}
        address = next(str(a) for a in reversed(list(self.subnet.hosts())) if str(a) not in used)
        _ip("addr", "add", f"{address}/32", "dev", self.root_link)
        self._aliases.append(address)
        return address

    # ------------------------------------------------------------------ using
    @property
    def regions(self) -> list[str]:
        """The regions, in creation order (not the client hosts)."""
        return [name for name, host in self.hosts.items() if host.kind == "region"]

    @property
    def root_address(self) -> str:
        """The root namespace's (pytest's) address on the bridge."""
        return str(next(self.subnet.hosts()))

    def address(self, region: str) -> str:
        """The region's (or client host's) address on the bridge (its eth0)."""
        return self.hosts[region].address

    def namespace(self, region: str) -> str:
        return self.hosts[region].namespace

    def argv(self, region: str, argv: Sequence[str], user: str | None = None) -> list[str]:
        """``argv`` wrapped to run inside ``region`` (as ``user`` when given)."""
        wrapped = ["ip", "netns", "exec", self.namespace(region)]
        if user is not None:
            entry = pwd.getpwnam(user)
            # ip netns exec needs root: drop privileges only after entering the namespace
            wrapped += ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                        "--clear-groups", "--"]  # fmt: skip
        return wrapped + [str(a) for a in argv]

    def run(
        self, region: str, argv: Sequence[str], user: str | None = None, **popen: Any
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``region``; stopped (SIGTERM, then SIGKILL) at close.

        ``ip netns exec`` execs the command itself, so the Popen's pid is the process's.
        """
        proc: subprocess.Popen[Any] = subprocess.Popen(self.argv(region, argv, user), **popen)
        self.processes.append(proc)
        return proc

    def check_call(
        self, region: str, argv: Sequence[str], user: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion inside ``region``; its output in the error if it fails."""
        result = subprocess.run(
            self.argv(region, argv, user), capture_output=True, text=True, timeout=timeout,
            cwd="/",
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} in {region} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
        """SIGTERM ``proc`` (one we started), SIGKILL if it does not exit in ``timeout``."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        with contextlib.suppress(ValueError):
            self.processes.remove(proc)

    def pids(self, region: str) -> set[int]:
        """Every process now in ``region``'s namespace."""
        listed = _ip("netns", "pids", self.namespace(region), check=False).stdout.split()
        return {int(pid) for pid in listed}

    def kill(self, region: str, sig: int = signal.SIGKILL, *, spare: bool = True) -> set[int]:
        """An outage by killing: signal every process in ``region`` (returns their pids);
        with SIGKILL, returns once they are gone.

        With ``spare`` (the default), the region's infrastructure (its PostgreSQL, Redis
        and outgoing delay proxies, with their children) survives, like a database on
        a host of its own; ``spare=False`` takes the whole host down for good.
        """
        victims = self.pids(region)
        if spare:
            victims -= _descendants(self.infrastructure)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        for proc in self.processes:
            if proc.pid in victims:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)  # reap our own children (no zombie left in the list)
        if sig == signal.SIGKILL:  # delivered at once, but exiting takes a moment
            deadline = time.monotonic() + 5
            while any(running(pid) for pid in victims) and time.monotonic() < deadline:
                time.sleep(0.01)  # poll: the killed processes leaving
        return victims

    def reap(self, before: Mapping[str, set[int]], timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL, every process in a host that was not there ``before``
        (a snapshot ``{name: hosts.pids(name)}``), spawned or daemonized ones included.

        Infrastructure that was there before (services, delay proxies) is spared with
        its children, even new ones (a PostgreSQL backend per connection); delay
        proxies a test started are reaped like the rest.
        """
        existed = set().union(*before.values()) if before else set()
        spare = _descendants(self.infrastructure & existed)
        new = {
            pid for name in self.hosts for pid in self.pids(name) - before.get(name, set()) - spare
        }
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(running(pid) for pid in new) and time.monotonic() < deadline:
            for proc in self.processes:
                if proc.pid in new:
                    proc.poll()  # reap our own children so they stop counting as running
            time.sleep(0.05)  # poll: processes leaving after SIGTERM
        for pid in new:
            if running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in [p for p in self.processes if p.pid in new]:
            self.stop(proc)
        self.infrastructure -= new

    def snapshot(self) -> dict[str, set[int]]:
        """``{name: pids}`` of every host now: what :meth:`reap` keeps."""
        return {name: self.pids(name) for name in self.hosts}

    def cut(self, region: str) -> None:
        """Cut ``region`` off the network: its packets are dropped, connections time out."""
        _ip("-n", self.switch, "link", "set", self.hosts[region].port, "down")

    def restore(self, region: str) -> None:
        """Bring a cut region's link back."""
        _ip("-n", self.switch, "link", "set", self.hosts[region].port, "up")

    def is_cut(self, region: str) -> bool:
        shown = _ip("-n", self.switch, "-o", "link", "show", self.hosts[region].port).stdout
        return "state DOWN" in shown

    def link(
        self,
        src: str,
        dst: str,
        port: int,
        rtt: float,
        *,
        listen: str = "127.0.0.1:0",
        connect_timeout: float = 2.0,
    ) -> str:
        """``host:port`` in ``src``'s namespace that reaches ``dst``'s ``port`` with ``rtt``
        milliseconds of round trip (half each way), through a delay proxy process.

        The proxy runs in ``src`` so the target sees ``src``'s own address as the source
        (edges trust peers by source address), and a cut of either region makes its
        upstream connection fail (after ``connect_timeout``; a killed target: at once).
        Listening on 127.0.0.1 keeps it private to ``src``.
        """
        return self.links(src, [(dst, port, rtt, listen)], connect_timeout)[0]

    def links(
        self,
        src: str,
        routes: Sequence[tuple[str, int, float, str]],
        connect_timeout: float = 2.0,
    ) -> list[str]:
        """Several delay proxies in ``src``, one process: ``(dst, port, rtt_ms, listen)``
        each; returns where each listens, in order. Stopped at close (or by the function
        fixture when a test started them)."""
        argv = [sys.executable, "-m", "skylift.netdelay",
                "--connect-timeout", f"{connect_timeout:g}"]  # fmt: skip
        for dst, port, rtt, listen in routes:
            argv += ["--route", f"{listen},{self.address(dst)}:{port},{rtt / 2:g}"]
        proc = self.run(src, argv, stdout=subprocess.PIPE, text=True)
        self.infrastructure.add(proc.pid)  # the network: survives a region's kill
        lines = read_lines(proc, len(routes), 10.0)  # one per route once all accept
        if len(lines) < len(routes) or not all(x.startswith("listening on ") for x in lines):
            self.stop(proc)
            raise RuntimeError(f"delay proxies in {src} did not start: {lines!r}")
        return [line.removeprefix("listening on ").strip() for line in lines]

    def mesh(
        self,
        ports: Mapping[str, int],
        listen_ports: Mapping[str, int],
        rtt: Callable[[str, str], float],
        connect_timeout: float = 2.0,
    ) -> dict[str, str]:
        """Delayed paths between every pair of regions, at the same address everywhere.

        For each region ``dst`` in ``ports``, every other region gets a proxy on its own
        ``127.0.0.1:listen_ports[dst]`` to ``dst``'s ``ports[dst]`` with ``rtt(src, dst)``
        ms (loopback is per namespace, so one address serves every source with its own
        delay). Returns ``{dst: "127.0.0.1:PORT"}``: e.g. every edge's ``peers`` map.
        One proxy process per source region.
        """
        for src in self.regions:
            routes = [
                (dst, ports[dst], rtt(src, dst), f"127.0.0.1:{listen_ports[dst]}")
                for dst in ports
                if dst != src
            ]
            if routes:
                self.links(src, routes, connect_timeout)
        return {dst: f"127.0.0.1:{listen_ports[dst]}" for dst in ports}

    def on_close(self, what: str, callback: Any) -> None:
        """Run ``callback()`` at close, before the processes are stopped (last in, first)."""
        self._cleanups.append((what, callback))

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Stop what was started, then remove namespaces and links (errors collected)."""
        errors: list[str] = []
        for what, callback in reversed(self._cleanups):
            try:
                callback()
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                errors.append(f"{what}: {exc}")
        self._cleanups.clear()
        for proc in list(reversed(self.processes)):
            try:
                self.stop(proc)
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"pid {proc.pid}: {exc}")
        _teardown(self.tag)
        if errors:
            raise RuntimeError("region hosts cleanup: " + "; ".join(errors))


def read_lines(proc: subprocess.Popen[Any], count: int, timeout: float) -> list[str]:
    """The first ``count`` lines ``proc`` writes to its stdout pipe, within ``timeout``.

    Fewer when it exits or the time is up. Reads the pipe's file descriptor directly (a
    buffered ``readline`` could hold a second line where ``select`` no longer sees it),
    so do not mix with reads of ``proc.stdout``.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while data.count(b"\n") < count:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    return [line.decode() for line in data.splitlines()[:count]]


def read_line(proc: subprocess.Popen[Any], timeout: float) -> str:
    """The first line of ``proc``'s stdout ("" on EOF or timeout); see :func:`read_lines`."""
    lines = read_lines(proc, 1, timeout)
    return lines[0] if lines else ""


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _descendants(roots: set[int]) -> set[int]:
    """``roots`` and every process below them (from /proc's parent pids)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while listing
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def _teardown(tag: str) -> None:
    """Kill what is left in ``tag``'s namespaces, delete them and the root veth."""
    namespaces = [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line]
    ours = [name for name in namespaces if name.startswith(f"{tag}-")]
    for name in ours:
        _kill_pids_in(name)
    deadline = time.monotonic() + 5
    while any(_ip("netns", "pids", n, check=False).stdout.strip() for n in ours):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)  # poll: SIGKILLed processes leave the namespace
    _ip("link", "del", f"{tag}r", check=False)  # synchronous, unlike a namespace's veths
    for name in ours:
        _ip("netns", "del", name, check=False)
