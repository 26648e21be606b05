"""The ``skylift`` command line.

Data goes to stdout (``-o json`` for machines), logs to stderr.
Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 invalid config.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any

import typer

from skylift.cli import apply as cli_apply
from skylift.cli import autoscale as cli_autoscale
from skylift.cli import backup as cli_backup
from skylift.cli import capacity as cli_capacity
from skylift.cli import cost as cli_cost
from skylift.cli import dns as cli_dns
from skylift.cli import event as cli_event
from skylift.cli import export as cli_export
from skylift.cli import flags as cli_flags
from skylift.cli import forecast as cli_forecast
from skylift.cli import geoip as cli_geoip
from skylift.cli import load as cli_load
from skylift.cli import plan as cli_plan
from skylift.cli import platform as cli_platform
from skylift.cli import region as cli_region
from skylift.cli import replica as cli_replica
from skylift.cli import sim as cli_sim
from skylift.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    ConfigOpt,
    Output,
    OutputOpt,
    RegionOpt,
    emit,
    fail,
    load_or_exit,
)
from skylift.config import ConfigError, LoadedConfig, json_schema, load_config
from skylift.logs import configure_logging

app = typer.Typer(
    name="skylift",
    help="Scale a web service from one VPS to multi-region autoscaling.\n\n"
    "Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 invalid config.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate the config or print its JSON Schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")

RegionsOpt = Annotated[
    str | None,
    typer.Option(
        "--region", help="a region of a multi-region file, or 'all' (each its own controller)"
    ),
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"skylift {package_version('skylift')}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    log_json: Annotated[bool, typer.Option(help="logs as JSON lines")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    configure_logging(log_level, log_json)


# -- config ---------------------------------------------------------------


@config_app.command("validate")
def config_validate(
    file: Annotated[Path, typer.Argument(help="the config file to check")],
    output: OutputOpt = Output.table,
) -> None:
    """Check a config file; list every error with its field path and a hint (exit 3)."""
    try:
        loaded = load_config(file)
    except ConfigError as exc:
        errors = [{"path": i.path, "message": i.message, "hint": i.hint} for i in exc.issues]
        if output == Output.json:
            typer.echo(json.dumps({"valid": False, "errors": errors}, indent=2))
        else:
            typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    services = sorted(loaded.config.services)
    emit(
        {"valid": True, "services": services},
        output,
        f"{file}: valid ({len(services)} service(s): {', '.join(services)})",
    )


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of skylift.yaml (committed as skylift.schema.json)."""
    typer.echo(json.dumps(json_schema(), indent=2, sort_keys=True))


# -- controller life cycle ------------------------------------------------------


@app.command()
def up(
    config: ConfigOpt = Path("skylift.yaml"),
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="run in the background; return once ready")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for readiness (--detach)")] = 90,
    output: OutputOpt = Output.table,
    standby: Annotated[
        bool,
        typer.Option(
            "--standby",
            help="wait for the active controller's lease and take over when it ends (its "
            "API binds only then); with --detach, return once it waits",
        ),
    ] = False,
    region: RegionsOpt = None,
) -> None:
    """Start the controller: replicas, HAProxy and the local API (per region: its edge too)."""
    loaded = load_or_exit(config)
    if region is not None or loaded.config.edged_regions:
        from skylift.cli import regions_run

        if region is None:
            raise fail(str(regions_run.needs_region(loaded)), EXIT_USAGE)
        if standby:
            raise fail("--standby is not supported with --region yet", EXIT_USAGE)
        raise typer.Exit(
            regions_run.up_regions(loaded, region, detach=detach, timeout=timeout, output=output)
        )
    if not loaded.config.services:
        raise fail(
            f"{config} has no services: nothing for `up` to run (a regions-only config is "
            "for `skylift backup`); add a `services:` block",
            EXIT_CONFIG,
        )
    if detach and standby:
        raise typer.Exit(_standby_detached(loaded, timeout, output))
    if detach:
        raise typer.Exit(_up_detached(loaded, timeout, output))
    from skylift.daemon import serve
    from skylift.store import ControllerLockError

    try:
        code = asyncio.run(serve(loaded, standby=standby))
    except ControllerLockError as exc:  # another holds it, or the store cannot tell
        raise fail(str(exc)) from None
    raise typer.Exit(code)


