"""``skylift export kubernetes -c FILE SERVICE``: the policy as an HPA and a KEDA ScaledObject.

stdout: the manifests (YAML documents, HPA then ScaledObject; ``-o json``: one
Kubernetes ``List``). stderr: one line per part of the policy they cannot express.
Both manifests are validated offline first (skylift.export.validate); one that
fails is a bug in the export and exits 1 naming the field.
Exit codes: 0 ok, 1 nothing to export / invalid manifest / validators missing,
2 usage, 3 invalid config.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from skylift.cli.common import EXIT_USAGE, ConfigOpt, fail, load_or_exit
from skylift.export.kubernetes import ExportOptions, NothingToExport, export_kubernetes
from skylift.export.validate import ManifestInvalid, validate_export

export_app = typer.Typer(
    help="Write a service's policy for another autoscaler (offline).", no_args_is_help=True
)


class Format(enum.StrEnum):
    yaml = "yaml"
    json = "json"


def register(app: typer.Typer) -> None:
    """Mount ``skylift export ...`` on the skylift CLI."""
    app.add_typer(export_app, name="export")


@export_app.command("kubernetes")
def kubernetes(
    service: Annotated[str, typer.Argument(help="the service whose autoscale policy to export")],
    config: ConfigOpt = Path("skylift.yaml"),
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="metadata.namespace of both")
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option("--deployment", help="the Deployment to scale (default: the service name)"),
    ] = None,
    prometheus_url: Annotated[
        str | None,
        typer.Option(
            "--prometheus-url",
            help="KEDA prometheus triggers' serverAddress (default: metrics.prometheus_url, "
            "else http://prometheus.monitoring.svc:9090)",
        ),
    ] = None,
    output: Annotated[
        Format, typer.Option("--output", "-o", help="yaml documents or a json List")
    ] = Format.yaml,
) -> None:
    """An autoscaling/v2 HPA and a KEDA ScaledObject equivalent to SERVICE's policy.

    Validated offline (Kubernetes 1.33 schemas, strict; KEDA 2.16 CRD models) before
    printing. What they cannot express goes to stderr, one line each.
    """
    loaded = load_or_exit(config)
    if service not in loaded.config.services:
        have = ", ".join(sorted(loaded.config.services)) or "none"
        raise fail(f"no service {service!r} in {config}; have: {have}", EXIT_USAGE)
    options = ExportOptions(
        deployment=deployment, namespace=namespace, prometheus_url=prometheus_url
    )
    try:
        result = export_kubernetes(loaded.config, service, options)
    except NothingToExport as exc:
        raise fail(str(exc)) from None
    try:
        validate_export(result.hpa, result.scaled_object)
    except ManifestInvalid as exc:
        raise fail(f"the exported manifest is invalid (a skylift bug): {exc}") from None
    except ImportError as exc:  # the optional `export` extra is not installed
        raise fail(
            f"the validators are missing ({exc.name}): pip install 'skylift[export]'"
        ) from None
    if output == Format.json:
        listing = {"apiVersion": "v1", "kind": "List", "items": [result.hpa, result.scaled_object]}
        typer.echo(json.dumps(listing, indent=2))
    else:
        typer.echo(
            yaml.safe_dump_all([result.hpa, result.scaled_object], sort_keys=False), nl=False
        )
    for gap in result.gaps:
        typer.echo(gap.line(), err=True)
