"""The price file: the shipped example is valid, the schema is fresh, errors name the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from skylift.cli.cost import register
from skylift.cost.prices import PriceError, json_schema, load_prices, parse_prices, parse_term

REPO = Path(__file__).resolve().parents[3]


def _file(**instance: Any) -> dict[str, Any]:
    base = {"cores": 2, "memory": "8Gi", "on_demand": 0.1}
    return {
        "date": "2024-06-01",
        "source": "test",
        "regions": {"r": {"instances": {"m": {**base, **instance}}}},
    }


def test_example_is_valid_and_dated() -> None:
    prices = load_prices(REPO / "examples" / "prices.yaml")
    assert prices.date.year >= 2024 and "AWS" in prices.source
    region, name, m7i = prices.instance("aws-us-east-1", "m7i.large")
    assert (m7i.cores, m7i.memory) == (2.0, 8 * 2**30)
    assert m7i.spot is not None and m7i.spot.interruption_rate == pytest.approx(0.05)
    assert m7i.reserved is not None and m7i.reserved.effective_hourly < m7i.on_demand


def test_committed_schema_is_fresh() -> None:
    committed = json.loads((REPO / "prices.schema.json").read_text())
    assert committed == json_schema(), (
        "prices.schema.json is stale: run `skylift prices schema > prices.schema.json`"
    )


def test_reserved_upfront_is_spread_over_the_term() -> None:
    prices = parse_prices(_file(reserved={"term": "3y", "upfront": 876, "hourly": 0.01}))
    reserved = prices.regions["r"].instances["m"].reserved
    assert reserved is not None
    assert reserved.effective_hourly == pytest.approx(0.01 + 876 / (3 * 8760))
    assert parse_term("6mo") == 6 * 730


@pytest.mark.parametrize(
    ("instance", "field", "fix"),
    [
        ({"reserved": {"term": "1y", "hourly": 0.2}}, "regions.r.instances.m", "reserved.hourly"),
        ({"reserved": {"term": 12, "hourly": 0.05}}, "reserved.term", "'1y'"),
        ({"spot": {"price": 0.2, "interruption_rate": "5%"}}, "instances.m", "leave spot out"),
        ({"spot": {"price": 0.02, "interruption_rate": "100%"}}, "spot", "below 100%"),
        ({"memory": "8gb"}, "instances.m.memory", "'1Gi'"),
        ({"on_demand": 0}, "instances.m.on_demand", "greater than 0"),
        ({"cpus": 2}, "instances.m.cpus", "remove it"),
    ],
)
def test_invalid_files_name_the_field_and_the_fix(
    instance: dict[str, Any], field: str, fix: str
) -> None:
    with pytest.raises(PriceError) as caught:
        parse_prices(_file(**instance))
    assert field in str(caught.value) and fix in str(caught.value)


def test_unknown_region_or_type_lists_the_known_ones() -> None:
    prices = parse_prices(_file())
    with pytest.raises(PriceError, match="use one of r"):
        prices.instance("nowhere", None)
    with pytest.raises(PriceError, match="use one of m"):
        prices.instance("r", "huge")


def test_cli_validate(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    ok = runner.invoke(app, ["prices", "validate", str(REPO / "examples" / "prices.yaml")])
    assert ok.exit_code == 0 and "valid (2 region(s)" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("date: 2024-06-01\nsource: x\nregions: {}\n")
    out = runner.invoke(app, ["prices", "validate", str(bad)])
    assert out.exit_code == 1 and "regions" in out.output
