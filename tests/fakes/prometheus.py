"""A FAKE Prometheus (not the real server): ``/api/v1/query`` in Prometheus' JSON format.

It knows a set of queries with values a test can change while it runs;
any other query is answered the way Prometheus answers a PromQL parse error
(HTTP 400, ``errorType: bad_data``), so clients are exercised over a real
socket and their error handling sees real-shaped errors.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query).get("query", [""])[0]
        values = self.server.values
        body: dict[str, Any]
        if url.path != "/api/v1/query":
            status, body = 404, {"status": "error", "errorType": "not_found", "error": "no"}
        elif query in values:
            sample = [round(time.time(), 3), repr(float(values[query]))]
            status = 200
            body = {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": sample}]},
            }
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


class _Server(ThreadingHTTPServer):
    values: dict[str, float]


@contextmanager
def fake_prometheus(values: dict[str, float]) -> Iterator[str]:
    """Serve ``values`` (query -> number; the dict may be changed live); yields the base URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.values = values
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
