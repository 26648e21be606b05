"""Prometheus instant queries, over httpx's in-memory transport (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from skylift.metrics.base import SourceError
from skylift.metrics.prometheus import PrometheusSource, parse_instant


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"job": "web", "i": str(i)}, "value": [1732540000.123, v]}
                for i, v in enumerate(values)
            ],
        },
    }


def test_vector_and_scalar() -> None:
    assert parse_instant(vector("12.5"), "q") == 12.5
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}
    assert parse_instant(scalar, "q") == 3.0
    assert parse_instant(vector("NaN"), "q") is None  # e.g. histogram_quantile without traffic
    assert parse_instant(vector("+Inf"), "q") == float("inf")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (vector(), "no series"),
        (vector("1", "2"), "2 series"),
        (
            {"status": "error", "errorType": "bad_data", "error": "parse error at char 4"},
            "bad_data: parse error",
        ),
        (
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            "matrix",
        ),
        ([], "non-object"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{}]}}, "unexpected"),
    ],
)
def test_answers_that_are_not_one_number(body: Any, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        parse_instant(body, "q")


async def test_source_queries_each_metric() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        seen.append(query)
        assert request.url.path == "/api/v1/query"
        return httpx.Response(200, json=vector("42" if "http" in query else "NaN"))

    async with httpx.AsyncClient(
        base_url="http://prom", transport=httpx.MockTransport(handler)
    ) as client:
        source = PrometheusSource(
            client, {"web": {"rps": "sum(rate(http_requests_total[1m]))", "queue": "q_len"}}
        )
        assert source.provides("web") == {"rps", "queue"}
        assert source.provides("api") == frozenset()
        assert await source.sample("web", 0.0) == {"rps": 42.0}
    assert seen == ["sum(rate(http_requests_total[1m]))", "q_len"]


async def test_source_failures() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    def refused(request: httpx.Request) -> httpx.Response:
        body = {"status": "error", "errorType": "bad_data", "error": "1:5: parse error"}
        return httpx.Response(400, content=json.dumps(body))

    for handler, match in ((down, "unreachable"), (html, "502 without JSON"), (refused, "parse")):
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(base_url="http://prom", transport=transport) as client:
            with pytest.raises(SourceError, match=match):
                await PrometheusSource(client, {"web": {"rps": "x"}}).sample("web", 0.0)
