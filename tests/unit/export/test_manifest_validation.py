"""The offline validation the export runs before printing: what skylift writes passes,
and a manifest a real apiserver (or KEDA's CRD) would refuse is rejected, naming the field.

The first test pays for loading the schemas (~2 s: KEDA's generated models)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from skylift.cli import main
from skylift.config import load_config
from skylift.export import kubernetes as export_module
from skylift.export.kubernetes import ExportOptions, KubernetesExport, export_kubernetes
from skylift.export.validate import (
    KUBERNETES_VERSION,
    ManifestInvalid,
    validate_export,
    validate_hpa,
    validate_scaled_object,
    validation_versions,
)
from tests.unit.export.test_kubernetes_translation import CPU_70, export

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "autoscale.yaml"

POLICIES: dict[str, dict[str, Any]] = {
    "cpu": {"checks": [CPU_70]},
    "memory and connections": {
        "checks": [
            {"kind": "target", "metric": "memory", "target": "80%"},
            {"kind": "target", "metric": "connections", "target": 50},
        ]
    },
    "rps, queue, p95 with fallback": {
        "checks": [
            {"kind": "target", "metric": "rps", "target": 12.5},
            {"kind": "target", "metric": "queue", "target": 2},
        ],
        "fallback": {"replicas": 3},
    },
    "p95 and paused": {
        "checks": [{"kind": "target", "metric": "p95_latency", "target": "250ms"}],
        "paused": True,
    },
    "hpa preset": {"preset": "hpa", "max": 30},
    "predictive preset": {"preset": "predictive", "capacity": 40},
    "behavior and schedule": {
        "checks": [CPU_70],
        "behavior": {
            "up": {
                "stabilization": "1.5s",
                "select": "min",
                "limits": [{"type": "replicas", "value": 2}],
            },
            "down": {
                "stabilization": "2h",
                "limits": [{"type": "percent", "value": "12.5%", "period": "1h"}],
            },
        },
        "schedules": [
            {"cron": "0 8 * * 1-5", "duration": "10h", "timezone": "Europe/Berlin", "min": 4}
        ],
    },
}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_export_validates(name: str) -> None:
    result = export(POLICIES[name], ExportOptions(namespace="shop", deployment="web-app"))
    validate_export(result.hpa, result.scaled_object)


def test_example_autoscale_validates() -> None:
    result = export_kubernetes(load_config(EXAMPLE).config, "web")
    validate_export(result.hpa, result.scaled_object)


def test_versions_are_fixed() -> None:
    versions = validation_versions()
    assert versions["kubernetes"] == KUBERNETES_VERSION == "1.33"
    assert versions["keda"] == "2.16"
    assert versions["cloudcoil-models-keda"].startswith("2.16.")


@pytest.fixture
def good() -> KubernetesExport:
    return export(POLICIES["cpu"])


def mutated(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    here = doc
    for key in path[:-1]:
        here = here[key]
    here[path[-1]] = value
    return doc


HPA_CASES = [
    # (path, value, field named, message part): the schema refuses these ...
    (("spec", "behaviour"), {}, "spec.behaviour", "unknown field"),
    (("spec", "minReplicas"), "1", "spec.minReplicas", "is not of type"),
    (
        ("spec", "metrics", 0, "resource", "target", "averageUtilisation"),
        70,
        "spec.metrics[0].resource.target.averageUtilisation",
        "unknown field",
    ),
    # ... and the apiserver's code-level rules do, where the schema says only "string"/"int"
    (
        ("spec", "behavior", "scaleUp", "policies", 0, "type"),
        "Replicas",
        "spec.behavior.scaleUp.policies[0].type",
        "not one of",
    ),
    (
        ("spec", "behavior", "scaleDown", "policies", 0, "periodSeconds"),
        3600,
        "spec.behavior.scaleDown.policies[0].periodSeconds",
        "[1, 1800]",
    ),
    (
        ("spec", "behavior", "scaleUp", "policies", 0, "value"),
        0,
        "spec.behavior.scaleUp.policies[0].value",
        "greater than 0",
    ),
    (
        ("spec", "behavior", "scaleDown", "stabilizationWindowSeconds"),
        4000,
        "spec.behavior.scaleDown.stabilizationWindowSeconds",
        "[0, 3600]",
    ),
    (
        ("spec", "behavior", "scaleUp", "selectPolicy"),
        "Biggest",
        "spec.behavior.scaleUp.selectPolicy",
        "not one of",
    ),
    (("spec", "minReplicas"), 0, "spec.minReplicas", "at least 1"),
    (("spec", "maxReplicas"), 0, "spec.maxReplicas", ">= minReplicas"),
]


@pytest.mark.parametrize(("path", "value", "field", "message"), HPA_CASES)
def test_invalid_hpa_is_rejected_naming_the_field(
    good: KubernetesExport, path: tuple[Any, ...], value: Any, field: str, message: str
) -> None:
    bad = mutated(good.hpa, path, value)
    with pytest.raises(ManifestInvalid) as caught:
        validate_hpa(bad)
    assert caught.value.kind == "HorizontalPodAutoscaler"
    assert caught.value.field == field
    assert message in caught.value.message
    with pytest.raises(ManifestInvalid):  # the same function the CLI calls
        validate_export(bad, good.scaled_object)


def test_unknown_hpa_api_version_is_rejected(good: KubernetesExport) -> None:
    with pytest.raises(ManifestInvalid, match="apiVersion"):
        validate_hpa({**good.hpa, "apiVersion": "autoscaling/v3"})


BEHAVIOR = ("spec", "advanced", "horizontalPodAutoscalerConfig", "behavior")
SO_CASES = [
    (("spec", "triggers", 0, "metricTyp"), "Value", "spec.triggers[0].metricTyp", "unknown field"),
    (("spec", "pollingIntervall"), 5, "spec.pollingIntervall", "unknown field"),
    (("spec", "minReplicaCount"), "1", "spec.minReplicaCount", "integer"),
    (("spec", "triggers", 0, "metadata", "value"), 70, "spec.triggers[0].metadata.value", "string"),
    (("spec", "scaleTargetRef"), {}, "spec.scaleTargetRef.name", "required"),
    (
        (*BEHAVIOR, "scaleUp", "policies", 0, "type"),
        "Replicas",
        "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleUp.policies[0].type",
        "not one of",
    ),
    (("spec", "maxReplicaCount"), 0, "spec.maxReplicaCount", ">= minReplicaCount"),
]


@pytest.mark.parametrize(("path", "value", "field", "message"), SO_CASES)
def test_invalid_scaled_object_is_rejected_naming_the_field(
    good: KubernetesExport, path: tuple[Any, ...], value: Any, field: str, message: str
) -> None:
    bad = mutated(good.scaled_object, path, value)
    with pytest.raises(ManifestInvalid) as caught:
        validate_scaled_object(bad)
    assert caught.value.kind == "ScaledObject"
    assert caught.value.field == field
    assert message.lower() in caught.value.message.lower()
    with pytest.raises(ManifestInvalid):
        validate_export(good.hpa, bad)


def test_scaled_object_kind_is_checked(good: KubernetesExport) -> None:
    with pytest.raises(ManifestInvalid, match=r"keda\.sh/v1alpha1"):
        validate_scaled_object({**good.scaled_object, "kind": "ScaledJob"})


def test_cli_refuses_to_print_an_invalid_manifest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], good: KubernetesExport
) -> None:
    """A manifest that fails validation is a skylift bug: exit 1 naming the field, no output."""
    broken = KubernetesExport(
        mutated(good.hpa, ("spec", "behavior", "scaleUp", "policies", 0, "type"), "Replicas"),
        good.scaled_object,
        (),
    )
    monkeypatch.setattr("skylift.cli.export.export_kubernetes", lambda *args, **kwargs: broken)
    monkeypatch.setattr("sys.argv", ["skylift", "export", "kubernetes", "-c", str(EXAMPLE), "web"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "spec.behavior.scaleUp.policies[0].type" in err
    assert export_module.export_kubernetes is not broken  # only the CLI's name was patched
