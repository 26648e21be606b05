"""`skylift export kubernetes` as a user runs it: the real CLI in its own process on
examples/autoscale.yaml. The YAML documents on stdout (HPA, then ScaledObject) pass the
same offline validation again, and stderr holds one "cannot express" line per gap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from skylift.export.validate import validate_hpa, validate_scaled_object

ROOT = Path(__file__).resolve().parents[3]


def test_export_of_the_autoscale_example_validates() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "skylift",
            "export",
            "kubernetes",
            "-c",
            str(ROOT / "examples" / "autoscale.yaml"),
            "--namespace",
            "demo",
            "web",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    hpa, scaled_object = yaml.safe_load_all(done.stdout)
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert scaled_object["kind"] == "ScaledObject"
    assert hpa["metadata"]["namespace"] == scaled_object["metadata"]["namespace"] == "demo"
    validate_hpa(hpa)
    validate_scaled_object(scaled_object)
    # the example's policy: 1..6 replicas, 30 requests/s per replica, 15 s down window
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 6)
    assert hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"] == "30"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 15
    assert scaled_object["spec"]["triggers"][0]["type"] == "prometheus"
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith(("cannot express", "approximated")) for line in lines)
    assert any("threshold p95_latency above 250ms for 4s -> +1" in line for line in lines)
    assert any("interval 2s" in line for line in lines)
