"""The replica's uvicorn leaves ``request.client`` as the real peer (the proxy).

Behind the service HAProxy on loopback, uvicorn's default proxy-header handling
replaced the peer with the ``X-Forwarded-For`` client, so the platform's own
trusted-proxy check never matched and every ``X-Skylift-*`` header of the edge was
ignored (a French signup through eu-west's edge was refused as a ``us`` user).
"""

from __future__ import annotations

import threading

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from skylift.platform.serve import server_config
from tests.polling import wait_for
from tests.ports import free_port


async def peer(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.client.host if request.client else "")


def test_replica_sees_the_proxy_not_the_forwarded_client() -> None:
    port = free_port()
    server = uvicorn.Server(server_config(Starlette(routes=[Route("/", peer)]), "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 10, "uvicorn started")
        answer = httpx.get(
            f"http://127.0.0.1:{port}/",
            headers={"X-Forwarded-For": "203.0.113.9"},
            timeout=5,
            trust_env=False,
        )
        assert answer.text == "127.0.0.1"  # the platform's own check decides about XFF
    finally:
        server.should_exit = True
        thread.join(10)
