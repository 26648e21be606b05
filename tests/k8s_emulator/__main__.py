"""Run the emulator: ``python -m tests.k8s_emulator --port P [--token-file F] [--pids-file F]``.

SIGTERM/SIGINT stop it; every pod's process is killed on the way out. ``--pids-file``
gets each pod process's pid (one a line) as it starts, so a test can kill what an
emulator that was itself killed left behind.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import uvicorn

from tests.k8s_emulator.server import Emulator


async def main(port: int, token: str | None, pids_file: Path | None) -> None:
    emulator = Emulator(token=token, pids_file=pids_file)
    server = uvicorn.Server(
        uvicorn.Config(
            emulator.app(),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,  # keep-alive clients must not hold the stop
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
    parser.add_argument("--pids-file", type=Path)
    args = parser.parse_args()
    token = args.token_file.read_text().strip() if args.token_file else None
    asyncio.run(main(args.port, token, args.pids_file))
