"""``skylift apply -c FILE [--diff]``: apply a changed config to the running controller.

The file also says where the controller is (``api.listen``, ``state_dir``).
The controller reads the file itself (as ``up`` does, so a restart agrees),
diffs it against what runs and applies it live. Exit codes: 0 applied (or
nothing to do, or ``--diff``), 1 refused (a key that needs a restart) or
failed, 3 invalid file (nothing changed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from skylift.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_USAGE,
    Output,
    emit,
    fail,
    load_or_exit,
)

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", envvar="SKYLIFT_CONFIG", help="skylift.yaml to apply")
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table or json")]


def apply(
    config: ConfigOpt = Path("skylift.yaml"),
    diff: Annotated[
        bool, typer.Option("--diff", help="dry run: show what would change, change nothing")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="seconds to wait (removed services drain first)")
    ] = 300,
    output: OutputOpt = Output.table,
) -> None:
    """Apply a changed config live: services added, removed (drained) and changed."""
    from skylift.client import ApiClient, ApiError, ControllerUnreachable

    loaded = load_or_exit(config)  # invalid: every error listed, exit 3
    if loaded.config.edged_regions:
        raise fail(
            f"{config} defines regions: `apply` does not change running regions yet (each "
            "region's controller would read the whole file as its own); restart the region "
            "with `skylift down/up --region NAME`",
            EXIT_USAGE,
        )
    with ApiClient(loaded, timeout=timeout) as api:
        try:
            data = api.apply(str(loaded.path), dry_run=diff)
        except ApiError as exc:
            raise fail(str(exc), EXIT_CONFIG if exc.status == 422 else EXIT_FAILURE) from None
        except ControllerUnreachable as exc:
            pid = _controller_pid(loaded.state_dir / "controller.pid")
            if pid is not None:
                raise fail(
                    f"nothing applied: a controller (pid {pid}) runs from {loaded.state_dir} "
                    f"but not on api.listen {loaded.config.api.listen}: a change to `api` needs "
                    "a restart (`skylift down` then `skylift up`, or revert it)"
                ) from None
            raise fail(
                f"{exc}; if this file changed `api` or `state_dir`, the controller still runs "
                "where the old file said: those keys need a restart (`skylift down`, `up`)"
            ) from None
    restart = data.get("restart_required") or []
    emit(data, output, _table(data, diff))
    if restart and not diff:
        typer.echo(
            "error: nothing applied: these keys need a controller restart: "
            f"{', '.join(restart)} (`skylift down` then `skylift up`, or revert them)",
            err=True,
        )
        raise typer.Exit(EXIT_FAILURE)


def _controller_pid(pid_file: Path) -> int | None:
    """The pid of a live controller of this state dir, from the pidfile `up` writes."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def _table(data: dict[str, Any], diff: bool) -> str:
    services = data["services"]
    lines = []
    for kind, sign in (("added", "+"), ("removed", "-")):
        lines += [f"{sign} service {name}" for name in services[kind]]
    for name in services["changed"]:
        lines.append(f"~ service {name}: {', '.join(data['fields'].get(name, []))}")
    lines += [f"~ {key}" for key in data.get("settings", [])]
    lines += [f"! {key} needs a restart" for key in data.get("restart_required", [])]
    if not lines:
        return "no changes"
    if diff:
        lines.append("(dry run: nothing applied)")
    elif data.get("applied"):
        lines += [f"  {step}" for step in data.get("done", [])]
        lines.append("applied")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Mount ``apply`` on the skylift CLI."""
    app.command("apply")(apply)


__all__ = ["register"]
