"""A self-contained HTML page with an inline SVG of load, demand and supply.

No plotting dependency: long timelines are reduced to at most ``MAX_POINTS``
buckets, keeping each bucket's maximum so short peaks stay visible.
"""

from __future__ import annotations

from html import escape

from skylift.sim.result import SimResult

MAX_POINTS = 1600
WIDTH, HEIGHT, PAD = 1200, 420, 50


def _buckets(values: list[float], size: int) -> list[float]:
    return [max(values[i : i + size]) for i in range(0, len(values), size)]


def _path(values: list[float], top: float) -> str:
    n = max(len(values) - 1, 1)
    sx = (WIDTH - 2 * PAD) / n
    sy = (HEIGHT - 2 * PAD) / top
    return " ".join(f"{PAD + i * sx:.1f},{HEIGHT - PAD - v * sy:.1f}" for i, v in enumerate(values))


def render_chart(result: SimResult) -> str:
    """HTML page: load in replica units (rate / capacity), demand, desired and ready."""
    tl = result.timeline
    size = max(1, -(-len(tl.t) // MAX_POINTS))
    load = _buckets([r / result.capacity_rps for r in tl.rate], size)
    demand = _buckets([float(d) for d in tl.demand], size)
    desired = _buckets([float(d) for d in tl.desired], size)
    ready = _buckets([float(r) for r in tl.ready], size)
    top = max(max(load), max(demand), max(desired), max(ready), 1.0) * 1.05
    hours = (tl.t[-1] - tl.t[0]) / 3600.0 if tl.t else 0.0
    series = [
        ("load / capacity", load, "#bbbbbb", ""),
        ("demand", demand, "#d62728", ""),
        ("desired", desired, "#1f77b4", "4 3"),
        ("ready (supply)", ready, "#2ca02c", ""),
    ]
    lines = "\n".join(
        f'<polyline fill="none" stroke="{color}" stroke-width="1.2" '
        f'stroke-dasharray="{dash}" points="{_path(values, top)}"/>'
        for _, values, color, dash in series
    )
    legend = "".join(
        f'<span style="color:{color}">&#9632; {escape(label)}</span> '
        for label, _, color, _ in series
    )
    ticks = "\n".join(
        f'<text x="{PAD - 6}" y="{HEIGHT - PAD - frac * (HEIGHT - 2 * PAD) + 4:.1f}" '
        f'text-anchor="end" font-size="11">{top * frac:.0f}</text>'
        for frac in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    scores = result.to_dict()
    summary = ", ".join(
        f"{k} {scores[k]}"
        for k in (
            "theta_u_pct",
            "theta_o_pct",
            "tau_u_pct",
            "tau_o_pct",
            "cost_ratio",
            "slo_violation_minutes",
            "actions",
        )
    )
    title = escape(f"{result.policy} on {result.trace}")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family:sans-serif">
<h3>{title}</h3>
<p>{legend}</p>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"
 viewBox="0 0 {WIDTH} {HEIGHT}">
<rect x="{PAD}" y="{PAD}" width="{WIDTH - 2 * PAD}" height="{HEIGHT - 2 * PAD}"
 fill="none" stroke="#999"/>
{ticks}
<text x="{WIDTH / 2}" y="{HEIGHT - 12}" text-anchor="middle" font-size="12">time, {hours:.1f} h
 (bucket max of {size} rows)</text>
<text x="14" y="{HEIGHT / 2}" font-size="12" transform="rotate(-90 14 {HEIGHT / 2})"
 text-anchor="middle">replicas</text>
{lines}
</svg>
<p style="font-size:12px">{escape(summary)}</p>
</body></html>
"""
