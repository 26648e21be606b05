"""A tiny stdlib-only HTTP app used as the replica in demos and end-to-end tests.

Run: ``python examples/apps/demo_app.py --port PORT [--replica ID] [--verbose]``.

Stdlib only, so any backend (local process, Docker with a bare python image)
can start it without installing anything.

Endpoints:
  ``GET /``          -> ``{"replica": id, "pid": pid, "service": $SKYLIFT_SERVICE or null}``
  ``GET /work?ms=N`` -> burns N ms of CPU (capped), returns replica/pid/ms
  ``GET /sleep?ms=N`` -> waits N ms without CPU (a slow downstream call), same reply
  ``GET /healthz``   -> 200 ``ok`` (text/plain)
  ``GET /replica``   -> the replica id (text/plain), as the container demo image answers
  anything else      -> 404

Every response names its replica in an ``X-Replica`` header.

``DEMO_FAIL_AT_START=1`` makes it exit 1 at once (to demonstrate crash loops).
SIGTERM stops accepting, finishes in-flight requests, and exits 0, so graceful
drain can be shown for real.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_WORK_MS = 10_000


def burn_cpu(ms: float) -> float:
    """Busy-loop until ``ms`` of CPU time of this thread has been used; return ms burnt.

    Thread CPU time (not wall time) so that concurrent requests on a busy host
    each really cost their CPU, which is what CPU-based autoscaling must see.
    """
    start = time.thread_time()
    target = start + ms / 1000.0
    x = 0
    while time.thread_time() < target:
        for i in range(1000):
            x ^= i
    return (time.thread_time() - start) * 1000.0


class DemoHandler(BaseHTTPRequestHandler):
    """Request handler; server attributes carry the replica identity."""

    server: DemoServer
    protocol_version = "HTTP/1.0"  # no keep-alive: one request per connection
    server_version = "skylift-demo/1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/":
            self._json(200, self._identity())
        elif url.path == "/healthz":
            self._reply(200, b"ok", "text/plain")
        elif url.path == "/replica":
            self._reply(200, f"{self.server.replica}\n".encode(), "text/plain")
        elif url.path in ("/work", "/sleep"):
            query = parse_qs(url.query)
            try:
                ms = float(query.get("ms", ["10"])[0])
            except ValueError:
                self._json(400, {"error": "ms must be a number"})
                return
            ms = max(0.0, min(ms, float(MAX_WORK_MS)))
            if url.path == "/sleep":
                time.sleep(ms / 1000.0)
                self._json(200, {**self._identity(), "ms": ms})
                return
            burnt = burn_cpu(ms)
            self._json(200, {**self._identity(), "ms": ms, "cpu_ms": round(burnt, 3)})
        else:
            self._json(404, {"error": "not found", "path": url.path})

    def _identity(self) -> dict[str, Any]:
        return {
            "replica": self.server.replica,
            "pid": os.getpid(),
            "service": os.environ.get("SKYLIFT_SERVICE"),
        }

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._reply(status, json.dumps(body).encode(), "application/json")

    def _reply(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("X-Replica", self.server.replica)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class DemoServer(ThreadingHTTPServer):
    """Threading server that joins request threads on close (graceful drain)."""

    daemon_threads = False  # server_close() waits for in-flight requests
    block_on_close = True
    request_queue_size = 128

    def __init__(self, port: int, replica: str, verbose: bool) -> None:
        super().__init__(("127.0.0.1", port), DemoHandler)
        self.replica = replica
        self.verbose = verbose

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (load-generator timeout) is normal under
        # overload; a traceback per request would drown the log.
        if not self.verbose and isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="skylift demo app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replica", default=os.environ.get("SKYLIFT_REPLICA", "local"))
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    if os.environ.get("DEMO_FAIL_AT_START") == "1":
        print("demo_app: DEMO_FAIL_AT_START=1, exiting 1", file=sys.stderr, flush=True)
        return 1

    server = DemoServer(args.port, args.replica, args.verbose)

    def on_term(signum: int, frame: FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, so it cannot run in
        # the signal handler on the serving (main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print(
        f"demo_app: replica {args.replica} pid {os.getpid()} listening on "
        f"127.0.0.1:{server.server_address[1]}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()  # stops accepting, joins in-flight request threads
    print("demo_app: drained, exiting 0", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
