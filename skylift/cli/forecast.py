"""``skylift forecast SERVICE``: the forecast against recent load, from stored history.

Reads the load history the controller stores (no controller needs to run),
replays it through the same ``Forecaster`` the controller uses, and shows for
the recent past what the forecast said against what came, then the forecast
for the horizon ahead. Every value is the policy's quantity: the highest load
expected within the start-up lead, and the replicas it asks for.
Exit codes: 0 ok, 1 runtime failure (unreadable store, unwritable chart), 2 usage,
3 invalid config.
"""

from __future__ import annotations

import json
import math
import time
from bisect import bisect_left, bisect_right
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Annotated, Any

import typer

from skylift.cli.common import EXIT_USAGE, Output, fail, load_or_exit
from skylift.engine.model import Series
from skylift.engine.predictive import Forecaster
from skylift.units import parse_duration

WIDTH, HEIGHT, PAD = 1000, 360, 50


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def forecast_rows(
    forecaster: Forecaster,
    times: list[float],
    values: list[float],
    now: float,
    recent: float,
    ahead: float,
) -> list[dict[str, Any]]:
    """One row per step from ``now - recent`` to ``now + ahead``.

    Past rows hold what the forecaster said at that moment (having seen only the
    history before it) and what came: the bucket's load and the realized max over
    the lead. Future rows hold the forecast only.
    """
    cf = forecaster.cf
    step = cf.step
    series = Series(times, values)
    first = math.floor((now - recent) / step) * step
    forecaster.advance(series, first, first)  # learn everything before the window
    rows: list[dict[str, Any]] = []
    t = first
    while t <= now + ahead:
        past = t <= now
        outlook = forecaster.advance(series if past else None, t, t)
        row: dict[str, Any] = {
            "t": t,
            "time": _iso(t),
            "past": past,
            "ready": outlook.ready,
            "forecast": round(outlook.point, 4),
            "upper": round(outlook.upper, 4),
            "replicas": outlook.replicas,
            "load": None,
            "realized_max": None,
        }
        if past:
            # the bucket [t, t + step) is stamped just after t (see ``expand``)
            k = bisect_left(times, t)
            if k < len(times) and times[k] < t + step:
                row["load"] = round(values[k], 4)
            hi = bisect_right(times, t + forecaster.lead)
            window = values[k:hi]
            if window and t + forecaster.lead <= now:
                row["realized_max"] = round(max(window), 4)
        rows.append(row)
        t += step
    return rows


def _table(rows: list[dict[str, Any]], limit: int) -> str:
    every = max(1, math.ceil(len(rows) / limit))
    shown = [r for i, r in enumerate(rows) if i % every == 0 or r is rows[-1]]
    head = ("load", "max ahead", "forecast", "upper")
    lines = [f"{'time (UTC)':<19}  " + "  ".join(f"{h:>9}" for h in head) + "  replicas"]
    marked = False
    for r in shown:
        if not r["past"] and not marked:
            lines.append("-- now " + "-" * 60)
            marked = True

        def cell(v: float | None) -> str:
            return f"{'-' if v is None else f'{v:.4g}':>9}"

        lines.append(
            f"{r['time']:<19}  {cell(r['load'])}  {cell(r['realized_max'])}  "
            f"{cell(r['forecast'])}  {cell(r['upper'])}  {r['replicas'] or '-'}"
            + ("" if r["ready"] else "  (warm-up)")
        )
    return "\n".join(lines)


def render_svg(rows: list[dict[str, Any]], title: str, now: float) -> str:
    """An SVG of load, realized max, forecast and its upper bound, with a 'now' line."""
    if not rows:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="60"></svg>'
    t0 = float(rows[0]["t"])
    t1 = max(float(rows[-1]["t"]), t0 + 1.0)
    top = 1.05 * max([1.0] + [float(r[k]) for r in rows for k in ("load", "upper") if r[k]])

    def x(t: float) -> float:
        return PAD + (t - t0) / (t1 - t0) * (WIDTH - 2 * PAD)

    def y(v: float) -> float:
        return HEIGHT - PAD - v / top * (HEIGHT - 2 * PAD)

    def line(key: str, color: str, dash: str = "") -> str:
        points = " ".join(f"{x(r['t']):.1f},{y(r[key]):.1f}" for r in rows if r[key] is not None)
        return (
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
            f'stroke-dasharray="{dash}" points="{points}"/>'
        )

    series = [
        ("load", "load", "#888888", ""),
        ("max over the lead (realized)", "realized_max", "#d62728", "2 2"),
        ("forecast", "forecast", "#1f77b4", ""),
        ("forecast with headroom", "upper", "#1f77b4", "5 3"),
    ]
    legend = "".join(
        f'<text x="{PAD + 200 * i}" y="20" font-size="12" fill="{c}">&#9632; {escape(label)}</text>'
        for i, (label, _, c, _) in enumerate(series)
    )
    ticks = "".join(
        f'<text x="{PAD - 6}" y="{y(top * f) + 4:.1f}" text-anchor="end" font-size="11">'
        f"{top * f:.3g}</text>"
        for f in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    nx = x(min(max(now, t0), t1))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">'
        f"<title>{escape(title)}</title>{legend}"
        f'<rect x="{PAD}" y="{PAD}" width="{WIDTH - 2 * PAD}" height="{HEIGHT - 2 * PAD}" '
        f'fill="none" stroke="#999"/>{ticks}'
        + "".join(line(key, c, d) for _, key, c, d in series)
        + f'<line x1="{nx:.1f}" x2="{nx:.1f}" y1="{PAD}" y2="{HEIGHT - PAD}" stroke="#2ca02c"/>'
        f'<text x="{nx + 4:.1f}" y="{PAD + 12}" font-size="11" fill="#2ca02c">now</text>'
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 14}" text-anchor="middle" font-size="12">'
        f"{escape(_iso(t0))} .. {escape(_iso(t1))} UTC</text></svg>"
    )


