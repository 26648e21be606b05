"""``skylift simulate --cost`` and ``skylift bench --cost`` through Typer, as a user runs them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from skylift.cli.sim import register
from skylift.cost.prices import load_prices

REPO = Path(__file__).resolve().parents[3]
PRICES = REPO / "examples" / "prices.yaml"
RUNNER = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    folder = tmp_path / "traces"
    folder.mkdir()
    rates = [20] * 60 + [70] * 240 + [20] * 120
    (folder / "burst.csv").write_text(
        "t,requests\n" + "".join(f"{i * 60},{r * 60}\n" for i, r in enumerate(rates))
    )
    return folder


def test_simulate_cost_json_and_the_timeline_reproduce_the_money(
    app: typer.Typer, traces: Path, tmp_path: Path
) -> None:
    timeline = tmp_path / "tl.csv"
    args = ["simulate", "--trace", str(traces / "burst.csv"), "--peak", "14", "-o", "json"]
    args += ["--cost", str(PRICES), "--instance", "aws-us-east-1/m7i.large", "--cpu", "0.5"]
    args += ["--memory", "1Gi", "--mix", "on-demand", "--timeline", str(timeline)]
    out = RUNNER.invoke(app, args)
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    cost = data["cost"]
    assert set(cost["by_kind"]) == {"reserved", "on_demand", "spot"}
    assert cost["usd"] == pytest.approx(sum(cost["by_kind"].values()), abs=0.02)
    assert cost["by_kind"]["reserved"] == cost["by_kind"]["spot"] == 0
    # from the timeline alone: replica-hours x on-demand price / replicas per instance
    rows = list(csv.DictReader(timeline.read_text().splitlines()))
    paid = sum(float(r["paid"]) for r in rows)
    m7i = load_prices(PRICES).regions["aws-us-east-1"].instances["m7i.large"]
    assert data["cost_plan"]["replicas_per_instance"] == 4
    assert cost["usd"] == pytest.approx(paid * 60 / 3600 * m7i.on_demand / 4, abs=0.01)
    assert data["replica_hours"] == pytest.approx(paid * 60 / 3600, abs=0.01)
    plan = data["cost_plan"]
    assert plan["cheapest"]["usd"] <= plan["on_demand"]["usd"]
    assert [s["mix"]["spot_share"] for s in plan["spot"]] == [0.25, 0.5, 0.75, 1.0]


def test_simulate_cost_errors_name_the_fix(app: typer.Typer, traces: Path, tmp_path: Path) -> None:
    base = ["simulate", "--trace", str(traces / "burst.csv"), "--peak", "14", "--cost"]
    big = RUNNER.invoke(app, [*base, str(PRICES), "--cpu", "64"])
    assert big.exit_code == 2 and "--cpu / --memory" in big.output
    oracle = RUNNER.invoke(app, [*base, str(PRICES), "--policy", "oracle"])
    assert oracle.exit_code == 2 and "cannot be bought" in oracle.output
    bad = tmp_path / "p.yaml"
    bad.write_text("date: 2024-06-01\nsource: x\nregions: {r: {instances: {}}}\n")
    out = RUNNER.invoke(app, [*base, str(bad)])
    assert out.exit_code == 1 and "regions.r.instances" in out.output


def test_bench_cost_table(app: typer.Typer, traces: Path) -> None:
    args = ["bench", "--traces", str(traces), "--policies", "oracle,hpa", "--peak", "14"]
    out = RUNNER.invoke(app, [*args, "--cost", str(PRICES)])
    assert out.exit_code == 0, out.output
    lines = [line for line in out.stdout.splitlines() if line.startswith("| burst")]
    assert len(lines) == 1 and "| hpa |" in lines[0]  # the oracle is not priced
    assert "Prices of 2024-06-01" in out.stdout


def test_a_spot_mix_is_reproduced_from_its_timeline(
    app: typer.Typer, traces: Path, tmp_path: Path
) -> None:
    timeline = tmp_path / "tl.csv"
    args = ["simulate", "--trace", str(traces / "burst.csv"), "--peak", "14", "-o", "json"]
    args += ["--cost", str(PRICES), "--instance", "aws-us-east-1/m7i.large", "--mix", "spot"]
    out = RUNNER.invoke(app, [*args, "--timeline", str(timeline)])
    assert out.exit_code == 0, out.output
    cost = json.loads(out.stdout)["cost"]
    mix = cost["mix"]
    assert mix["kind"] == "+ spot" and mix["spot_share"] > 0
    m7i = load_prices(PRICES).regions["aws-us-east-1"].instances["m7i.large"]
    assert m7i.reserved is not None and m7i.spot is not None
    rows = list(csv.DictReader(timeline.read_text().splitlines()))
    hours = len(rows) * 60 / 3600  # no gaps in this trace
    r, s = mix["reserved_instances"], mix["spot_share"]
    burst = sum(max(0.0, float(row["paid"]) / 4 - r) * 60 / 3600 for row in rows)
    assert cost["by_kind"]["reserved"] == pytest.approx(r * hours * m7i.reserved.hourly, abs=0.01)
    assert cost["by_kind"]["spot"] == pytest.approx(s * burst * m7i.spot.price, abs=0.01)
    assert cost["by_kind"]["on_demand"] == pytest.approx((1 - s) * burst * m7i.on_demand, abs=0.01)


def test_bench_cost_json(app: typer.Typer, traces: Path) -> None:
    args = ["bench", "--traces", str(traces), "--policies", "hpa", "--peak", "14", "-o", "json"]
    out = RUNNER.invoke(app, [*args, "--cost", str(PRICES), "--monthly-cap", "0.01"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["prices"]["date"] == "2024-06-01"
    (row,) = data["results"]
    assert row["trace"] == "burst" and row["policy"] == "hpa"
    assert row["cheapest"]["usd"] <= row["on_demand"]["usd"]
    assert row["cap"]["extra_slo_minutes"] >= 0 and row["cap"]["capped_hours"] > 0
