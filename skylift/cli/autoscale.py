"""``skylift autoscale pause|resume SERVICE``: hold an autoscaled service's count by hand.

The pause is kept by the controller's store, so it survives a restart, and
shows in ``status`` and ``explain``. A paused service keeps its current count
and takes ``skylift scale``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skylift.cli.common import ConfigOpt, Output, OutputOpt, RegionOpt, emit, fail, load_or_exit

autoscale_app = typer.Typer(
    help="Pause or resume a service's autoscaling (kept across restarts).", no_args_is_help=True
)

ServiceArg = Annotated[str, typer.Argument(help="service name")]


def _set(
    service: str, paused: bool, config: Path, output: Output, region: str | None = None
) -> None:
    from skylift.client import ApiClient, ControllerUnreachable

    loaded = load_or_exit(config, region=region, one_controller=True)
    if service not in loaded.config.services:
        raise fail(f"no service {service!r} in {config}; have: {', '.join(loaded.config.services)}")
    with ApiClient(loaded) as api:
        try:
            data = api.set_autoscale_paused(service, paused)
        except (ControllerUnreachable, RuntimeError) as exc:
            raise fail(str(exc)) from None
    if data["paused"]:
        by = "by the config" if data.get("paused_by") == "config" else "until resumed"
        table = f"{service}: autoscaling paused {by}; `skylift scale` sets the count"
    else:
        table = f"{service}: autoscaling resumed"
    emit(data, output, table)


@autoscale_app.command("pause")
def pause(
    service: ServiceArg,
    config: ConfigOpt = Path("skylift.yaml"),
    output: OutputOpt = Output.table,
    region: RegionOpt = None,
) -> None:
    """Hold the service's current count; decisions resume with `autoscale resume`."""
    _set(service, True, config, output, region)


@autoscale_app.command("resume")
def resume(
    service: ServiceArg,
    config: ConfigOpt = Path("skylift.yaml"),
    output: OutputOpt = Output.table,
    region: RegionOpt = None,
) -> None:
    """Let the autoscaler decide again, starting from the current count."""
    _set(service, False, config, output, region)


def register(app: typer.Typer) -> None:
    """Mount ``autoscale`` on the skylift CLI."""
    app.add_typer(autoscale_app, name="autoscale")
