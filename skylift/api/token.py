"""The API bearer token: generated at first start, kept in the state directory (0600)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "api-token"  # noqa: S105 - a file name, not a secret


def ensure_state_dir(state_dir: Path) -> Path:
    """Create the state directory readable by its owner only."""
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    return state_dir


def load_or_create_token(state_dir: Path) -> str:
    """Return the token, creating it atomically with mode 0600 on first use."""
    path = ensure_state_dir(state_dir) / TOKEN_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


def read_token(state_dir: Path) -> str | None:
    try:
        return (state_dir / TOKEN_FILE).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
