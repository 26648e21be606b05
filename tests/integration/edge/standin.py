"""A region's service frontend stand-in: /healthz, and an echo of who served and what the edge sent.

Run as ``python standin.py REGION HOST PORT``; the test kills it to make the region fail.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REGION = sys.argv[1]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/die":  # the region dies mid-request: no answer at all
            os._exit(1)
        if self.path == "/healthz":
            body = b"ok"
        else:
            seen = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-")}
            body = json.dumps({"region": REGION, "path": self.path, "headers": seen}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()
