"""Config of cross-region audit aggregation: off unless the root names it.

``audit_aggregation: {region: us, regions: [eu-west, us]}``: the platform of
region ``us`` collects metadata of the audit logs of the regions listed (each
listed region opts in; a region not listed is never asked and refuses to
answer). What crosses is in :mod:`skylift.platform.audit_export`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AuditAggregation(BaseModel):
    """Which region aggregates, and which regions opted in to be aggregated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(description="the region whose platform collects and stores the metadata")
    regions: list[str] = Field(
        description="the regions that opted in: only these answer the aggregator (each sends "
        "time, event type, a pseudonymous actor id and the chain hash; nothing else)",
    )

    @field_validator("regions")
    @classmethod
    def _some(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(
                "audit_aggregation.regions is empty: list the regions that opt in, or remove "
                "audit_aggregation to keep aggregation off"
            )
        if len(set(value)) != len(value):
            raise ValueError("audit_aggregation.regions names a region twice: list each once")
        return value


def aggregation_problems(aggregation: AuditAggregation | None, edged: set[str]) -> list[str]:
    """What is wrong with ``aggregation`` given the phase-2 regions, each with its fix."""
    if aggregation is None:
        return []
    problems = []
    if aggregation.region not in edged:
        problems.append(
            f"audit_aggregation.region {aggregation.region!r} is not a region with an edge: "
            f"name one of {sorted(edged)}"
        )
    unknown = [n for n in aggregation.regions if n not in edged]
    if unknown:
        problems.append(
            f"audit_aggregation.regions names unknown regions {unknown}: list regions of "
            f"`regions:` that have an edge ({sorted(edged)})"
        )
    return problems
