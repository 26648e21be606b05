"""The `skylift export kubernetes` command in-process: output formats and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from skylift.cli import main

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "autoscale.yaml"


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr("sys.argv", ["skylift", "export", "kubernetes", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    code = exited.value.code
    return code if isinstance(code, int) else 0


def test_yaml_documents_hpa_then_scaled_object(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, "-c", str(EXAMPLE), "--deployment", "demo", "web") == 0
    out, err = capsys.readouterr()
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["HorizontalPodAutoscaler", "ScaledObject"]
    assert docs[0]["spec"]["scaleTargetRef"]["name"] == "demo"
    assert len(err.splitlines()) == 2  # the p95 threshold rule and the 2 s interval


def test_json_is_one_kubernetes_list(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, "-c", str(EXAMPLE), "-o", "json", "web") == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["kind"] == "List"
    assert [d["kind"] for d in listing["items"]] == ["HorizontalPodAutoscaler", "ScaledObject"]


def test_unknown_service_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, "-c", str(EXAMPLE), "api") == 2
    assert "no service 'api'" in capsys.readouterr().err


def test_policy_without_target_check_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["state_dir"] = str(tmp_path)
    raw["services"]["web"]["autoscale"] = {"preset": "roadmap"}
    path = tmp_path / "roadmap.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert run_cli(monkeypatch, "-c", str(path), "web") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "no target check" in err
