"""``up``/``down``/``status`` for a multi-region file: one controller process per region.

``up --region NAME`` runs region NAME in this process; ``--region all`` (or
``--detach``) starts one child process per region, each with its own state
dir, store, lock and log. Nothing on one region's control path waits for
another: ``status`` asks every region in parallel with short timeouts and
marks the ones that do not answer.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import typer

from skylift.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Output, emit, fail
from skylift.config import LoadedConfig, split_listen
from skylift.regions.config import (
    RegionSelectionError,
    region_config,
    select_regions,
    shared_host_clashes,
)
from skylift.regions.status import region_entry, status_table

STATUS_TIMEOUT = 3.0
_OFFLINE = threading.Lock()  # opening a store migrates it (alembic): one at a time per process


def region_loaded(root: LoadedConfig, name: str) -> LoadedConfig:
    return LoadedConfig(config=region_config(root.config, name), path=root.path)


def needs_region(root: LoadedConfig) -> str | None:
    """The one-line error for a command run without --region on a multi-region file."""
    if not root.config.edged_regions:
        return None
    return (
        f"{root.path} defines regions with edges ({', '.join(root.config.edged_regions)}): "
        "pass --region NAME or --region all"
    )


def selected(root: LoadedConfig, selector: str) -> list[str]:
    try:
        return select_regions(root.config, selector)
    except RegionSelectionError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def check_shared_host(root: LoadedConfig, names: list[str]) -> None:
    if len(names) < 2:
        return
    clashes = shared_host_clashes(root.config, names)
    if clashes:
        raise fail(
            "these regions cannot run on one host: "
            + "; ".join(clashes)
            + ": give each region its own port_offset",
            EXIT_CONFIG,
        )


# -- up ---------------------------------------------------------------------------


def up_regions(
    root: LoadedConfig, selector: str, *, detach: bool, timeout: float, output: Output
) -> int:
    names = selected(root, selector)
    check_shared_host(root, names)
    if detach:
        return _up_detached(root, names, timeout, output)
    if len(names) == 1:
        from skylift.regions.daemon import serve_region
        from skylift.store import ControllerLockError

        try:
            return asyncio.run(serve_region(root, names[0]))
        except ControllerLockError as exc:
            raise fail(f"region {names[0]}: {exc}") from None
    return _run_children(root, names)


def _spawn(root: LoadedConfig, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    from skylift.api.token import ensure_state_dir

    log_path = ensure_state_dir(region_loaded(root, name).state_dir) / "controller.log"
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "skylift", "up", "-c", str(root.path), "--region", name],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    return child, log_path


def _run_children(root: LoadedConfig, names: list[str]) -> int:
    """Foreground ``--region all``: one child per region; a signal is passed on to each."""
    children = {name: _spawn(root, name)[0] for name in names}
    typer.echo(
        "running "
        + ", ".join(f"{n} (pid {c.pid})" for n, c in children.items())
        + "; Ctrl-C stops the controllers (replicas and edges keep serving)",
        err=True,
    )

    def forward(signum: int, _frame: object) -> None:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children.values()]
    return max(codes, default=0)


def _api_answer(loaded: LoadedConfig, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    """The region controller's ``/api/v1/services``, or why it did not answer."""
    from skylift.client import ApiClient, ApiError, ControllerUnreachable

    try:
        with ApiClient(loaded, timeout=timeout) as api:
            return api.get("/api/v1/services"), None
    except ControllerUnreachable as exc:
        return None, str(exc).split(";", 1)[0]  # without the generic "start one" hint
    except ApiError as exc:
        return None, str(exc)
    except OSError as exc:  # a CA file that cannot be read, say
        return None, f"{type(exc).__name__}: {exc}"


def _edge_ready(root: LoadedConfig, name: str, loaded: LoadedConfig) -> tuple[bool, str]:
    from skylift.regions.edge_state import read_edge_state

    state = read_edge_state(loaded.state_dir)
    kind = state.get("state")
    if kind == "disabled":
        return True, f"edge disabled ({state.get('reason')})"
    if kind != "running":
        return False, f"edge {kind or 'not started'}" + (
            f": {state['error']}" if state.get("error") else ""
        )
    edge = root.config.regions[name].edge
    assert edge is not None
    host, port = split_listen(edge.listen)
    try:
        with socket.create_connection(("127.0.0.1" if host in ("0.0.0.0", "") else host, port), 1):  # noqa: S104
            return True, f"edge on {edge.listen}"
    except OSError as exc:
        return False, f"edge not accepting on {edge.listen} ({exc})"


