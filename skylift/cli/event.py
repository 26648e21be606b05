"""``skylift event add|list|remove``: one-off scaling events on a running controller.

An event (a launch, a campaign) raises a service's floor (``--min``) and/or
plans for a multiple of its load (``--multiplier``) between two times. Events
added here are stored by the controller (they survive restarts) and apply from
its next decision, next to the ``events:`` of the config.
Exit codes: 0 ok, 1 runtime failure (no controller, rejected event), 2 usage, 3 invalid config.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from skylift.cli.common import EXIT_USAGE, ConfigOpt, Output, OutputOpt, fail, load_or_exit
from skylift.units import parse_duration

event_app = typer.Typer(
    help="Scaling events: raise a service's floor or multiply its load for a while.",
    no_args_is_help=True,
)


def parse_when(text: str, now: float) -> float:
    """``now``, ``+30m`` (from now), an ISO 8601 time (UTC without offset), or Unix seconds."""
    text = text.strip()
    if text == "now":
        return now
    if text.startswith("+"):
        return now + parse_duration(text[1:])
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r}: use 'now', '+30m', ISO 8601 or Unix seconds") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(e: dict[str, Any], now: float) -> str:
    effect = []
    if e.get("min") is not None:
        effect.append(f"min {e['min']}")
    if e.get("multiplier") is not None:
        effect.append(f"x{e['multiplier']:g} load")
    state = (
        "active" if e["start"] <= now < e["end"] else ("ended" if e["end"] <= now else "pending")
    )
    return (
        f"{e['name']:<20} {_iso(e['start'])} .. {_iso(e['end'])}  {', '.join(effect):<18} "
        f"{state:<8} {e.get('source', '')}"
    )


def _client(config: Path) -> Any:
    from skylift.client import ApiClient

    return ApiClient(load_or_exit(config))


@event_app.command("add")
def add(
    service: Annotated[str, typer.Argument(help="service name")],
    name: Annotated[str, typer.Option("--name", help="unique per service, e.g. black-friday")],
    start: Annotated[str, typer.Option(help="'now', '+30m', ISO 8601 or Unix seconds")] = "now",
    end: Annotated[str | None, typer.Option(help="end time (or give --duration)")] = None,
    duration: Annotated[str | None, typer.Option(help="e.g. 2h (instead of --end)")] = None,
    min_replicas: Annotated[
        int | None, typer.Option("--min", min=1, help="floor while the event is active")
    ] = None,
    multiplier: Annotated[
        float | None, typer.Option(help="plan for this many times the load, e.g. 2")
    ] = None,
    config: ConfigOpt = Path("skylift.yaml"),
    output: OutputOpt = Output.table,
) -> None:
    """Add an event; it is stored by the controller and applies from its next decision."""
    from skylift.client import ControllerUnreachable

    if (end is None) == (duration is None):
        raise fail("give exactly one of --end or --duration", EXIT_USAGE)
    now = time.time()
    try:
        starts = parse_when(start, now)
        ends = parse_when(end, now) if end is not None else starts + parse_duration(duration or "")
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    body: dict[str, Any] = {"name": name, "start": starts, "end": ends}
    if min_replicas is not None:
        body["min"] = min_replicas
    if multiplier is not None:
        body["multiplier"] = multiplier
    with _client(config) as api:
        try:
            data = api.post(f"/api/v1/services/{service}/events", json=body)
        except (ControllerUnreachable, RuntimeError) as exc:
            raise fail(str(exc)) from None
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(f"{service}: added {_line({**data['event'], 'source': 'api'}, now)}")


@event_app.command("list")
def list_events(
    service: Annotated[str, typer.Argument(help="service name")],
    config: ConfigOpt = Path("skylift.yaml"),
    output: OutputOpt = Output.table,
) -> None:
    """List the config's events and those added through the API."""
    from skylift.client import ControllerUnreachable

    with _client(config) as api:
        try:
            data = api.get(f"/api/v1/services/{service}/events")
        except (ControllerUnreachable, RuntimeError) as exc:
            raise fail(str(exc)) from None
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2))
        return
    now = time.time()
    typer.echo("\n".join(_line(e, now) for e in data["events"]) or f"{service}: no events")


@event_app.command("remove")
def remove(
    service: Annotated[str, typer.Argument(help="service name")],
    name: Annotated[str, typer.Argument(help="the event's name")],
    config: ConfigOpt = Path("skylift.yaml"),
    output: OutputOpt = Output.table,
) -> None:
    """Remove an event added through the API (config events are edited in the config)."""
    from skylift.client import ControllerUnreachable

    with _client(config) as api:
        try:
            data = api.delete(f"/api/v1/services/{service}/events", params={"name": name})
        except (ControllerUnreachable, RuntimeError) as exc:
            raise fail(str(exc)) from None
    typer.echo(
        json.dumps(data, indent=2) if output is Output.json else f"{service}: removed {name}"
    )


def register(app: typer.Typer) -> None:
    """Mount ``event`` on the skylift CLI."""
    app.add_typer(event_app, name="event")
