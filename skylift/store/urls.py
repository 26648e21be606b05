"""Store URLs: defaults and a masked form that is safe to print or log."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError


def default_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'skylift.db'}"


def parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        # never echo the raw text: it may hold a password
        raise ValueError(
            "store.url is not a valid SQLAlchemy URL: write e.g. "
            "'postgresql+psycopg://user@host/db' or 'sqlite:///path/skylift.db'"
        ) from None


def masked(url: str | URL) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except ArgumentError:
        return "<invalid store url>"
    return parsed.render_as_string(hide_password=True)
