"""Resources: the spellings operators write for CPU and memory requests."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from skylift.metrics.resources import Resources, parse_cpu, parse_memory


@pytest.mark.parametrize(
    ("text", "cores"),
    [(0.5, 0.5), ("0.5", 0.5), ("500m", 0.5), ("2", 2.0), (2, 2.0), ("250 m", 0.25), ("1.5", 1.5)],
)
def test_cpu_spellings(text: object, cores: float) -> None:
    assert parse_cpu(text) == pytest.approx(cores)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256Mi", 256 * 2**20),
        ("1Gi", 2**30),
        ("512M", 512_000_000),
        ("1G", 10**9),
        ("64Ki", 65536),
        ("100k", 100_000),
        ("1.5Gi", 3 * 2**29),
        ("512MiB", 512 * 2**20),
        (1048576, 1048576),
        ("4096", 4096),
    ],
)
def test_memory_spellings(text: object, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("bad", ["", "half", "-1", "0", "0m", "1.2.3", True, None, "5 cores"])
def test_bad_cpu_says_how_to_write_it(bad: object) -> None:
    with pytest.raises(ValueError, match=r"500m|more than 0"):
        parse_cpu(bad)


@pytest.mark.parametrize("bad", ["", "256mi", "1ki", "lots", "-5Mi", "0", "1Xi", False, [1]])
def test_bad_memory_says_how_to_write_it(bad: object) -> None:
    with pytest.raises(ValueError, match=r"256Mi|at least 1 byte"):
        parse_memory(bad)


def test_model_parses_and_serialises_back() -> None:
    res = Resources.model_validate({"cpu": "500m", "memory": "256Mi"})
    assert res.cpu == 0.5
    assert res.memory == 268435456
    assert res.model_dump() == {"cpu": "500m", "memory": "256Mi"}
    assert Resources.model_validate(res.model_dump()) == res
    assert Resources.model_validate({"cpu": 2}).model_dump() == {"cpu": 2.0, "memory": None}


def test_model_errors_carry_the_field_and_hint() -> None:
    with pytest.raises(ValidationError) as info:
        Resources.model_validate({"cpu": "fast", "memory": "lots", "disk": 1})
    errors = {e["loc"][0]: e["msg"] for e in info.value.errors()}
    assert "500m" in errors["cpu"]
    assert "256Mi" in errors["memory"]
    assert "disk" in errors


def test_json_schema_documents_spellings() -> None:
    schema = Resources.model_json_schema()
    assert "500m" in str(schema["properties"]["cpu"])
    assert "256Mi" in str(schema["properties"]["memory"])
