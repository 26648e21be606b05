"""Each translation rule of `skylift export kubernetes` and each "cannot express" line.

Pure: a config dict in, the manifests (dicts) and the gaps out; no validator runs here
(tests/unit/export/test_manifest_validation.py checks what these produce)."""

from __future__ import annotations

from typing import Any

import pytest

from skylift.config.root import SkyliftConfig
from skylift.export.kubernetes import (
    DEFAULT_PROMETHEUS_URL,
    ExportOptions,
    KubernetesExport,
    NothingToExport,
    default_query,
    export_kubernetes,
    quantity,
)

CPU_70 = {"kind": "target", "metric": "cpu", "target": "70%"}


def config(autoscale: Any, **service: Any) -> SkyliftConfig:
    web: dict[str, Any] = {
        "frontend": "127.0.0.1:8081",
        "backend": {"command": "app --port {port}", "ports": {"start": 21100, "end": 21199}},
        "resources": {"cpu": "250m", "memory": "128Mi"},
        **service,
    }
    if autoscale is not None:
        web["autoscale"] = autoscale
    return SkyliftConfig.model_validate({"project": "p", "services": {"web": web}})


def export(
    autoscale: Any, options: ExportOptions | None = None, **service: Any
) -> KubernetesExport:
    return export_kubernetes(config(autoscale, **service), "web", options)


def gaps(result: KubernetesExport) -> list[str]:
    return [g.line() for g in result.gaps]


def one_gap(result: KubernetesExport, needle: str) -> str:
    found = [line for line in gaps(result) if needle in line]
    assert len(found) == 1, (needle, gaps(result))
    return found[0]


def test_bounds_target_and_names() -> None:
    r = export({"min": 2, "max": 9, "checks": [CPU_70]})
    assert r.hpa["apiVersion"] == "autoscaling/v2"
    assert r.hpa["kind"] == "HorizontalPodAutoscaler"
    assert r.hpa["spec"]["minReplicas"] == 2 and r.hpa["spec"]["maxReplicas"] == 9
    assert r.hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
    }
    so = r.scaled_object["spec"]
    assert r.scaled_object["apiVersion"] == "keda.sh/v1alpha1"
    assert (so["minReplicaCount"], so["maxReplicaCount"]) == (2, 9)
    assert so["scaleTargetRef"] == {"name": "web"}
    assert "namespace" not in r.hpa["metadata"]


def test_deployment_and_namespace_options() -> None:
    r = export({"checks": [CPU_70]}, ExportOptions(deployment="web-app", namespace="shop"))
    for doc in (r.hpa, r.scaled_object):
        assert doc["metadata"]["name"] == "web-app"
        assert doc["metadata"]["namespace"] == "shop"
    assert r.hpa["spec"]["scaleTargetRef"]["name"] == "web-app"
    assert r.scaled_object["spec"]["scaleTargetRef"]["name"] == "web-app"


@pytest.mark.parametrize("metric", ["cpu", "memory"])
def test_cpu_memory_are_resource_utilization_and_keda_cpu_memory(metric: str) -> None:
    r = export({"checks": [{"kind": "target", "metric": metric, "target": "65%"}]})
    assert r.hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": metric,
                "target": {"type": "Utilization", "averageUtilization": 65},
            },
        }
    ]
    (trigger,) = r.scaled_object["spec"]["triggers"]
    assert trigger["type"] == metric
    assert trigger["metricType"] == "Utilization"
    assert trigger["metadata"] == {"value": "65"}
    assert gaps(r) == []  # the default 15 s interval, 10 % tolerance and behavior fit


def test_fractional_percent_is_rounded_and_said() -> None:
    r = export({"checks": [{"kind": "target", "metric": "cpu", "target": "62.5%"}]})
    assert r.hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 62
    assert one_gap(r, "62.5%").startswith("approximated (HPA and KEDA)")


@pytest.mark.parametrize(
    ("metric", "name"),
    [("rps", "skylift_rps"), ("connections", "skylift_connections"), ("queue", "skylift_queue")],
)
def test_totals_are_external_average_value_and_prometheus_average_value(
    metric: str, name: str
) -> None:
    r = export({"checks": [{"kind": "target", "metric": metric, "target": 12.5}]})
    assert r.hpa["spec"]["metrics"] == [
        {
            "type": "External",
            "external": {
                "metric": {"name": name, "selector": {"matchLabels": {"service": "web"}}},
                "target": {"type": "AverageValue", "averageValue": "12500m"},
            },
        }
    ]
    (trigger,) = r.scaled_object["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    assert trigger["metadata"] == {
        "serverAddress": DEFAULT_PROMETHEUS_URL,
        "query": default_query(metric, "web"),
        "threshold": "12.5",
    }


