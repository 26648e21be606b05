"""PrometheusSource over real HTTP against a FAKE Prometheus (not the real server).

The fake (tests/fakes/prometheus.py) answers ``/api/v1/query`` with bodies in
Prometheus' documented JSON response format (success vector, and an error
with HTTP 400), so the client's URL, parameters and decoding are exercised
over a real socket.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from skylift.metrics import PrometheusSource, SourceError
from tests.fakes.prometheus import fake_prometheus

pytestmark = pytest.mark.integration


QUERY = 'sum(rate(http_requests_total{job="web"}[1m]))'


@pytest.fixture
def fake_url() -> Iterator[str]:
    with fake_prometheus({QUERY: 17.25}) as url:
        yield url


async def test_query_over_http(fake_url: str) -> None:
    async with httpx.AsyncClient(base_url=fake_url, timeout=2.0) as client:
        good = PrometheusSource(client, {"web": {"rps": QUERY}})
        assert await good.sample("web", 0.0) == {"rps": 17.25}
        bad = PrometheusSource(client, {"web": {"rps": "sum(("}})
        with pytest.raises(SourceError, match="bad_data: invalid parameter"):
            await bad.sample("web", 0.0)
