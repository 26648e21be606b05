"""Parsing of human units in config: durations (``30s``, ``5m``, ``1h``) and
percentages (``70%``).

Pure functions plus pydantic annotated types, so every model that takes a
duration or a percentage accepts the same spellings and reports the same hint.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_HINT = "write a duration like '500ms', '30s', '5m', '1h' or '1d'"
PERCENT_HINT = "write a percentage like '70%' (or a fraction like 0.7)"


def parse_duration(value: Any) -> float:
    """Return seconds for ``30s``/``5m``/``1h``/``1d``/``500ms`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    else:
        raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}")
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds back in the shortest exact config spelling."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def parse_percent(value: Any) -> float:
    """Return a fraction for ``70%`` (0.7); a bare number <= 1 is a fraction, > 1 a percent."""
    if isinstance(value, bool):
        raise ValueError(f"invalid percentage {value!r}: {PERCENT_HINT}")
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                return float(text[:-1]) / 100.0
            number = float(text)
        except ValueError:
            raise ValueError(f"invalid percentage {value!r}: {PERCENT_HINT}") from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError(f"invalid percentage {value!r}: {PERCENT_HINT}")
    return number if number <= 1.0 else number / 100.0


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)?$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "duration: '500ms', '30s', '5m', '1h', '1d' or seconds",
        }
    ),
]
"""A duration in seconds, written in config as ``30s``, ``5m`` ..."""

Percent = Annotated[
    float,
    BeforeValidator(parse_percent),
    PlainSerializer(lambda v: f"{v * 100:g}%", return_type=str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^\d+(\.\d+)?%$"}, {"type": "number"}],
            "description": "percentage: '70%' or a fraction like 0.7",
        }
    ),
]
"""A fraction (0.7), written in config as ``70%``."""
