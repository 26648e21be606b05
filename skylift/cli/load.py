"""``skylift load``: replay open-loop load (constant rate or a trace) against a URL.

Data (the report) goes to stdout; the live progress line goes to stderr and
only when stderr is a terminal, so ``-o json`` output stays pipeable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from skylift.cli.common import Output
from skylift.loadgen import LoadPlan, LoadProgress, LoadReport, constant_plan, run_load, trace_plan
from skylift.loadgen.plan import DEFAULT_MAX_IN_FLIGHT
from skylift.units import parse_duration


def register(app: typer.Typer) -> None:
    """Add the ``load`` command to ``app``."""
    app.command("load")(load)


def load(
    target: Annotated[str, typer.Option(help="Base URL, e.g. http://127.0.0.1:8080")],
    path: Annotated[str, typer.Option(help="Request path with query, e.g. /work?ms=5")] = "/",
    rps: Annotated[float | None, typer.Option(help="Constant rate, requests/s")] = None,
    duration: Annotated[
        str | None,
        typer.Option(help="Run length for --rps (e.g. 30s, 2m); with --trace, a cap"),
    ] = None,
    trace: Annotated[
        Path | None, typer.Option(help="Trace CSV 't,requests' to replay", dir_okay=False)
    ] = None,
    peak_rps: Annotated[
        float | None, typer.Option(help="Rate the trace's busiest interval is replayed at")
    ] = None,
    speed: Annotated[float, typer.Option(help="Trace time compression (60 = 1 min/s)")] = 1.0,
    timeout: Annotated[str, typer.Option(help="Per-request timeout, e.g. 5s, 500ms")] = "5s",
    max_in_flight: Annotated[
        int, typer.Option(help="Concurrent request bound; overflow counts as overload_client")
    ] = DEFAULT_MAX_IN_FLIGHT,
    output: Annotated[Output, typer.Option("--output", "-o", help="Report format")] = Output.table,
) -> None:
    """Send open-loop load and report latency percentiles, errors and per-replica spread.

    Requests leave on schedule even when the server is slow; latency counts
    from the scheduled time. Exits 0 whenever the run completed, errors or not.
    """
    plan = _build_plan(
        target=target,
        path=path,
        rps=rps,
        duration=duration,
        trace=trace,
        peak_rps=peak_rps,
        speed=speed,
        timeout=_duration_option("--timeout", timeout),
        max_in_flight=max_in_flight,
    )
    show_progress = sys.stderr.isatty()
    report = asyncio.run(_run(plan, show_progress))
    if show_progress:
        sys.stderr.write("\n")
    if output is Output.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(format_table(report))


def _duration_option(name: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from None


def _build_plan(
    *,
    target: str,
    path: str,
    rps: float | None,
    duration: str | None,
    trace: Path | None,
    peak_rps: float | None,
    speed: float,
    timeout: float,
    max_in_flight: int,
) -> LoadPlan:
    """Check the option combination (usage errors exit 2) and build the plan."""
    seconds = None if duration is None else _duration_option("--duration", duration)
    if trace is not None and rps is not None:
        raise typer.BadParameter("use either --rps/--duration or --trace/--peak-rps, not both")
    if trace is not None and peak_rps is None:
        raise typer.BadParameter("--trace needs --peak-rps", param_hint="--peak-rps")
    if trace is None and (rps is None or seconds is None):
        raise typer.BadParameter("give --rps and --duration, or --trace and --peak-rps")
    if trace is None and peak_rps is not None:
        raise typer.BadParameter("--peak-rps only applies with --trace")
    try:
        if trace is not None:
            assert peak_rps is not None
            return trace_plan(
                target,
                path,
                trace,
                peak_rps,
                speed=speed,
                max_duration=seconds,
                timeout=timeout,
                max_in_flight=max_in_flight,
            )
        assert rps is not None and seconds is not None
        return constant_plan(
            target, path, rps, seconds, timeout=timeout, max_in_flight=max_in_flight
        )
    except (OSError, ValueError) as exc:  # TraceError is a ValueError
        raise typer.BadParameter(str(exc)) from None


async def _run(plan: LoadPlan, show_progress: bool) -> LoadReport:
    """Run with Ctrl-C meaning "stop sending and report what we have"."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        handled = True
    try:
        return await run_load(
            plan, on_progress=_print_progress if show_progress else None, stop=stop
        )
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGINT)


def _print_progress(p: LoadProgress) -> None:
    sys.stderr.write(
        f"\r{p.elapsed_s:7.1f}s  sent {p.sent}/{p.planned}  ok {p.ok}  "
        f"errors {p.errors}  in flight {p.in_flight}   "
    )
    sys.stderr.flush()


def format_table(report: LoadReport) -> str:
    """Human-readable report, one fact per line."""
    kinds = ", ".join(f"{k} {v}" for k, v in report.errors_by_kind.items())
    replicas = ", ".join(f"{k} {v}" for k, v in report.replicas.items()) or "-"
    rows = [
        ("target", f"{report.target}{report.path}"),
        (
            "sent",
            f"{report.sent} of {report.planned} planned"
            + ("  (stopped early)" if report.stopped_early else ""),
        ),
        ("ok", str(report.ok)),
        ("errors", f"{report.errors}" + (f"  ({kinds})" if kinds else "")),
        (
            "latency ms",
            f"p50 {report.p50_ms:.1f}  p95 {report.p95_ms:.1f}  "
            f"p99 {report.p99_ms:.1f}  max {report.max_ms:.1f}",
        ),
        ("rate", f"{report.rate:.1f}/s sent, {report.throughput:.1f}/s ok"),
        ("send lag ms", f"p99 {report.lag_p99_ms:.1f}  max {report.lag_max_ms:.1f}"),
        ("duration", f"{report.duration_s:.2f}s"),
        ("replicas", replicas),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
