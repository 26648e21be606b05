"""Custom metrics from Prometheus' instant query API (``/api/v1/query``).

Each service maps metric names to PromQL expressions that must answer one
number, e.g. ``rps: sum(rate(http_requests_total{job="web"}[1m]))``. A query
that returns no series or several is a failure with a hint, not a silent
MISSING: it is a typo in a label, a missing ``sum``, or a scrape target that
is down (its series went stale). Never ``or vector(0)``: that reads a target
down as zero load, which would scale in blind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import httpx

from skylift.metrics.base import SourceError

QUERY_PATH = "/api/v1/query"


def parse_instant(body: Any, query: str) -> float | None:
    """The one number a Prometheus instant-query answer holds (None for NaN)."""
    if not isinstance(body, dict):
        raise SourceError(f"Prometheus answered {query!r} with a non-object", "check the URL")
    if body.get("status") != "success":
        raise SourceError(
            f"Prometheus refused {query!r}: {body.get('errorType', '?')}: {body.get('error', '')}",
            "fix the query (try it in Prometheus' expression browser)",
        )
    data = body.get("data") or {}
    kind = data.get("resultType")
    result = data.get("result")
    pair: Any
    if kind == "scalar":
        pair = result
    elif kind == "vector":
        if not isinstance(result, list) or not result:
            raise SourceError(
                f"query {query!r} returned no series",
                "check the metric name and labels, and that its scrape targets are up "
                "(`up` in Prometheus); wrap a rate in sum(...)",
            )
        if len(result) > 1:
            raise SourceError(
                f"query {query!r} returned {len(result)} series, one is needed",
                "aggregate it, e.g. sum(...) or max(...)",
            )
        pair = result[0].get("value") if isinstance(result[0], dict) else None
    else:
        raise SourceError(
            f"query {query!r} returned a {kind}, not a number",
            "use an instant vector or scalar expression (no range selector at the top)",
        )
    try:
        value = float(pair[1])  # [timestamp, "value"]
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise SourceError(f"unexpected Prometheus answer to {query!r}: {pair!r}") from exc
    return None if math.isnan(value) else value


class PrometheusSource:
    """Metric source ``prometheus``: one instant query per configured metric.

    ``queries`` maps service -> metric -> PromQL. The caller owns ``client``
    (its base URL, auth and timeout), so tests can hand a fake transport.
    """

    name = "prometheus"

    def __init__(self, client: httpx.AsyncClient, queries: Mapping[str, Mapping[str, str]]) -> None:
        self.client = client
        self.queries = {service: dict(q) for service, q in queries.items()}

    def provides(self, service: str) -> frozenset[str]:
        return frozenset(self.queries.get(service, {}))

    async def sample(self, service: str, now: float) -> Mapping[str, float]:
        out: dict[str, float] = {}
        for metric, query in self.queries.get(service, {}).items():
            value = await self._query(query)
            if value is not None:
                out[metric] = value
        return out

    async def _query(self, query: str) -> float | None:
        try:
            response = await self.client.get(QUERY_PATH, params={"query": query})
        except httpx.HTTPError as exc:
            raise SourceError(
                f"Prometheus at {self.client.base_url} unreachable: {exc!r}",
                "check that Prometheus runs and the URL is right",
            ) from exc
        try:
            body = response.json()
        except ValueError:
            raise SourceError(
                f"Prometheus answered {response.status_code} without JSON to {query!r}",
                "check that the URL points at Prometheus itself",
            ) from None
        return parse_instant(body, query)