def forecast_command(
    service: Annotated[str, typer.Argument(help="service name")],
    config: Annotated[
        Path, typer.Option("--config", "-c", envvar="SKYLIFT_CONFIG", help="skylift.yaml to use")
    ] = Path("skylift.yaml"),
    recent: Annotated[str, typer.Option(help="how far back to compare forecast and load")] = "1h",
    horizon: Annotated[str, typer.Option(help="how far ahead to forecast")] = "1h",
    rows: Annotated[int, typer.Option(min=2, help="table rows at most (JSON has all)")] = 30,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="write a chart: FILE.svg, or FILE.html")
    ] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="table or json")] = Output.table,
) -> None:
    """Show the forecast against recent load, from the history in the config's store."""
    from skylift.controller.autoscaler import DEFAULT_STARTUP, expand
    from skylift.controller.history import measured_startup, replay_span
    from skylift.store import Store

    loaded = load_or_exit(config)
    spec = loaded.config.services.get(service)
    if spec is None:
        raise fail(f"no service {service!r}; have: {', '.join(loaded.config.services)}", EXIT_USAGE)
    policy = spec.autoscale
    cf = policy.compiled.forecast if policy is not None else None
    if policy is None or cf is None:
        raise fail(
            f"service {service!r} does not forecast: give it `autoscale: {{policy: predictive, "
            "capacity: ...}}` or a `forecast:` block",
            EXIT_USAGE,
        )
    try:
        recent_s, ahead_s = parse_duration(recent), parse_duration(horizon)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    now = time.time()
    try:
        with Store.open(loaded.store_url) as store:
            buckets = store.history.load(service, cf.metric, since=now - recent_s - replay_span(cf))
            startup = measured_startup(store, service)
    except Exception as exc:  # any store failure ends the command with its message
        raise fail(f"cannot read the store {loaded.store_url}: {exc}") from None
    forecaster = Forecaster(cf, policy.interval, startup or DEFAULT_STARTUP)
    times, values = expand(buckets, cf.step)
    table = forecast_rows(forecaster, times, values, now, recent_s, ahead_s)
    stats: dict[str, Any] = {
        k: (None if isinstance(v, float) and math.isnan(v) else v)
        for k, v in forecaster.stats().to_dict().items()
    }
    summary: dict[str, Any] = {
        "service": service,
        "metric": cf.metric,
        "step_s": cf.step,
        "lead_s": forecaster.lead,
        "history_s": forecaster.history,
        "ready": forecaster.ready,
        "buckets": len(buckets),
        "stats": stats,
    }
    if chart is not None:
        svg = render_svg(table, f"{service}: {cf.metric} forecast", now)
        text = (
            svg
            if chart.suffix.lower() == ".svg"
            else (
                f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(service)} '
                f"forecast</title></head><body>{svg}</body></html>\n"
            )
        )
        try:
            chart.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot write {chart}: {exc}") from None
    if output is Output.json:
        typer.echo(json.dumps({**summary, "rows": table}, indent=2))
        return
    s = stats

    def pct(key: str) -> str:
        return "-" if s[key] is None else f"{s[key]:.1f}%"

    head = (
        f"{service}: {cf.metric} forecast from {len(buckets)} stored buckets, "
        f"{forecaster.history / 3600.0:.1f}h learned"
        f"{'' if forecaster.ready else f' (needs {cf.min_history / 3600.0:g}h: reactive only)'}; "
        f"lead {forecaster.lead:g}s\n"
        f"error over {s['forecasts']} forecasts: MAPE {pct('mape_pct')}, under-forecast "
        f"{pct('under_pct')}, under even with headroom {pct('upper_under_pct')}"
    )
    typer.echo(head + "\n" + _table(table, rows))


def register(app: typer.Typer) -> None:
    """Mount ``forecast`` on the skylift CLI."""
    app.command("forecast")(forecast_command)
