"""What each forecast model and headroom choice buys, and where the limits are.

For each shared trace with days of history (the one-hour LLM traces never leave
warm-up), the predictive preset is replayed with one forecast setting changed
at a time, next to hpa in the same run:

- ``default``: Holt-Winters, headroom by load level, quantile 95 %;
- ``quantile 90%`` / ``quantile 98%``: the safety/cost knob;
- ``headroom pooled``: one square-root-scale error quantile for all levels;
- ``seasonal naive``: yesterday's bucket instead of Holt-Winters;
- ``true level``: the real forecaster (headroom by level, horizon, warm-up)
  with Holt-Winters replaced by the true centred 15-minute mean: what a
  perfect forecast of the level, but not of each minute's burst, would buy;
- ``perfect forecast``: a clairvoyant forecaster that knows every future
  minute exactly (no headroom). What is left is the price of the decision
  machinery itself: a replica is paid for while it starts, and a removed one
  cannot come back within a start-up delay.

For the LLM traces (per-second demand, no history) it prints the best any
constant supply can do, the bound a reactive policy is up against there.

Run: .venv/bin/python benchmarks/predictive_frontier.py [--traces ../shared/traces]
     [--peak 50] [--startup 60] [--jobs 2]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from skylift.engine import ScalingPolicy, Series
from skylift.engine.predictive import CompiledForecast, Forecaster, Outlook
from skylift.sim import ServiceModel, capacity_for_peak, load_trace, preset_policy, simulate
from skylift.sim.bench import trace_clock
from skylift.sim.trace import Trace

REPO = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "quantile 90%": {"quantile": "90%"},
    "quantile 98%": {"quantile": "98%"},
    "headroom pooled": {"headroom": "pooled"},
    "seasonal naive": {"model": "seasonal_naive"},
    "true level": {},
    "perfect forecast": {},
}
HISTORY_TRACES = ("wc98", "nasa", "clarknet", "nab_elb")
WARMUP_TRACES = ("azure_llm_conv", "azure_llm_code")


class ClairvoyantForecaster(Forecaster):
    """Knows the true rate of every future bucket; used only to measure the floor."""

    def __init__(
        self, cf: CompiledForecast, interval: float, startup: float, truth: dict[int, float]
    ) -> None:
        super().__init__(cf, interval, startup)
        self.truth = truth

    def advance(self, series: Series | None, now: float, wall: float) -> Outlook:
        out = super().advance(series, now, wall)  # same warm-up as the real one
        if not out.ready:
            return out
        first, end = self.horizon(wall)
        rate = max(self.truth.get(i, 0.0) for i in range(first, end + 1))
        replicas = math.ceil(rate / self.cf.target - 1e-9)
        return Outlook(replicas, True, rate, rate, self.cf.metric, self.lead)


class TrueLevel:
    """A "model" that knows the true centred 15-minute mean of every bucket (sqrt scale)."""

    def __init__(self, level: dict[int, float], step: float) -> None:
        self.level = level
        self.step = step
        self.last: int | None = None
        self.count = 0

    def predict(self, index: int) -> float:
        return math.sqrt(self.level.get(index, 0.0) * self.step + 0.375)

    def update(self, index: int, y: float) -> float:
        self.last = index
        self.count += 1
        return y - self.predict(index)


class LevelForecaster(Forecaster):
    """The real forecaster (headroom, warm-up, horizon) with the level known exactly."""

    def __init__(
        self, cf: CompiledForecast, interval: float, startup: float, level: dict[int, float]
    ) -> None:
        super().__init__(cf, interval, startup)
        self.model = TrueLevel(level, cf.step)


def _centred_level(truth: dict[int, float], minutes: int = 15) -> dict[int, float]:
    keys = sorted(truth)
    values = np.array([truth[k] for k in keys])
    smooth = np.convolve(values, np.ones(minutes) / minutes, mode="same")
    return dict(zip(keys, smooth.tolist(), strict=True))


def _truth(trace: Trace, epoch: float, step: float) -> dict[int, float]:
    per_row = max(1, round(trace.step / step))
    truth: dict[int, float] = {}
    for t, count in zip(trace.times, trace.requests, strict=True):
        first = math.floor((epoch + t) / step)
        for k in range(per_row):
            truth[first + k] = count / trace.step
    return truth


def run_one(task: tuple[Path, str, int, float]) -> tuple[str, str, float, float]:
    """(trace, variant, tau_U %, cost x oracle) of one replay."""
    path, variant, peak, startup = task
    trace = load_trace(path)
    capacity = capacity_for_peak(trace.peak_rate, peak)
    model = ServiceModel(capacity=capacity, startup=startup)
    peak_demand = model.demand(trace.peak_rate)
    epoch, zone = trace_clock(trace.name)
    if variant == "hpa":
        result = simulate(
            trace, preset_policy("hpa", capacity, peak_demand, zone), model, epoch=epoch
        )
        return trace.name, variant, result.tau_u_pct, result.cost_ratio
    policy = ScalingPolicy.model_validate(
        {
            "preset": "predictive",
            "capacity": capacity,
            "min": 1,
            "max": max(10, 2 * peak_demand),
            "forecast": VARIANTS[variant],
        }
    )
    cf = policy.compiled.forecast
    assert cf is not None
    forecaster: Forecaster | None = None
    if variant == "perfect forecast":
        truth = _truth(trace, epoch, cf.step)
        forecaster = ClairvoyantForecaster(cf, policy.compiled.interval, startup, truth)
    elif variant == "true level":
        level = _centred_level(_truth(trace, epoch, cf.step))
        forecaster = LevelForecaster(cf, policy.compiled.interval, startup, level)
    result = simulate(trace, policy, model, epoch=epoch, forecaster=forecaster)
    return trace.name, variant, result.tau_u_pct, result.cost_ratio


def constant_supply(path: Path, peak: int, hpa: tuple[float, float]) -> list[str]:
    """Every constant replica count on a per-second trace: tau_U and cost x oracle."""
    trace = load_trace(path)
    capacity = capacity_for_peak(trace.peak_rate, peak)
    rates = np.asarray(trace.requests, dtype=np.float64) / trace.step
    demand = np.maximum(1.0, np.ceil(rates / capacity - 1e-9))
    hpa_tau, hpa_cost = hpa
    rows = []
    lo, hi = int(np.percentile(demand, 75)), int(np.percentile(demand, 97))
    for supply in range(lo, hi + 1):
        tau = 100.0 * float(np.mean(demand > supply))
        cost = supply * demand.size / float(demand.sum())
        meets = tau <= hpa_tau and cost <= 0.85 * hpa_cost
        rows.append(
            f"| {trace.name} | {supply} | {tau:.2f} | {cost:.2f} | {'yes' if meets else 'no'} |"
        )
    return rows


LEVEL_GOALS = {"clarknet": None, "nasa": 2.0, "wc98": 0.05, "nab_elb": None}
"""tau_U goal (%) of the level clairvoyant per trace; None: hpa's tau_U in this run."""


