"""Run the emulator: ``python -m tests.k8s_emulator --port P [--token-file F]``.

SIGTERM/SIGINT stop it; every pod's process is killed on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import uvicorn

from tests.k8s_emulator.server import Emulator


async def main(port: int, token: str | None) -> None:
    emulator = Emulator(token=token)
    server = uvicorn.Server(
        uvicorn.Config(
            emulator.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    kubelet = asyncio.create_task(emulator.kubelet())
    try:
        await server.serve()
    finally:
        kubelet.cancel()
        emulator.stop_all()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", type=Path)
    args = parser.parse_args()
    token = args.token_file.read_text().strip() if args.token_file else None
    asyncio.run(main(args.port, token))
