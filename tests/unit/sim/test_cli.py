"""skylift simulate / bench through Typer, on a standalone app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from skylift.cli.sim import register
from skylift.sim.bench import BUILTIN

RUNNER = CliRunner()
KEYS = {
    "theta_u_pct",
    "theta_o_pct",
    "tau_u_pct",
    "tau_o_pct",
    "cost_ratio",
    "replica_hours",
    "slo_violation_minutes",
    "actions",
}


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "step.csv"
    rates = [10] * 20 + [80] * 30 + [20] * 30
    path.write_text("t,requests\n" + "".join(f"{i * 60},{r * 60}\n" for i, r in enumerate(rates)))
    return path


def test_simulate_json_timeline_and_chart(app: typer.Typer, trace: Path, tmp_path: Path) -> None:
    timeline = tmp_path / "out.csv"
    chart = tmp_path / "out.html"
    result = RUNNER.invoke(
        app,
        [
            "simulate",
            "--trace",
            str(trace),
            "--peak",
            "8",
            "--startup",
            "30s",
            "-o",
            "json",
            "--timeline",
            str(timeline),
            "--chart",
            str(chart),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data.keys() >= KEYS
    assert data["capacity_rps"] == pytest.approx(10.0)
    assert timeline.read_text().splitlines()[0] == "t,demand,desired,ready,paid"
    assert len(timeline.read_text().splitlines()) == 81
    assert "<svg" in chart.read_text()


def test_simulate_policy_file(app: typer.Typer, trace: Path, tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("autoscale:\n  preset: hpa\n  min: 3\n  max: 12\n")
    result = RUNNER.invoke(
        app, ["simulate", "--trace", str(trace), "--capacity", "10", "--policy", str(policy)]
    )
    assert result.exit_code == 0, result.output
    assert "theta_u_pct" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--peak", "5", "--capacity", "3"], 2, "exactly one of --peak"),
        ([], 2, "exactly one of --peak"),
        (["--peak", "5", "--startup", "soon"], 2, "invalid duration"),
        (["--peak", "5", "--policy", "fastest"], 3, "unknown policy 'fastest'"),
    ],
)
def test_simulate_usage_and_policy_errors(
    app: typer.Typer, trace: Path, args: list[str], code: int, message: str
) -> None:
    result = RUNNER.invoke(app, ["simulate", "--trace", str(trace), *args])
    assert result.exit_code == code
    assert message in result.stderr


def test_invalid_policy_file_exits_3(app: typer.Typer, trace: Path, tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("min: 9\nmax: 2\n")
    result = RUNNER.invoke(
        app, ["simulate", "--trace", str(trace), "--peak", "5", "--policy", str(policy)]
    )
    assert result.exit_code == 3
    assert "lower min or raise max" in result.stderr


def test_unreadable_trace_exits_1(app: typer.Typer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("when,how many\n")
    result = RUNNER.invoke(app, ["simulate", "--trace", str(bad), "--peak", "5"])
    assert result.exit_code == 1
    assert "header" in result.stderr


def test_bench_table_and_json(app: typer.Typer, trace: Path) -> None:
    folder = trace.parent
    (folder / "flat.csv").write_text("t,requests\n" + "".join(f"{i * 60},600\n" for i in range(30)))
    table = RUNNER.invoke(app, ["bench", "--traces", str(folder), "--peak", "5"])
    assert table.exit_code == 0, table.output
    rows = len(BUILTIN)  # the default runs every built-in policy (issue 8: predictive, scheduled)
    assert table.stdout.count("| step |") == rows and table.stdout.count("| flat |") == rows
    assert "step: safest" in table.stdout
    out = RUNNER.invoke(
        app, ["bench", "--traces", str(folder), "--policies", "oracle,hpa", "-o", "json"]
    )
    data = json.loads(out.stdout)
    assert {(r["trace"], r["policy"]) for r in data["results"]} == {
        ("flat", "oracle"),
        ("flat", "hpa"),
        ("step", "oracle"),
        ("step", "hpa"),
    }
    assert data["best"]["step"]["safest"] == "hpa"
    assert out.stderr == ""  # no progress bar when stderr is not a TTY


def test_bench_rejects_unknown_policy_before_running(app: typer.Typer, trace: Path) -> None:
    result = RUNNER.invoke(app, ["bench", "--traces", str(trace.parent), "--policies", "hpa,x"])
    assert result.exit_code == 3