def level_clairvoyant(path: Path, peak: int, goal: float) -> str:
    """Supply = ceil(k x the true centred 15-minute mean) with the least k meeting ``goal``.

    Knows the level exactly (future included) and pays no start-up: the best a
    forecast of the level plus a constant relative headroom could do.
    """
    trace = load_trace(path)
    capacity = capacity_for_peak(trace.peak_rate, peak)
    rates = np.asarray(trace.requests, dtype=np.float64) / trace.step
    span = max(1, round(900 / trace.step)) | 1  # odd, so the window is centred
    level = np.convolve(rates, np.ones(span) / span, mode="same")
    demand = np.maximum(1.0, np.ceil(rates / capacity - 1e-9))
    for k in np.arange(1.0, 4.0, 0.01):
        supply = np.maximum(1.0, np.ceil(k * level / capacity - 1e-9))
        tau = 100.0 * float(np.mean(supply < demand))
        if tau <= goal:
            cost = float(supply.sum() / demand.sum())
            return f"| {trace.name} | ≤ {goal:.2f} % | x {k:.2f} | {tau:.2f} % | {cost:.2f} |"
    return f"| {trace.name} | ≤ {goal:.2f} % | > x 4 | | |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=REPO.parent / "shared" / "traces")
    parser.add_argument("--peak", type=int, default=50)
    parser.add_argument("--startup", type=float, default=60.0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    names = [n for n in (*HISTORY_TRACES, *WARMUP_TRACES) if (args.traces / f"{n}.csv").exists()]
    tasks = [
        (args.traces / f"{n}.csv", v, args.peak, args.startup)
        for n in names
        for v in (("hpa", *VARIANTS) if n in HISTORY_TRACES else ("hpa",))
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run_one, tasks))
    scores = {(t, v): (tau, cost) for t, v, tau, cost in results}
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"`--peak {args.peak} --startup {args.startup:g}`, {os.cpu_count()} cores, "
        f"{platform.python_version()}, {when}, {time.perf_counter() - started:.0f} s\n"
    )
    print("| trace | forecast | τU % | cost x oracle | cost x hpa |")
    print("|---|---|---|---|---|")
    for name in names:
        if name not in HISTORY_TRACES:
            continue
        hpa_cost = scores[(name, "hpa")][1]
        for variant in ("hpa", *VARIANTS):
            tau, cost = scores[(name, variant)]
            print(f"| {name} | {variant} | {tau:.3f} | {cost:.3f} | {cost / hpa_cost:.2f} |")
    print("\nLevel clairvoyant (true centred 15-minute mean x the least k meeting the goal):\n")
    print("| trace | τU goal | k | τU | cost x oracle |")
    print("|---|---|---|---|---|")
    for name in names:
        if name in LEVEL_GOALS:
            goal = LEVEL_GOALS[name]
            goal = scores[(name, "hpa")][0] if goal is None else goal
            print(level_clairvoyant(args.traces / f"{name}.csv", args.peak, goal))
    print("\nConstant supply on the per-second traces (goal: τU ≤ hpa's, cost ≤ 0.85 x hpa's):\n")
    print("| trace | replicas | τU % | cost x oracle | meets both |")
    print("|---|---|---|---|---|")
    for name in names:
        if name in WARMUP_TRACES:
            hpa = scores[(name, "hpa")]
            print(f"| {name} | hpa | {hpa[0]:.2f} | {hpa[1]:.2f} | |")
            for row in constant_supply(args.traces / f"{name}.csv", args.peak, hpa):
                print(row)


if __name__ == "__main__":
    main()