def _up_detached(loaded: LoadedConfig, timeout: float, output: Output) -> int:
    from skylift.api.token import ensure_state_dir
    from skylift.client import ApiClient, ControllerUnreachable

    with ApiClient(loaded, timeout=2) as api:
        try:
            api.get("/api/v1/services")
            typer.echo(f"error: a controller already runs for {loaded.path}", err=True)
            return EXIT_FAILURE
        except (ControllerUnreachable, RuntimeError):
            pass
    log_path = ensure_state_dir(loaded.state_dir) / "controller.log"
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "skylift", "up", "-c", str(loaded.path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            env={**os.environ, "SKYLIFT_CONFIG": str(loaded.path)},
        )
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    with ApiClient(loaded, timeout=2) as api:
        while time.monotonic() < deadline:
            if child.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-15:]
                typer.echo(
                    f"error: controller exited with code {child.returncode}; "
                    f"last lines of {log_path}:\n" + "\n".join(tail),
                    err=True,
                )
                return EXIT_FAILURE
            try:
                last = api.get("/api/v1/services")
            except (ControllerUnreachable, RuntimeError):
                time.sleep(0.3)
                continue
            services = last["services"]
            if services and all(s["ready"] >= s["desired"] for s in services.values()):
                lines = [f"skylift controller running (pid {child.pid}), log: {log_path}"]
                lines += [
                    f"  {name}: {svc['ready']}/{svc['desired']} ready on http://{svc['frontend']}/"
                    for name, svc in services.items()
                ]
                emit({**last, "pid": child.pid, "log": str(log_path)}, output, "\n".join(lines))
                return EXIT_OK
            time.sleep(0.3)
    pending = {
        n: f"{s['ready']}/{s['desired']} ready, {s.get('state')}"
        for n, s in last.get("services", {}).items()
    }
    typer.echo(
        f"error: not ready after {timeout:.0f}s: {pending or 'API never answered'}; the "
        f"controller keeps trying (pid {child.pid}); see `skylift status` and {log_path}",
        err=True,
    )
    return EXIT_FAILURE


def _standby_detached(loaded: LoadedConfig, timeout: float, output: Output) -> int:
    """Start a standby controller in the background; return once it waits (or took over)."""
    from skylift.api.token import ensure_state_dir

    state_dir = ensure_state_dir(loaded.state_dir)
    log_path = state_dir / "controller.log"
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "skylift", "up", "--standby", "-c", str(loaded.path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            env={**os.environ, "SKYLIFT_CONFIG": str(loaded.path)},
        )
    marker = state_dir / f"standby-{child.pid}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            typer.echo(
                f"error: standby controller exited with code {child.returncode}; last lines "
                f"of {log_path}:\n" + "\n".join(tail),
                err=True,
            )
            return EXIT_FAILURE
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            time.sleep(0.2)
            continue
        state = info.get("state")
        text = (
            f"skylift standby controller (pid {child.pid}) waiting for the lease of epoch "
            f"{info.get('epoch')}; it takes over when that controller stops; log: {log_path}"
            if state == "waiting"
            else f"skylift standby controller (pid {child.pid}) took the lease (epoch "
            f"{info.get('epoch')}) and is active; log: {log_path}"
        )
        emit({**info, "log": str(log_path)}, output, text)
        return EXIT_OK
    typer.echo(
        f"error: the standby did not report within {timeout:.0f}s (pid {child.pid}); see "
        f"{log_path}",
        err=True,
    )
    return EXIT_FAILURE


@app.command()
def down(
    config: ConfigOpt = Path("skylift.yaml"),
    timeout: Annotated[float, typer.Option(help="seconds to wait for the stop")] = 120,
    region: RegionsOpt = None,
) -> None:
    """Stop the controller, drain and stop every replica, and stop HAProxy (and the edge)."""
    from skylift.client import ApiClient, ControllerUnreachable

    loaded = load_or_exit(config)
    if region is not None or loaded.config.edged_regions:
        from skylift.cli import regions_run

        if region is None:
            raise fail(str(regions_run.needs_region(loaded)), EXIT_USAGE)
        raise typer.Exit(regions_run.down_regions(loaded, region, timeout))
    with ApiClient(loaded, timeout=timeout) as api:
        try:
            api.post("/api/v1/shutdown", json={"stop_data_plane": True})
        except ControllerUnreachable:
            asyncio.run(_down_offline(loaded))
            typer.echo("stopped (no controller was running)")
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                api.get("/livez")
            except ControllerUnreachable:
                typer.echo("stopped")
                return
            except RuntimeError:
                pass
            time.sleep(0.3)
    raise fail(f"controller still answers after {timeout:.0f}s")