def test_rps_query_reads_haproxy_backend_of_the_service() -> None:
    assert default_query("rps", "web") == (
        'sum(rate(haproxy_backend_http_requests_total{proxy="be_web"}[1m]))'
    )
    assert 'proxy="be_web"' in default_query("connections", "web")
    with pytest.raises(ValueError, match="no Prometheus query"):
        default_query("cpu", "web")


def test_p95_is_external_value_and_default_query_is_said() -> None:
    r = export({"checks": [{"kind": "target", "metric": "p95_latency", "target": "250ms"}]})
    external = r.hpa["spec"]["metrics"][0]["external"]
    assert external["metric"]["name"] == "skylift_p95_latency_seconds"
    assert external["target"] == {"type": "Value", "value": "250m"}
    (trigger,) = r.scaled_object["spec"]["triggers"]
    assert trigger["metricType"] == "Value"
    assert trigger["metadata"]["threshold"] == "0.25"
    assert "histogram_quantile(0.95" in trigger["metadata"]["query"]
    assert one_gap(r, "p95_latency is measured").startswith("approximated (KEDA)")


def test_service_prometheus_query_and_url_are_used() -> None:
    own = 'histogram_quantile(0.95, sum by (le) (rate(my_latency_bucket{app="w"}[2m])))'
    cfg = SkyliftConfig.model_validate(
        {
            "project": "p",
            "metrics": {"prometheus_url": "http://prom:9090"},
            "services": {
                "web": {
                    "frontend": "127.0.0.1:8081",
                    "backend": {"command": "app {port}", "ports": {"start": 21100, "end": 21199}},
                    "prometheus": {"p95_latency": own},
                    "autoscale": {
                        "checks": [{"kind": "target", "metric": "p95_latency", "target": "1s"}]
                    },
                }
            },
        }
    )
    r = export_kubernetes(cfg, "web")
    (trigger,) = r.scaled_object["spec"]["triggers"]
    assert trigger["metadata"]["query"] == own
    assert trigger["metadata"]["serverAddress"] == "http://prom:9090"
    assert gaps(r) == []
    flag = export_kubernetes(cfg, "web", ExportOptions(prometheus_url="http://other:9090"))
    assert flag.scaled_object["spec"]["triggers"][0]["metadata"]["serverAddress"] == (
        "http://other:9090"
    )


