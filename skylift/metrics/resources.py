"""The per-replica resource request (``resources: {cpu: 0.5, memory: 256Mi}``).

CPU and memory metrics are fractions of these numbers, so one spelling rule
for both config and the metrics that divide by them lives here. Spellings
follow Kubernetes quantities, which operators already know: CPU ``0.5`` or
``500m`` cores; memory ``256Mi``/``1Gi`` (powers of 1024), ``512M``/``1G``
(powers of 1000) or plain bytes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema

CPU_HINT = "write CPU cores like 0.5, 2 or '500m' (millicores)"
MEMORY_HINT = "write memory like '256Mi', '1Gi' (1024-based), '512M' (1000-based) or bytes"

_CPU_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m)?\s*$")
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(k|K|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?B?\s*$")
_MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


def parse_cpu(value: Any) -> float:
    """Cores as a float: ``0.5`` -> 0.5, ``"500m"`` -> 0.5, ``"2"`` -> 2.0."""
    if isinstance(value, bool):
        raise ValueError(f"invalid CPU {value!r}: {CPU_HINT}")
    if isinstance(value, int | float):
        cores = float(value)
    elif isinstance(value, str):
        match = _CPU_RE.match(value)
        if match is None:
            raise ValueError(f"invalid CPU {value!r}: {CPU_HINT}")
        cores = float(match.group(1)) / (1000.0 if match.group(2) else 1.0)
    else:
        raise ValueError(f"invalid CPU {value!r}: {CPU_HINT}")
    if not cores > 0:
        raise ValueError(f"invalid CPU {value!r}: must be more than 0 ({CPU_HINT})")
    return cores


def parse_memory(value: Any) -> int:
    """Bytes as an int: ``"256Mi"`` -> 268435456, ``"512M"`` -> 512000000."""
    if isinstance(value, bool):
        raise ValueError(f"invalid memory {value!r}: {MEMORY_HINT}")
    if isinstance(value, int | float):
        size = float(value)
    elif isinstance(value, str):
        match = _MEMORY_RE.match(value)
        if match is None:
            raise ValueError(f"invalid memory {value!r}: {MEMORY_HINT}")
        size = float(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""]
    else:
        raise ValueError(f"invalid memory {value!r}: {MEMORY_HINT}")
    if not size >= 1:
        raise ValueError(f"invalid memory {value!r}: must be at least 1 byte ({MEMORY_HINT})")
    return round(size)


def format_cpu(cores: float) -> str | float:
    """Render cores back the way config writes them (``500m`` below one core)."""
    millis = cores * 1000
    if cores < 1 and millis.is_integer():
        return f"{int(millis)}m"
    return cores


def format_memory(size: int) -> str:
    """Render bytes in the largest exact binary unit (``268435456`` -> ``256Mi``)."""
    for unit in ("Pi", "Ti", "Gi", "Mi", "Ki"):
        scale = _MEMORY_UNITS[unit]
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


Cores = Annotated[
    float,
    BeforeValidator(parse_cpu),
    PlainSerializer(format_cpu),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?m?$"},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": "CPU cores: 0.5, 2 or '500m' (millicores)",
        }
    ),
]
"""CPU cores, written in config as ``0.5`` or ``500m``."""

Bytes = Annotated[
    int,
    BeforeValidator(parse_memory),
    PlainSerializer(format_memory, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?(k|[KMGTP]i?)?B?$"},
                {"type": "integer", "minimum": 1},
            ],
            "description": "bytes: '256Mi', '1Gi' (1024-based), '512M' (1000-based) or a number",
        }
    ),
]
"""A size in bytes, written in config as ``256Mi``."""


class Resources(BaseModel):
    """What one replica is expected to use; cpu/memory metrics are fractions of it.

    A field left out means "no request": its metric is not computed (a
    policy on it then sees it MISSING and says so).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: Cores | None = None
    memory: Bytes | None = None
