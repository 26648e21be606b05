"""``skylift load`` through typer's CliRunner on a fresh app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from skylift.cli.load import register

REFUSED = "http://127.0.0.1:1"  # nothing listens on port 1: instant connection refused


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Group mode, as in the real CLI."""

    register(app)
    return app


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(make_app(), ["load", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--target", REFUSED],  # no mode
        ["--target", REFUSED, "--rps", "10"],  # no duration
        ["--target", REFUSED, "--rps", "10", "--duration", "soon"],
        ["--target", REFUSED, "--rps", "10", "--duration", "1s", "--timeout", "x"],
        ["--target", REFUSED, "--rps", "10", "--duration", "1s", "--peak-rps", "5"],
        ["--target", REFUSED, "--trace", "t.csv"],  # no peak
        ["--target", REFUSED, "--trace", "t.csv", "--peak-rps", "5", "--rps", "1"],
        ["--target", "localhost:80", "--rps", "10", "--duration", "1s"],
        ["--target", REFUSED, "--rps", "10", "--duration", "1s", "-o", "yaml"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    code, _ = invoke(*args)
    assert code == 2


def test_bad_trace_file_is_a_usage_error(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("time,n\n0,1\n")
    code, output = invoke("--target", REFUSED, "--trace", str(trace), "--peak-rps", "5")
    assert code == 2
    assert "header" in output


def test_json_report_counts_errors_and_exits_0() -> None:
    code, output = invoke(
        "--target", REFUSED, "--rps", "50", "--duration", "200ms", "--timeout", "1s", "-o", "json"
    )
    assert code == 0, output
    data = json.loads(output)
    assert data["sent"] == 10
    assert data["ok"] == 0
    assert data["errors"] == 10
    assert data["errors_by_kind"] == {"connect": 10}
    for key in ("p50_ms", "p95_ms", "p99_ms", "rate", "replicas"):
        assert key in data


def test_trace_table_report(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t,requests\n0,5\n60,10\n")
    code, output = invoke(
        "--target", REFUSED, "--trace", str(trace), "--peak-rps", "20", "--speed", "600"
    )
    assert code == 0, output
    assert "sent" in output and "3 of 3 planned" in output  # 0.1 s at 10/s + 0.1 s at 20/s
    assert "connect 3" in output
