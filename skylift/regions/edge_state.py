"""``<region state>/edge.json``: what the region daemon says of its edge, for the CLI.

``starting``, ``running`` (with ``listen``), ``failed`` (with ``error``),
``disabled`` (with ``reason``) or ``stopped``. Kept light: ``status`` and
``up --detach`` read it without importing the controller.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

EDGE_STATE = "edge.json"


def read_edge_state(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / EDGE_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_edge_state(state_dir: Path, state: str, **extra: Any) -> None:
    body = json.dumps({"state": state, "pid": os.getpid(), "at": time.time(), **extra})
    tmp = state_dir / f"{EDGE_STATE}.{os.getpid()}.tmp"
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(state_dir / EDGE_STATE)