async def _down_offline(loaded: LoadedConfig) -> None:
    """Stop what a dead controller left running, found through the store."""
    from skylift.daemon import build_controller, stop_orphans_offline
    from skylift.store import Store

    store = Store.open(loaded.store_url)
    try:
        # a long lease: nobody renews it while replicas stop (a crash frees it at once)
        with store.acquire_controller_lock(owner=f"down:{os.getpid()}", duration=3600) as lock:
            controller = build_controller(loaded, store)
            for name, spec in loaded.config.services.items():
                backend = controller.backends[name]
                for replica in backend.adopt(store.replicas(service=name)):
                    await backend.stop(replica, spec.stop_grace)
                    store.delete_replica(replica.id)
            await stop_orphans_offline(loaded, store)
            await controller.balancer.stop()
            await asyncio.to_thread(lock.release, down=True)  # no standby starts it again
    finally:
        store.close()


@app.command()
def status(config: ConfigOpt = Path("skylift.yaml"), output: OutputOpt = Output.table) -> None:
    """Show each service's desired and ready replicas and every replica's state (per region)."""
    from skylift.client import ApiClient, ControllerUnreachable

    loaded = load_or_exit(config)
    if loaded.config.edged_regions:
        from skylift.cli import regions_run

        regions_run.status_regions(loaded, output)
        return
    with ApiClient(loaded) as api:
        try:
            data = api.get("/api/v1/services")
        except ControllerUnreachable as exc:
            raise fail(str(exc)) from None
    lines = _lease_lines(data.get("controller") or {})
    for name, svc in data["services"].items():
        lines.append(
            f"{name}  {svc['ready']}/{svc['desired']} ready  {svc.get('state', '')}  "
            f"http://{svc['frontend']}/"
        )
        crash = svc.get("crash") or {}
        if crash.get("failures"):
            lines.append(
                f"  crash-loop: {crash['failures']} failed start(s), next in "
                f"{crash['next_start_in']}s ({crash['last_reason']})"
            )
        if (svc.get("autoscale") or {}).get("paused"):
            lines.append("  autoscale: paused (`skylift autoscale resume` ends it)")
        for r in svc["replicas"]:
            lines.append(f"  {r['id']:<14} {r['state']:<10} pid {r['pid']!s:<8} {r['address']}")
    emit(data, output, "\n".join(lines))


def _lease_lines(controller: dict[str, Any]) -> list[str]:
    """Who acts: the active controller's epoch and holder (standbys wait without an API)."""
    if controller.get("epoch") is None:
        return []
    holder = controller.get("holder") or {}
    valid = "" if controller.get("lease_valid") else " (lease not renewed: acting on nothing)"
    return [
        f"controller  {controller.get('role')}, epoch {controller['epoch']}, pid "
        f"{holder.get('pid')} on {holder.get('host')}{valid}"
    ]


@app.command()
def scale(
    service: Annotated[str, typer.Argument(help="service name")],
    replicas: Annotated[int, typer.Argument(min=0, max=1000, help="desired replicas")],
    config: ConfigOpt = Path("skylift.yaml"),
    output: OutputOpt = Output.table,
    region: RegionOpt = None,
) -> None:
    """Set a service's desired replica count (kept across controller restarts)."""
    from skylift.client import ApiClient, ControllerUnreachable

    loaded = load_or_exit(config, region=region, one_controller=True)
    if service not in loaded.config.services:
        raise fail(f"no service {service!r} in {config}; have: {', '.join(loaded.config.services)}")
    with ApiClient(loaded) as api:
        try:
            data = api.post(f"/api/v1/services/{service}/scale", json={"replicas": replicas})
        except (ControllerUnreachable, RuntimeError) as exc:
            raise fail(str(exc)) from None
    clamped = f" ({data['clamped']})" if data.get("clamped") else ""
    emit(data, output, f"{service}: desired {data.get('desired', replicas)}{clamped}")


