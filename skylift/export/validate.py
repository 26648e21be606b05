"""Offline validation of exported manifests against the official schemas.

- The HPA: ``kubernetes-validate`` in strict mode (unknown fields refused) against the
  OpenAPI schemas of Kubernetes ``KUBERNETES_VERSION``.
- The ScaledObject: the pydantic models ``cloudcoil-models-keda`` generates from KEDA's
  CRDs (KEDA ``KEDA_VERSION``). Those models ignore unknown fields, so every key the
  input has must also come back out of the parsed model (strict like the HPA check),
  and numbers are never coerced from strings.
- Both: the few rules the apiserver enforces in code rather than in the schema
  (``pkg/apis/autoscaling/validation``): policy types, positive values, the period and
  stabilization bounds, selectPolicy, min <= max. A schema types ``type`` as a plain
  string, so without these a ``Replicas`` policy type would pass.

A manifest that fails is a bug in the export: ``ManifestInvalid`` names the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import version as package_version
from typing import Any

KUBERNETES_VERSION = "1.33"
"""The Kubernetes release whose OpenAPI schemas the HPA is checked against."""
KEDA_VERSION = "2.16"
"""The KEDA release of the CRDs cloudcoil-models-keda was generated from (its version 2.16.x)."""
POLICY_TYPES = frozenset({"Pods", "Percent"})
SELECT_POLICIES = frozenset({"Max", "Min", "Disabled"})
MAX_STABILIZATION = 3600
MAX_PERIOD = 1800


class ManifestInvalid(ValueError):
    """A manifest a real apiserver would refuse: which object, which field, why."""

    def __init__(self, kind: str, field: str, message: str) -> None:
        self.kind, self.field, self.message = kind, field, message
        super().__init__(f"{kind} {field or '(root)'}: {message}")


def validation_versions() -> dict[str, str]:
    """What the manifests are checked against (for docs and the CLI's --help)."""
    return {
        "kubernetes": KUBERNETES_VERSION,
        "kubernetes-validate": package_version("kubernetes-validate"),
        "keda": KEDA_VERSION,
        "cloudcoil-models-keda": package_version("cloudcoil-models-keda"),
    }


def _path(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_hpa(doc: Mapping[str, Any]) -> None:
    """Raise ``ManifestInvalid`` unless ``doc`` is a valid autoscaling/v2 HPA."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(dict(doc), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path, message = list(exc.absolute_path), str(exc.message)
        if exc.validator == "additionalProperties" and isinstance(exc.instance, dict):
            known = set((exc.schema or {}).get("properties", {}))
            unknown = sorted(key for key in exc.instance if key not in known)
            if unknown:  # name the field itself, not the object that holds it
                path.append(unknown[0])
                message = "unknown field (not in the Kubernetes schema)"
        raise ManifestInvalid("HorizontalPodAutoscaler", _path(path), message) from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestInvalid(
            str(doc.get("kind")), "apiVersion", f"no schema: {exc.message}"
        ) from None
    spec = doc.get("spec") or {}
    _replica_bounds("HorizontalPodAutoscaler", spec, "minReplicas", "maxReplicas")
    _behavior_rules("HorizontalPodAutoscaler", spec.get("behavior"), ("spec", "behavior"))


def validate_scaled_object(doc: Mapping[str, Any]) -> None:
    """Raise ``ManifestInvalid`` unless ``doc`` is a valid KEDA ScaledObject."""
    import pydantic
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    kind = "ScaledObject"
    if doc.get("apiVersion") != "keda.sh/v1alpha1" or doc.get("kind") != kind:
        raise ManifestInvalid(kind, "apiVersion", "must be keda.sh/v1alpha1, kind ScaledObject")
    try:
        model = ScaledObject.model_validate(dict(doc), strict=True)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise ManifestInvalid(kind, _path(first["loc"]), first["msg"]) from None
    unknown = _unknown_keys(doc, model.model_dump(mode="json", by_alias=True, exclude_unset=True))
    if unknown:
        raise ManifestInvalid(kind, _path(unknown), "unknown field (not in KEDA's CRD)")
    spec = doc.get("spec") or {}
    _replica_bounds(kind, spec, "minReplicaCount", "maxReplicaCount")
    hpa_config = (spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}
    _behavior_rules(
        kind,
        hpa_config.get("behavior"),
        ("spec", "advanced", "horizontalPodAutoscalerConfig", "behavior"),
    )


def _unknown_keys(given: Any, parsed: Any, at: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """The path of the first key in ``given`` that the parsed model dropped, or None."""
    if isinstance(given, Mapping):
        if not isinstance(parsed, Mapping):
            return None
        for key, value in given.items():
            if key not in parsed:
                return (*at, key)
            found = _unknown_keys(value, parsed[key], (*at, key))
            if found is not None:
                return found
    elif isinstance(given, list) and isinstance(parsed, list):
        for i, (g, p) in enumerate(zip(given, parsed, strict=False)):
            found = _unknown_keys(g, p, (*at, i))
            if found is not None:
                return found
    return None


def _replica_bounds(kind: str, spec: Mapping[str, Any], low_key: str, high_key: str) -> None:
    """min >= 1 and max >= min: checked by the apiserver's code (HPA) or KEDA's webhook."""
    low, high = spec.get(low_key), spec.get(high_key)
    if isinstance(low, int) and low < 1:
        raise ManifestInvalid(kind, f"spec.{low_key}", "must be at least 1")
    if isinstance(low, int) and isinstance(high, int) and high < low:
        raise ManifestInvalid(kind, f"spec.{high_key}", f"must be >= {low_key}")


def _behavior_rules(kind: str, behavior: Any, at: tuple[str, ...]) -> None:
    if not isinstance(behavior, Mapping):
        return
    for direction in ("scaleUp", "scaleDown"):
        rules = behavior.get(direction)
        if not isinstance(rules, Mapping):
            continue
        here = (*at, direction)
        window = rules.get("stabilizationWindowSeconds")
        if isinstance(window, int) and not 0 <= window <= MAX_STABILIZATION:
            raise ManifestInvalid(
                kind,
                _path((*here, "stabilizationWindowSeconds")),
                f"must be in [0, {MAX_STABILIZATION}]",
            )
        select = rules.get("selectPolicy")
        if select is not None and select not in SELECT_POLICIES:
            raise ManifestInvalid(
                kind,
                _path((*here, "selectPolicy")),
                f"{select!r} is not one of {', '.join(sorted(SELECT_POLICIES))}",
            )
        for i, policy in enumerate(rules.get("policies") or ()):
            where = (*here, "policies", i)
            if policy.get("type") not in POLICY_TYPES:
                raise ManifestInvalid(
                    kind,
                    _path((*where, "type")),
                    f"{policy.get('type')!r} is not one of {', '.join(sorted(POLICY_TYPES))}",
                )
            if not policy.get("value", 0) > 0:
                raise ManifestInvalid(kind, _path((*where, "value")), "must be greater than 0")
            if not 0 < policy.get("periodSeconds", 0) <= MAX_PERIOD:
                raise ManifestInvalid(
                    kind, _path((*where, "periodSeconds")), f"must be in [1, {MAX_PERIOD}]"
                )


def validate_export(hpa: Mapping[str, Any], scaled_object: Mapping[str, Any]) -> None:
    """Both manifests, HPA first; the first failure raises ``ManifestInvalid``."""
    validate_hpa(hpa)
    validate_scaled_object(scaled_object)
