"""The plan as one self-contained HTML page (inline SVG, no script, no external file): pure.

Written for a reader who never ran skylift: each number says where it came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from skylift.plan.growth import DAY

W, H, PAD = 900, 320, 60


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def traffic_svg(peaks: Sequence[tuple[float, float]], plan: dict[str, Any], now: float) -> str:
    """Daily peaks, the fitted growth ahead (with its interval) and the capacity line."""
    limit = plan["limit"]
    growth = (plan["traffic"] or {}).get("growth")
    cap = limit.get("rps")
    peak = limit.get("peak_rps")
    t0 = peaks[0][0] if peaks else now - 30 * DAY
    horizon = now + max(30.0, min(float(limit.get("days") or 90.0) * 1.2, 3 * 365.0)) * DAY
    ahead: list[tuple[float, float, float, float]] = []
    if growth and peak:
        n = 60
        for i in range(n + 1):
            t = now + (horizon - now) * i / n
            d = (t - now) / DAY
            ahead.append(
                (
                    t,
                    peak * math.exp(growth["per_day"] * d),
                    peak * math.exp(growth["per_day_low"] * d),
                    peak * math.exp(growth["per_day_high"] * d),
                )
            )
    seen = [float(v) for _, v in peaks]
    ys = [*seen, *(a[1] for a in ahead), float(cap or 0.0), 1.0]
    top = min(1.15 * max(ys), 3.0 * max([*seen, float(cap or 0.0), 1.0]))

    def x(t: float) -> float:
        return PAD + (t - t0) / max(horizon - t0, 1.0) * (W - 2 * PAD)

    def y(v: float) -> float:
        return H - PAD - min(v, top) / top * (H - 2 * PAD)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12" role="img">'
        "<title>Traffic and forecast against the capacity line</title>",
        f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" '
        'fill="none" stroke="#bbb"/>',
    ]
    for f in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<text x="{PAD - 6}" y="{y(top * f) + 4:.1f}" text-anchor="end">{top * f:.3g}</text>'
        )
    if ahead:
        band = [f"{x(t):.1f},{y(hi):.1f}" for t, _, _, hi in ahead] + [
            f"{x(t):.1f},{y(lo):.1f}" for t, _, lo, _ in reversed(ahead)
        ]
        parts.append(f'<polygon fill="#1f77b4" fill-opacity="0.15" points="{" ".join(band)}"/>')
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v, _, _ in ahead)
        parts.append(
            f'<polyline fill="none" stroke="#1f77b4" stroke-dasharray="6 3" points="{line}"/>'
        )
    if peaks:
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in peaks)
        parts.append(f'<polyline fill="none" stroke="#444" stroke-width="1.5" points="{line}"/>')
    if cap:
        parts.append(
            f'<line x1="{PAD}" x2="{W - PAD}" y1="{y(cap):.1f}" y2="{y(cap):.1f}" '
            'stroke="#d62728" stroke-width="2"/>'
            f'<text x="{W - PAD - 4}" y="{y(cap) - 5:.1f}" text-anchor="end" fill="#d62728">'
            f"capacity {cap:g} req/s</text>"
        )
    if limit.get("date") and limit.get("days") is not None:
        lx = x(now + float(limit["days"]) * DAY)
        if lx <= W - PAD:
            parts.append(
                f'<line x1="{lx:.1f}" x2="{lx:.1f}" y1="{PAD}" y2="{H - PAD}" stroke="#d62728" '
                f'stroke-dasharray="3 3"/><text x="{lx + 4:.1f}" y="{PAD + 14}" fill="#d62728">'
                f"limit {escape(limit['date'])}</text>"
            )
    nx = x(now)
    parts.append(
        f'<line x1="{nx:.1f}" x2="{nx:.1f}" y1="{PAD}" y2="{H - PAD}" stroke="#2ca02c"/>'
        f'<text x="{nx + 4:.1f}" y="{H - PAD - 6}" fill="#2ca02c">now</text>'
        f'<text x="{PAD}" y="{H - 20}">{escape(_day(t0))}</text>'
        f'<text x="{W - PAD}" y="{H - 20}" text-anchor="end">{escape(_day(horizon))}</text>'
        f'<text x="{PAD}" y="{PAD - 24}">&#9632; daily peak (req/s, stored history)'
        '</text><text x="{0}" y="{1}" fill="#1f77b4">&#9632; growth fit ahead, 95 % band'
        "</text></svg>".format(PAD + 300, PAD - 24)
    )
    return "".join(parts)


def cost_svg(plan: dict[str, Any]) -> str:
    """The next phase's monthly cost as a bar, with the roadmap's cost impact per phase."""
    from skylift.plan.roadmap import PHASES

    rows = [(p.number, p.name, p.cost_impact) for p in PHASES.values() if p.number > 0]
    nxt = plan.get("next_phase") or {}
    h = 40 + 30 * len(rows)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" '
        f'viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12" role="img">'
        "<title>Cost per phase</title>"
    ]
    for i, (num, name, impact) in enumerate(rows):
        yy = 30 + 30 * i
        cost = nxt.get("monthly_cost") if nxt.get("phase") == num else None
        bar = 0.0 if cost is None else 300.0
        label = f"phase {num} ({name}): roadmap {impact}" + (
            f"; {cost:g} {nxt.get('currency', '')}/month" if cost is not None else ""
        )
        parts.append(
            f'<rect x="{PAD}" y="{yy - 14}" width="{bar:.0f}" height="18" fill="#ff7f0e"/>'
            f'<text x="{PAD + bar + 8:.0f}" y="{yy}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _fmt(v: Any) -> str:
    if v is None:
        return "unknown"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape(str(v))


def render_html(plan: dict[str, Any], peaks: Sequence[tuple[float, float]], now: float) -> str:
    """The whole report: summary, charts, prerequisites, decision points."""
    limit = plan["limit"]
    cap = plan.get("capacity") or {}
    growth = (plan["traffic"] or {}).get("growth") or {}
    summary = [
        ("phase", f"{plan['phase']}: {plan['phase_name']}"),
        (
            "capacity limit",
            f"{_fmt(limit['rps'])} req/s (measured by skylift capacity: one host's knee)",
        ),
        ("current peak", f"{_fmt(limit['peak_rps'])} req/s (highest stored bucket, last 7 days)"),
        (
            "growth",
            f"{_fmt(growth.get('per_day'))} per day (95 %: {_fmt(growth.get('per_day_low'))} "
            f"to {_fmt(growth.get('per_day_high'))}), fitted to {_fmt(growth.get('days_fitted'))} "
            "daily peaks",
        ),
        (
            "limit hit",
            f"{_fmt(limit['date'])} (between {_fmt(limit['date_early'])} and "
            f"{_fmt(limit['date_late'])}); {escape(limit['formula'])}"
            + (f"; {escape(limit['reason'])}" if limit.get("reason") else ""),
        ),
        (
            "per replica",
            f"{_fmt(cap.get('max_rps_per_replica'))} req/s; "
            f"{_fmt(cap.get('replicas_per_host'))} replica(s) per host",
        ),
    ]
    nxt = plan.get("next_phase")
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in summary)
    pre = "".join(
        f"<tr><td>{escape(p['name'])}</td><td class='m{_fmt(p['met'])}'>{_fmt(p['met'])}</td>"
        f"<td>{escape(p['evidence'])}</td></tr>"
        for p in plan["prerequisites"]
    )
    dps = "".join(
        f"<tr><td>{escape(d['name'])}</td><td>{escape(d['signal'])}</td><td>{_fmt(d['value'])}"
        f"</td><td>{_fmt(d['threshold'])}</td><td>{_fmt(d['act'])}</td></tr>"
        for d in plan["decision_points"]
    )
    steps = (
        ""
        if not nxt
        else f"<h2>Next: phase {nxt['phase']}, {escape(nxt['name'])}</h2><p>Usually takes "
        f"{nxt['months'][0]:g}-{nxt['months'][1]:g} months (the roadmap's estimate); monthly "
        f"cost {_fmt(nxt['monthly_cost'])} {escape(nxt['currency'])}.</p><ul>"
        + "".join(f"<li>{escape(s)}</li>" for s in nxt["steps"])
        + "</ul>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>skylift plan: {escape(plan['service'])}</title><style>"
        "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:left;vertical-align:top}.myes{color:#2a7}.mno{color:#c33}"
        ".munknown{color:#888}</style></head><body>"
        f"<h1>Roadmap for {escape(plan['service'])}, from measurements</h1>"
        f"<p>Generated {escape(plan['generated_at'])} by <code>skylift plan</code>. "
        "See docs/plan.md for where every number comes from.</p>"
        f"<table>{rows}</table><h2>Traffic and forecast against the capacity line</h2>"
        f"{traffic_svg(peaks, plan, now)}{steps}<h2>Cost per phase</h2>{cost_svg(plan)}"
        "<h2>Prerequisites (detected from the running deployment)</h2><table><tr><th>"
        f"prerequisite</th><th>met</th><th>evidence</th></tr>{pre}</table>"
        "<h2>Decision points</h2><table><tr><th>decision</th><th>signal</th><th>value</th>"
        f"<th>threshold</th><th>time to act</th></tr>{dps}</table></body></html>\n"
    )
