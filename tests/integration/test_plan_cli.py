"""`skylift capacity` and `skylift plan` when no controller runs (a real SQLite store, so an
integration test): one error line (capacity), or a plan whose deployment facts are
unknown, never guessed (plan)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skylift.cli import main
from tests.ports import free_port_block


def run(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr("sys.argv", ["skylift", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    code = exited.value.code
    return code if isinstance(code, int) else 0


@pytest.fixture
def config(tmp_path: Path) -> Path:
    # api, frontend and the replicas' range from one block: the default replica range
    # (20000-20999) could hold a free port picked at random (a config error, not the test)
    base = free_port_block(4)
    path = tmp_path / "skylift.yaml"
    path.write_text(
        f"state_dir: state\napi: {{listen: 127.0.0.1:{base}}}\nservices:\n  web:\n"
        f"    frontend: 127.0.0.1:{base + 1}\n    backend:\n      kind: process\n"
        "      command: 'x --port {port}'\n"
        f"      ports: {{start: {base + 2}, end: {base + 3}}}\n"
    )
    return path


def test_capacity_without_a_controller_is_one_error_line(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, "capacity", "-c", str(config), "web") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no running controller") and "Traceback" not in err
    assert run(monkeypatch, "capacity", "-c", str(config), "nope") == 2
    assert run(monkeypatch, "capacity", "-c", str(config), "web", "--slo", "soon") == 2


def test_plan_without_a_controller_says_unknown(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, "plan", "-c", str(config), "-o", "json") == 0
    plan = json.loads(capsys.readouterr().out)
    pre = {p["name"]: p["met"] for p in plan["prerequisites"]}
    assert pre["replicas > 1"] is None and pre["health checks"] is None
    assert pre["regions"] is False
    assert plan["limit"]["date"] is None and "capacity" in plan["limit"]["reason"]
    assert run(monkeypatch, "plan", "-c", str(config), "--next-phase-months", "9-6") == 2
