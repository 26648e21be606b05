"""Predictive and scheduled policies in the simulator and the CLI."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from skylift.cli.sim import register
from skylift.engine import ScalingPolicy, Series
from skylift.engine.predictive import CompiledForecast, Forecaster, Outlook
from skylift.sim import ServiceModel, capacity_for_peak, parse_trace, preset_policy, simulate
from skylift.sim.bench import trace_clock

RUNNER = CliRunner()


def seasonal_csv(days: int, seed: int = 3) -> str:
    """Per-minute Poisson counts around a daily cycle of 60..540 requests per minute."""
    rng = random.Random(seed)
    rows = ["t,requests"]
    for i in range(days * 1440):
        mean = 300.0 + 240.0 * math.sin(2 * math.pi * (i / 1440 - 0.3))
        # Normal approximation of Poisson noise; counts this large make it accurate.
        rows.append(f"{i * 60},{max(0, round(rng.gauss(mean, math.sqrt(mean))))}")
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def seasonal() -> str:
    return seasonal_csv(4)


def test_predictive_beats_hpa_on_a_seasonal_trace(seasonal: str) -> None:
    trace = parse_trace(seasonal, "seasonal")
    cap = capacity_for_peak(trace.peak_rate, 20)
    model = ServiceModel(capacity=cap, startup=120.0)
    hpa = simulate(trace, preset_policy("hpa", cap, 20), model)
    pred = simulate(trace, preset_policy("predictive", cap, 20), model)
    assert pred.tau_u_pct <= hpa.tau_u_pct + 0.5
    assert pred.cost_ratio < hpa.cost_ratio
    assert pred.forecast is not None and hpa.forecast is None
    assert pred.forecast["forecasts"] > 1000 and 0 < pred.forecast["mape_pct"] < 20
    assert "forecast" in pred.to_dict() and "forecast" not in hpa.to_dict()


def test_forecast_off_replays_exactly_like_the_reactive_checks(seasonal: str) -> None:
    trace = parse_trace(seasonal, "seasonal")
    cap = capacity_for_peak(trace.peak_rate, 20)
    model = ServiceModel(capacity=cap, startup=60.0)
    off = ScalingPolicy.model_validate(
        {"preset": "predictive", "capacity": cap, "max": 40, "forecast": {"enabled": False}}
    )
    reactive = ScalingPolicy.model_validate(off.model_dump(exclude={"forecast", "preset"}))
    a = simulate(trace, off, model)
    b = simulate(trace, reactive, model)
    assert a.timeline.desired == b.timeline.desired
    assert a.replica_hours == b.replica_hours


def test_scheduled_floor_follows_the_virtual_clock() -> None:
    csv = "t,requests\n" + "".join(f"{i * 60},10\n" for i in range(2 * 1440))
    trace = parse_trace(csv, "flat")
    model = ServiceModel(capacity=10.0, startup=0.0)
    policy = ScalingPolicy.model_validate(
        {
            "preset": "hpa",
            "max": 20,
            "schedules": [
                {"cron": "0 9 * * *", "duration": "2h", "timezone": "Europe/Paris", "min": 7}
            ],
        }
    )
    epoch = datetime.fromisoformat("2026-01-05T00:00:00+01:00").timestamp()
    result = simulate(trace, policy, model, epoch=epoch)
    tl = result.timeline
    for t, desired in zip(tl.t, tl.desired, strict=True):
        minute_of_day = (t // 60) % 1440
        if 9 * 60 + 1 <= minute_of_day < 11 * 60:
            assert desired >= 7, t
        elif minute_of_day < 9 * 60 or minute_of_day >= 11 * 60 + 6:
            assert desired < 7, t


def test_trace_clock_knows_the_shared_traces() -> None:
    epoch, zone = trace_clock("wc98")
    assert (
        zone == "Europe/Paris" and epoch == datetime.fromisoformat("1998-04-30T21:30Z").timestamp()
    )
    assert trace_clock("unknown") == (0.0, "UTC")


@pytest.fixture()
def app() -> typer.Typer:
    application = typer.Typer()
    register(application)
    return application


def test_cli_simulate_predictive_with_timeline(
    app: typer.Typer, tmp_path: Path, seasonal: str
) -> None:
    trace = tmp_path / "seasonal.csv"
    trace.write_text(seasonal)
    timeline = tmp_path / "tl.csv"
    args = ["simulate", "--trace", str(trace), "--peak", "20", "--policy", "predictive"]
    result = RUNNER.invoke(app, [*args, "--timeline", str(timeline), "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["policy"] == "predictive" and data["forecast"]["forecasts"] > 0
    assert timeline.read_text().startswith("t,demand,desired,ready,paid\n")
    bad = RUNNER.invoke(app, [*args, "--start", "yesterday"])
    assert bad.exit_code == 2
    ok = RUNNER.invoke(
        app, [*args, "--start", "2026-01-05T00:00:00+01:00", "--policy", "scheduled"]
    )
    assert ok.exit_code == 0, ok.output


class _Fixed(Forecaster):
    """Always sure that ``replicas`` are needed: shows whose forecaster a replay asks."""

    def __init__(self, cf: CompiledForecast, replicas: int) -> None:
        super().__init__(cf, 15.0)
        self.replicas = replicas
        self.calls = 0

    def advance(self, series: Series | None, now: float, wall: float) -> Outlook:
        self.calls += 1
        return Outlook(self.replicas, True, 0.0, 0.0)


def test_a_caller_built_forecaster_replaces_the_policys_own(seasonal: str) -> None:
    trace = parse_trace(seasonal, "seasonal")
    cap = capacity_for_peak(trace.peak_rate, 20)
    model = ServiceModel(capacity=cap, startup=60.0)
    policy = preset_policy("predictive", cap, 20)
    assert isinstance(policy, ScalingPolicy) and policy.compiled.forecast is not None
    fixed = _Fixed(policy.compiled.forecast, 30)
    result = simulate(trace, policy, model, forecaster=fixed)
    assert fixed.calls == result.decisions
    assert min(result.timeline.desired[10:]) == 30  # the floor held from the first decision on
    with pytest.raises(ValueError, match="forecast: block"):
        simulate(trace, preset_policy("hpa", cap, 20), model, forecaster=fixed)
