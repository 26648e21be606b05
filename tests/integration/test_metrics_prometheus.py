"""PrometheusSource over real HTTP against a FAKE Prometheus (not the real server).

The fake answers ``/api/v1/query`` with bodies in Prometheus' documented JSON
response format (success vector, and an error with HTTP 400), so the
client's URL, parameters and decoding are exercised over a real socket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from skylift.metrics import PrometheusSource, SourceError

pytestmark = pytest.mark.integration


class FakePrometheus(BaseHTTPRequestHandler):
    """Knows one query; anything else is a PromQL parse error, as Prometheus says it."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query).get("query", [""])[0]
        body: dict[str, Any]
        if url.path != "/api/v1/query":
            status, body = 404, {"status": "error", "errorType": "not_found", "error": "no"}
        elif query == 'sum(rate(http_requests_total{job="web"}[1m]))':
            status, body = (
                200,
                {
                    "status": "success",
                    "data": {
                        "resultType": "vector",
                        "result": [{"metric": {}, "value": [1732540000.5, "17.25"]}],
                    },
                },
            )
        else:
            status = 400
            body = {
                "status": "error",
                "errorType": "bad_data",
                "error": f'invalid parameter "query": 1:1: parse error: {query!r}',
            }
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_query_over_http(fake_prometheus: str) -> None:
    async with httpx.AsyncClient(base_url=fake_prometheus, timeout=2.0) as client:
        good = PrometheusSource(
            client, {"web": {"rps": 'sum(rate(http_requests_total{job="web"}[1m]))'}}
        )
        assert await good.sample("web", 0.0) == {"rps": 17.25}
        bad = PrometheusSource(client, {"web": {"rps": "sum(("}})
        with pytest.raises(SourceError, match="bad_data: invalid parameter"):
            await bad.sample("web", 0.0)