@app.command()
def events(
    config: ConfigOpt = Path("skylift.yaml"),
    service: Annotated[str | None, typer.Option(help="only this service")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    decisions: Annotated[
        bool, typer.Option("--decisions", help="every autoscaling decision, holds included")
    ] = False,
    output: OutputOpt = Output.table,
    region: RegionOpt = None,
) -> None:
    """List recent events (starts, health transitions, scaling, errors), newest last."""
    from skylift.client import ApiClient, ControllerUnreachable

    loaded = load_or_exit(config, region=region, one_controller=True)
    kind = "decisions" if decisions else "events"
    params: dict[str, Any] = {"limit": limit}
    if service:
        params["service"] = service
    with ApiClient(loaded) as api:
        try:
            data = api.get(f"/api/v1/{kind}", params=params)
        except ControllerUnreachable:
            data = {kind: _records_offline(loaded, kind, service, limit)}
    if decisions:
        lines = [
            f"{_when(d['ts'])}  {d['service']:<10} {d['direction']:<5} desired {d['desired']:<3} "
            f"{d['reasons'][0] if d['reasons'] else ''}  inputs: "
            + ", ".join(f"{k}={v}" for k, v in (d.get("inputs") or {}).items() if v is not None)
            for d in data[kind]
        ]
    else:
        lines = [
            f"{_when(e['ts'])}  {e.get('level', ''):<7} {e.get('service') or '-':<10} "
            f"{e['kind']:<22} {e['message']}"
            for e in data[kind]
        ]
    emit(data, output, "\n".join(lines))


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@app.command()
def explain(
    service: Annotated[str, typer.Argument(help="service name")],
    config: ConfigOpt = Path("skylift.yaml"),
    output: OutputOpt = Output.table,
    region: RegionOpt = None,
) -> None:
    """Why a service has the replica count it has: inputs, each check, every clamp."""
    from skylift.client import ApiClient, ControllerUnreachable

    loaded = load_or_exit(config, region=region, one_controller=True)
    if service not in loaded.config.services:
        raise fail(f"no service {service!r} in {config}; have: {', '.join(loaded.config.services)}")
    with ApiClient(loaded) as api:
        try:
            data = api.get(f"/api/v1/services/{service}/explain")
        except (ControllerUnreachable, RuntimeError) as exc:
            raise fail(str(exc)) from None
    lines = [f"{service}: desired {data.get('desired')}"]
    if data.get("inputs"):
        shown = ", ".join(
            f"{k}={'missing' if v is None else round(v, 4)}" for k, v in data["inputs"].items()
        )
        lines.append(f"inputs: {shown}")
    for check in data.get("checks", []):
        lines.append(f"  check  {check['reason']}")
    for clamp in data.get("clamps", []):
        lines.append(
            f"  clamp  {clamp['stage']}: {clamp['before']} -> {clamp['after']}: {clamp['reason']}"
        )
    for source in data.get("failing_sources", []):
        lines.append(f"  source {source['source']} failing: {', '.join(source['metrics'])} missing")
    if (calendar := data.get("calendar")) and calendar["active"]:
        lines.append(
            f"  calendar {', '.join(calendar['active'])}: min {calendar['min']}, "
            f"max {calendar['max']}, load x{calendar['multiplier']:g}"
        )
    if forecast := data.get("forecast"):
        stats = forecast["stats"]
        lines.append(f"  {forecast['note'] or 'forecast: no data yet'}")
        lines.append(
            f"  forecast error over {stats['forecasts']}: MAPE {stats['mape_pct']}%, "
            f"under-forecast {stats['under_pct']}%, "
            f"under with headroom {stats['upper_under_pct']}%"
        )
    lines.extend(f"  {reason}" for reason in data.get("reasons", [])[:1])
    emit(data, output, "\n".join(lines))


def _records_offline(loaded: LoadedConfig, kind: str, service: str | None, limit: int) -> list[Any]:
    """Read events or decisions straight from the store when no controller runs."""
    from skylift.api.app import _event_dict
    from skylift.store import Store

    store = Store.open(loaded.store_url)
    try:
        rows = (store.decisions if kind == "decisions" else store.events)(
            service=service, limit=limit
        )
        return [_event_dict(r) for r in rows]
    finally:
        store.close()


cli_sim.register(app)
cli_cost.register(app)
cli_load.register(app)
cli_backup.register(app)
cli_event.register(app)
cli_forecast.register(app)
cli_platform.register(app)
cli_replica.register(app)
cli_dns.register(app)
cli_autoscale.register(app)
cli_apply.register(app)
cli_geoip.register(app)
cli_region.register(app)
cli_flags.register(app)
cli_export.register(app)
cli_capacity.register(app)
cli_plan.register(app)


def main() -> None:
    """Run the CLI; a controller's refusal or absence is one line on stderr, never a traceback."""
    from skylift.client import ApiError, ControllerUnreachable

    try:
        app()
    except (ApiError, ControllerUnreachable) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_FAILURE) from None
