"""``skylift replica hold|release``: an operator keeps one replica out of rotation.

A held replica is put in MAINT in HAProxy and stays there (reconcile restores
any other MAINT it did not ask for, but not this one) until released; the hold
is recorded in the store, so it survives a controller restart. The replica
keeps running (to be inspected, profiled, debugged) but no longer counts as
capacity: the controller starts a replacement so the service keeps its
desired count of ready replicas. On release it goes back into rotation and the
surplus is scaled in as usual (drained first).
Exit codes: 0 ok, 1 runtime failure (no controller, unknown replica), 3 invalid config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from skylift.cli.common import ConfigOpt, Output, OutputOpt, RegionOpt, fail, load_or_exit

replica_app = typer.Typer(
    help="Act on one replica: hold it out of rotation (MAINT) or release it.",
    no_args_is_help=True,
)

ServiceArg = Annotated[str, typer.Argument(help="service name")]
ReplicaArg = Annotated[str, typer.Argument(help="replica id (see `skylift status`)")]


def _act(
    verb: str, service: str, replica: str, config: Path, region: str | None = None
) -> dict[str, Any]:
    from skylift.client import ApiClient, ControllerUnreachable

    loaded = load_or_exit(config, region=region, one_controller=True)
    if service not in loaded.config.services:
        raise fail(f"no service named {service!r} in {config}")
    with ApiClient(loaded) as api:
        try:
            data: dict[str, Any] = api.post(f"/api/v1/services/{service}/replicas/{replica}/{verb}")
        except (ControllerUnreachable, RuntimeError) as exc:
            raise fail(str(exc)) from None
    return data


def _emit(data: dict[str, Any], output: Output, sentence: str) -> None:
    typer.echo(json.dumps(data, indent=2) if output is Output.json else sentence)


@replica_app.command("hold")
def hold(
    service: ServiceArg,
    replica: ReplicaArg,
    config: ConfigOpt = Path("skylift.yaml"),
    output: OutputOpt = Output.table,
    region: RegionOpt = None,
) -> None:
    """Take a replica out of rotation (MAINT) until released; a replacement keeps capacity."""
    data = _act("hold", service, replica, config, region)
    _emit(data, output, f"{service}: {replica} held (MAINT); `skylift replica release` undoes it")


@replica_app.command("release")
def release(
    service: ServiceArg,
    replica: ReplicaArg,
    config: ConfigOpt = Path("skylift.yaml"),
    output: OutputOpt = Output.table,
    region: RegionOpt = None,
) -> None:
    """Put a held replica back in rotation."""
    data = _act("release", service, replica, config, region)
    _emit(data, output, f"{service}: {replica} released, back in rotation")


def register(app: typer.Typer) -> None:
    """Mount ``replica`` on the skylift CLI."""
    app.add_typer(replica_app, name="replica")