def test_behavior_maps_stabilization_policies_and_select() -> None:
    behavior = {
        "up": {
            "stabilization": "30s",
            "select": "min",
            "limits": [
                {"type": "replicas", "value": 3, "period": "20s"},
                {"type": "percent", "value": "50%", "period": "1m"},
            ],
        },
        "down": {"stabilization": "5m", "limits": [{"type": "percent", "value": "10%"}]},
    }
    r = export({"checks": [CPU_70], "behavior": behavior})
    expected = {
        "scaleUp": {
            "stabilizationWindowSeconds": 30,
            "selectPolicy": "Min",
            "policies": [
                {"type": "Pods", "value": 3, "periodSeconds": 20},
                {"type": "Percent", "value": 50, "periodSeconds": 60},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 10, "periodSeconds": 15}],
        },
    }
    assert r.hpa["spec"]["behavior"] == expected
    advanced = r.scaled_object["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    assert advanced["behavior"] == expected


def test_hpa_preset_behavior_is_kubernetes_default_behavior() -> None:
    r = export({"preset": "hpa", "max": 20, "behavior": {}})  # a block: HPA's defaults
    assert r.hpa["spec"]["behavior"]["scaleUp"]["policies"] == [
        {"type": "Percent", "value": 100, "periodSeconds": 15},
        {"type": "Pods", "value": 4, "periodSeconds": 15},
    ]
    assert r.hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert gaps(r) == []


def test_no_limits_means_any_move_not_kubernetes_defaults() -> None:
    r = export({"max": 7, "checks": [CPU_70], "behavior": {"up": {}, "down": {}}})
    for direction in ("scaleUp", "scaleDown"):
        assert r.hpa["spec"]["behavior"][direction]["policies"] == [
            {"type": "Pods", "value": 7, "periodSeconds": 15}
        ]


def test_fractional_and_too_long_seconds_are_said() -> None:
    behavior = {
        "up": {
            "stabilization": "1.5s",
            "limits": [{"type": "replicas", "value": 1, "period": "1h"}],
        },
        "down": {"stabilization": "2h"},
    }
    r = export({"checks": [CPU_70], "behavior": behavior})
    up, down = r.hpa["spec"]["behavior"]["scaleUp"], r.hpa["spec"]["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 2
    assert up["policies"][0]["periodSeconds"] == 1800
    assert down["stabilizationWindowSeconds"] == 3600
    assert one_gap(r, "behavior.up.stabilization 1.5s").startswith("approximated")
    assert one_gap(r, "behavior.up.limits[0].period 3600s").startswith("cannot express")
    assert one_gap(r, "behavior.down.stabilization 7200s").startswith("cannot express")


def test_fractional_percent_limit_is_rounded_and_said() -> None:
    behavior = {"up": {"limits": [{"type": "percent", "value": "12.5%"}]}}
    r = export({"checks": [CPU_70], "behavior": behavior})
    assert r.hpa["spec"]["behavior"]["scaleUp"]["policies"][0]["value"] == 12
    assert "12.5%" in one_gap(r, "behavior.up.limits[0]")


def test_cooldown_cannot_be_expressed() -> None:
    r = export({"checks": [CPU_70], "behavior": {"up": {"cooldown": "1m"}}})
    assert one_gap(r, "cooldown").startswith(
        "cannot express (HPA and KEDA): behavior.up.cooldown 60s"
    )


def test_threshold_with_plus_n_step_cannot_be_expressed() -> None:
    checks = [
        CPU_70,
        {
            "kind": "threshold",
            "metric": "p95_latency",
            "above": "250ms",
            "for": "4s",
            "change": "+2",
        },
    ]
    r = export({"checks": checks})
    line = one_gap(r, "threshold p95_latency")
    assert line.startswith("cannot express (HPA and KEDA): checks[1]")
    assert "above 250ms for 4s -> +2" in line
    assert len(r.hpa["spec"]["metrics"]) == 1  # only the target check is written


def test_step_check_cannot_be_expressed() -> None:
    step = {"kind": "step", "metric": "cpu", "bands": [{"above": "80%", "change": "+50%"}]}
    r = export({"checks": [CPU_70, step]})
    assert "no step scaling" in one_gap(r, "step bands on cpu")


def test_tolerance_other_than_kubernetes_default_cannot_be_expressed() -> None:
    r = export({"checks": [{**CPU_70, "tolerance": "5%"}]})
    assert "tolerance 5%" in one_gap(r, "tolerance")


def test_interval_goes_to_keda_polling_and_is_said_for_hpa() -> None:
    r = export({"checks": [CPU_70], "interval": "2s"})
    assert r.scaled_object["spec"]["pollingInterval"] == 2
    assert one_gap(r, "interval 2s").startswith("cannot express (HPA)")


def test_schedule_min_becomes_a_cron_trigger() -> None:
    schedule = {
        "name": "office",
        "cron": "30 8 * * 1-5",
        "duration": "10h",
        "timezone": "Europe/Berlin",
        "min": 4,
    }
    r = export({"checks": [CPU_70], "schedules": [schedule]})
    cron = r.scaled_object["spec"]["triggers"][-1]
    assert cron == {
        "type": "cron",
        "name": "office",
        "metadata": {
            "timezone": "Europe/Berlin",
            "start": "30 8 * * 1-5",
            "end": "30 18 * * 1-5",
            "desiredReplicas": "4",
        },
    }
    assert one_gap(r, "schedules (1)").startswith("cannot express (HPA)")


@pytest.mark.parametrize(
    "schedule",
    [
        {"cron": "0 20 * * *", "duration": "6h", "min": 3},  # ends the next day
        {"cron": "*/30 8 * * *", "duration": "1h", "min": 3},  # several starts a day
        {"cron": "0 8 * * *", "duration": "90s", "min": 3},  # not whole minutes
    ],
)
def test_schedule_without_an_end_cron_cannot_be_expressed(schedule: dict[str, Any]) -> None:
    r = export({"checks": [CPU_70], "schedules": [schedule]})
    assert [t["type"] for t in r.scaled_object["spec"]["triggers"]] == ["cpu"]
    assert "needs an end cron" in one_gap(r, "schedules[0]")


def test_schedule_max_cannot_be_expressed() -> None:
    r = export(
        {"checks": [CPU_70], "schedules": [{"cron": "0 1 * * *", "duration": "1h", "max": 2}]}
    )
    assert "maxReplicaCount" in one_gap(r, "max 2")
    assert [t["type"] for t in r.scaled_object["spec"]["triggers"]] == ["cpu"]


def test_events_cannot_be_expressed_multiplier_named() -> None:
    events = [
        {"name": "launch", "start": "2026-12-01T08:00Z", "end": "2026-12-01T20:00Z", "min": 5},
        {"name": "sale", "start": "2026-12-02T08:00Z", "end": "2026-12-02T20:00Z", "multiplier": 3},
    ]
    r = export({"checks": [CPU_70], "events": events})
    assert "floor 5" in one_gap(r, "event 'launch'")
    assert "load x3" in one_gap(r, "event 'sale'")


def test_forecast_cannot_be_expressed() -> None:
    r = export({"preset": "predictive", "capacity": 40})
    assert r.hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == "skylift_rps"
    assert "forecasts load" in one_gap(r, "forecast (predictive floor)")


def test_connection_budget_cannot_be_expressed() -> None:
    r = export(
        {"max": 4, "checks": [CPU_70]},
        database={"max_connections": 100, "pool_size": 10, "reserve": 5},
    )
    assert "max_connections 100, pool_size 10, reserve 5" in one_gap(r, "connection budget")


def test_residency_cannot_be_expressed() -> None:
    def region(zone: str, port: int) -> dict[str, Any]:
        return {
            "database_url": f"postgresql://app@127.0.0.1:{port}/app",
            "zone": zone,
            "countries": ["DE"] if zone == "eu" else ["US"],
            "edge": {"listen": f"127.0.0.1:{port + 1}"},
        }

    base = config({"checks": [CPU_70]}).model_dump(mode="json", by_alias=True, exclude_unset=True)
    try:
        cfg = SkyliftConfig.model_validate(
            {**base, "regions": {"eu-west": region("eu", 25432), "us-east": region("us", 26432)}}
        )
    except ValueError as exc:  # the region schema moved on: show what it wants
        pytest.fail(f"test region config no longer valid: {exc}")
    r = export_kubernetes(cfg, "web")
    assert "zones eu, us" in one_gap(r, "residency")


def test_fallback_goes_to_keda_only_with_average_value_triggers() -> None:
    rps = {"kind": "target", "metric": "rps", "target": 30}
    fallback = {"after_failures": 4, "replicas": 3}
    r = export({"checks": [rps], "fallback": fallback})
    assert r.scaled_object["spec"]["fallback"] == {"failureThreshold": 4, "replicas": 3}
    assert one_gap(r, "fallback (3 replicas").startswith("cannot express (HPA)")
    r = export({"checks": [CPU_70], "fallback": fallback})
    assert "fallback" not in r.scaled_object["spec"]
    assert "target-cpu is not" in one_gap(r, "KEDA accepts one only")


def test_paused_is_keda_annotation_and_said_for_hpa() -> None:
    r = export({"checks": [CPU_70], "paused": True})
    assert r.scaled_object["metadata"]["annotations"] == {"autoscaling.keda.sh/paused": "true"}
    assert "annotations" not in r.hpa["metadata"]
    assert one_gap(r, "paused").startswith("cannot express (HPA)")


def test_dry_run_cannot_be_expressed() -> None:
    r = export({"checks": [CPU_70], "dry_run": True})
    assert one_gap(r, "dry_run").startswith("cannot express (HPA and KEDA)")


def test_no_autoscale_or_no_target_check_is_nothing_to_export() -> None:
    with pytest.raises(NothingToExport, match="no autoscale block"):
        export(None)
    with pytest.raises(NothingToExport, match="no target check"):
        export({"preset": "roadmap"})


def test_quantity() -> None:
    assert quantity(30) == "30"
    assert quantity(0.25) == "250m"
    assert quantity(12.5) == "12500m"


def test_trigger_names_are_slugs_and_unique() -> None:
    checks = [
        {**CPU_70, "name": "CPU at 70 %"},
        {"kind": "target", "metric": "rps", "target": 30},
        {"kind": "target", "metric": "rps", "target": 40},
    ]
    r = export({"checks": checks})
    names = [t["name"] for t in r.scaled_object["spec"]["triggers"]]
    assert names == ["cpu-at-70", "target-rps", "target-rps-2"]


def test_hpa_semantics_without_a_behavior_block_exports_none() -> None:
    """`policy: hpa` counts as an HPA without `behavior` (its own defaults, e.g. the
    max(2 x current, 4) scale-up cap): writing HPA's behavior defaults would change counts."""
    r = export({"policy": "hpa", "checks": [CPU_70]})
    assert "behavior" not in r.hpa["spec"]
    assert "advanced" not in r.scaled_object["spec"]
    written = export({"policy": "hpa", "checks": [CPU_70], "behavior": {}})
    assert "behavior" in written.hpa["spec"]  # a block the user wrote is exported


def test_select_disabled_is_hpa_select_policy_disabled() -> None:
    r = export({"checks": [CPU_70], "behavior": {"down": {"select": "disabled"}}})
    assert r.hpa["spec"]["behavior"]["scaleDown"]["selectPolicy"] == "Disabled"
    assert r.hpa["spec"]["behavior"]["scaleUp"]["selectPolicy"] == "Max"