def _up_detached(root: LoadedConfig, names: list[str], timeout: float, output: Output) -> int:
    loadeds = {n: region_loaded(root, n) for n in names}
    children: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    already = []
    for name, loaded in loadeds.items():
        answer, _ = _api_answer(loaded, 2)
        if answer is not None:
            already.append(name)  # running: `up --region all` after one region came down
            continue
        children[name] = _spawn(root, name)
    deadline = time.monotonic() + timeout
    pending: dict[str, str] = {n: "starting" for n in names}
    done: dict[str, dict[str, Any]] = {}
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            child = children.get(name)
            if child is not None and child[0].poll() is not None:
                tail = child[1].read_text(errors="replace").splitlines()[-15:]
                typer.echo(
                    f"error: region {name}'s controller exited with code {child[0].returncode}; "
                    f"last lines of {child[1]}:\n" + "\n".join(tail),
                    err=True,
                )
                return EXIT_FAILURE
            answer, error = _api_answer(loadeds[name], 2)
            if answer is None:
                pending[name] = f"API not answering ({error})"
                continue
            services = answer.get("services") or {}
            if not services or not all(s["ready"] >= s["desired"] for s in services.values()):
                pending[name] = ", ".join(
                    f"{n} {s['ready']}/{s['desired']} ready" for n, s in services.items()
                )
                continue
            ready, edge_note = _edge_ready(root, name, loadeds[name])
            if not ready:
                pending[name] = edge_note
                continue
            del pending[name]
            pid = children[name][0].pid if name in children else None
            done[name] = {**answer, "pid": pid, "edge": edge_note, "already": name in already}
        if pending:
            time.sleep(0.3)
    if pending:
        typer.echo(
            f"error: not ready after {timeout:.0f}s: "
            + "; ".join(f"{n}: {why}" for n, why in pending.items())
            + "; the controllers keep trying; see `skylift status -c FILE` and each "
            "region's controller.log",
            err=True,
        )
        return EXIT_FAILURE
    lines = []
    for name, data in done.items():
        how = "already running" if data["already"] else f"pid {data['pid']}"
        lines.append(f"region {name}: controller {how}, {data['edge']}")
        lines += [
            f"  {svc}: {s['ready']}/{s['desired']} ready on http://{s['frontend']}/"
            for svc, s in data["services"].items()
        ]
    emit({"regions": done}, output, "\n".join(lines))
    return EXIT_OK


# -- down -------------------------------------------------------------------------


def down_regions(root: LoadedConfig, selector: str, timeout: float) -> int:
    """Stop the selected regions' edges, replicas and controllers, in parallel."""
    names = selected(root, selector)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = dict(
            zip(names, pool.map(lambda n: _down_one(root, n, timeout), names), strict=True)
        )
    failed = {n: why for n, why in results.items() if why is not None and why.startswith("error")}
    for name, note in results.items():
        typer.echo(f"region {name}: {note or 'stopped'}")
    return EXIT_FAILURE if failed else EXIT_OK


def _down_one(root: LoadedConfig, name: str, timeout: float) -> str | None:
    """Stop one region: through its API, or (none answering) from its store; None = done."""
    from skylift.client import ApiClient, ApiError, ControllerUnreachable
    from skylift.store import ControllerLockError

    loaded = region_loaded(root, name)
    try:
        # a short first call: a cut-off host costs seconds, not the whole stop timeout
        with ApiClient(loaded, timeout=STATUS_TIMEOUT) as probe:
            probe.get("/livez")
    except ControllerUnreachable:
        from skylift.cli.app import _down_offline
        from skylift.regions.daemon import stop_edge_offline

        async def offline() -> None:
            await stop_edge_offline(root, name)
            await _down_offline(loaded)

        try:
            with _OFFLINE:
                asyncio.run(offline())
        except ControllerLockError as exc:
            return f"error: {exc}"
        return "stopped (no controller was running)"
    except ApiError:
        pass  # it answers: the shutdown call below says what is wrong
    with ApiClient(loaded, timeout=timeout) as api:
        try:
            api.post("/api/v1/shutdown", json={"stop_data_plane": True})
        except (ApiError, ControllerUnreachable) as exc:
            return f"error: {exc}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                api.get("/livez")
            except ControllerUnreachable:
                return None
            except RuntimeError:
                pass
            time.sleep(0.3)
    return f"error: controller still answers after {timeout:.0f}s"


# -- status -----------------------------------------------------------------------


def gather_status(root: LoadedConfig, timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
    """Every phase-2 region's entry, asked in parallel (``healthy: false`` when silent)."""
    from skylift.regions.edge_state import read_edge_state
    from skylift.regions.promotion import PromotionError, promoted_map

    names = list(root.config.edged_regions)

    def one(name: str) -> dict[str, Any]:
        region = root.config.regions[name]
        loaded = region_loaded(root, name)
        answer, error = _api_answer(loaded, timeout)
        try:
            superseded = promoted_map(loaded.state_dir).get(name)
        except PromotionError:
            superseded = None
        return region_entry(
            zone=str(region.zone),
            edge=str(region.edge.listen if region.edge else ""),
            answer=answer,
            error=error,
            edge_state=read_edge_state(loaded.state_dir) if answer is not None else None,
            superseded_by=superseded,
        )

    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        entries = list(pool.map(one, names))
    return {"regions": dict(zip(names, entries, strict=True))}


def status_regions(root: LoadedConfig, output: Output) -> None:
    data = gather_status(root)
    emit(data, output, status_table(data["regions"]))
