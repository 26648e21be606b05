"""``backend.mode: advisor``: the HPA skylift writes for a service, and how it is written.

The manifest is :func:`skylift.export.kubernetes.export_kubernetes`'s (the same one
`skylift export kubernetes` prints and validates), pointed at the backend's
Deployment and namespace. What the HPA cannot express (forecasts, connection budget,
residency) is left out, as the export's stderr lists; the controller keeps deciding
and explaining with ``autoscale.dry_run: true`` (required in advisor mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler

from skylift.config.root import SkyliftConfig
from skylift.export.kubernetes import ExportOptions, export_kubernetes


def advisor_hpa(
    config: SkyliftConfig, service: str, deployment: str, namespace: str
) -> dict[str, Any]:
    """The autoscaling/v2 HPA of ``service`` scaling ``namespace/deployment``."""
    exported = export_kubernetes(
        config, service, ExportOptions(deployment=deployment, namespace=namespace)
    )
    return exported.hpa


async def write_hpa(client: AsyncClient, manifest: Mapping[str, Any]) -> str:
    """Create the HPA, or replace it (PUT with the resourceVersion just read) when its
    spec differs; "created", "replaced" or "unchanged". A 409 propagates: the next
    tick reads it again."""
    wanted = cast(HorizontalPodAutoscaler, HorizontalPodAutoscaler.from_dict(dict(manifest)))
    assert wanted.metadata is not None and wanted.metadata.name is not None
    try:
        current = await client.get(
            HorizontalPodAutoscaler, wanted.metadata.name, namespace=wanted.metadata.namespace
        )
    except ApiError as exc:
        if exc.status.code != 404:
            raise
        await client.create(wanted)
        return "created"
    if current.spec == wanted.spec:
        return "unchanged"
    assert current.metadata is not None
    wanted.metadata.resourceVersion = current.metadata.resourceVersion
    await client.replace(wanted)
    return "replaced"
