"""An origin that counts its own hits: what tells a cache hit from a forwarded request.

Run as ``python origin.py REGION HOST PORT``. Every request except ``/healthz``
and ``/_hits`` is counted per path (query included); ``GET /_hits`` answers the
counts as JSON. The response's caching headers come from the query string, so one
origin serves every case: ``cc=`` (Cache-Control; ``none``: no header), ``cookie=1`` (a Set-Cookie),
``vary=`` (a Vary header); no ``cc`` means ``public, max-age=60``.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

REGION = sys.argv[1]
HITS: Counter[str] = Counter()
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(b"ok", {"Cache-Control": "no-store"})
            return
        if self.path == "/_hits":
            with LOCK:
                body = json.dumps(dict(HITS)).encode()
            self._send(body, {"Cache-Control": "no-store"})
            return
        with LOCK:
            HITS[self.path] += 1
            count = HITS[self.path]
        query = parse_qs(urlsplit(self.path).query)
        cc = query.get("cc", ["public, max-age=60"])[0]
        headers = {} if cc == "none" else {"Cache-Control": cc}
        if query.get("cookie"):
            headers["Set-Cookie"] = "sid=secret-of-one-user; Path=/; HttpOnly"
        if query.get("vary"):
            headers["Vary"] = query["vary"][0]
        body = json.dumps({"region": REGION, "path": self.path, "count": count}).encode()
        self._send(body, headers)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()
