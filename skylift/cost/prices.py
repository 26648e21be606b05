"""The price file: instance types per region with on-demand, reserved and spot prices.

Numbers come from a file the operator keeps (``examples/prices.yaml`` is a dated
sample); nothing is fetched at run time, so a replay is reproducible and offline.
Every invalid field is reported with its path and how to fix it.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from skylift.metrics.resources import Bytes, Cores
from skylift.units import Duration, Percent

HOURS_PER_YEAR = 8760.0
HOURS_PER_MONTH = 730.0
"""The clouds' billing month (8760 h / 12)."""
_TERM_RE = re.compile(r"^\s*(\d+)\s*(y|yr|year|years|m|mo|month|months)\s*$")
TERM_HINT = "write the term like '1y', '3y' or '6mo'"


def parse_term(value: Any) -> float:
    """Hours in a reservation term: ``1y`` -> 8760, ``3y`` -> 26280, ``6mo`` -> 4380."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"invalid term {value!r}: {TERM_HINT}")
    if isinstance(value, int):
        raise ValueError(f"invalid term {value!r}: give a unit, {TERM_HINT}")
    match = _TERM_RE.match(value)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"invalid term {value!r}: {TERM_HINT}")
    count = int(match.group(1))
    return count * (HOURS_PER_YEAR if match.group(2).startswith("y") else HOURS_PER_MONTH)


TermHours = Annotated[
    float,
    BeforeValidator(parse_term),
    Field(json_schema_extra={"pattern": r"^\d+\s*(y|yr|year|years|m|mo|month|months)$"}),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reserved(_Model):
    """A commitment (AWS reserved instance / savings plan, GCP CUD): paid whether used or not."""

    term: TermHours = Field(description="commitment length: '1y', '3y' or '6mo'")
    upfront: float = Field(0.0, ge=0, description="USD paid once per instance for the term")
    hourly: float = Field(ge=0, description="USD per instance-hour for every hour of the term")

    @property
    def effective_hourly(self) -> float:
        """USD per instance-hour with the upfront spread over the term."""
        return self.hourly + self.upfront / self.term


class Spot(_Model):
    """Spare capacity sold cheap that the provider may take back at any time."""

    price: float = Field(gt=0, description="USD per instance-hour (an average of the market)")
    interruption_rate: Percent = Field(
        description="chance per instance-hour of being reclaimed: '5%' or 0.05"
    )
    notice: Duration = Field(
        0.0, description="warning before a reclaim (AWS: 2m); 0: the machine goes at once"
    )

    @model_validator(mode="after")
    def _rate(self) -> Spot:
        if not 0.0 <= self.interruption_rate < 1.0:
            raise ValueError(
                f"interruption_rate {self.interruption_rate:g} is not a chance per hour: "
                "write a percentage from 0% to below 100%, e.g. '5%'"
            )
        return self


class InstanceType(_Model):
    """One machine size: what it offers (declared, not measured) and what it costs."""

    cores: Cores = Field(description="vCPUs the instance offers")
    memory: Bytes = Field(description="memory the instance offers, e.g. '8Gi'")
    on_demand: float = Field(gt=0, description="USD per instance-hour, no commitment")
    reserved: Reserved | None = None
    spot: Spot | None = None

    @model_validator(mode="after")
    def _discounts_discount(self) -> InstanceType:
        if self.reserved is not None and self.reserved.effective_hourly >= self.on_demand:
            raise ValueError(
                f"reserved costs {self.reserved.effective_hourly:.4f} USD/h with the upfront "
                f"spread over the term, not less than on_demand {self.on_demand:g}: check "
                "reserved.hourly / reserved.upfront (upfront is per instance for the whole term)"
            )
        if self.spot is not None and self.spot.price >= self.on_demand:
            raise ValueError(
                f"spot.price {self.spot.price:g} is not below on_demand {self.on_demand:g}: "
                "check the price, or leave spot out for this instance type"
            )
        return self


class Region(_Model):
    """Instance types offered in one region (or one VPS provider's location)."""

    instances: dict[str, InstanceType] = Field(min_length=1)


class PriceList(_Model):
    """A dated price list: where the numbers came from travels with them."""

    date: dt.date = Field(description="when the prices were read off their source")
    source: str = Field(min_length=1, description="where the numbers come from")
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    regions: dict[str, Region] = Field(min_length=1)

    def find(self, spec: str | None) -> tuple[str, str, InstanceType]:
        """``--instance`` as ``REGION/TYPE``, ``TYPE`` (first region) or None (first of both)."""
        region, _, name = (spec or "").rpartition("/")
        return self.instance(region or None, name or None)

    def instance(self, region: str | None, name: str | None) -> tuple[str, str, InstanceType]:
        """(region, type name, type): the first region / its first type when not given."""
        region_name = region if region is not None else next(iter(self.regions))
        if region_name not in self.regions:
            raise PriceError(
                [
                    f"region {region_name!r} is not in the price file: use one of "
                    + ", ".join(sorted(self.regions))
                ]
            )
        types = self.regions[region_name].instances
        type_name = name if name is not None else next(iter(types))
        if type_name not in types:
            raise PriceError(
                [
                    f"instance type {type_name!r} is not offered in {region_name}: use one of "
                    + ", ".join(sorted(types))
                ]
            )
        return region_name, type_name, types[type_name]


class PriceError(ValueError):
    """An unreadable or invalid price file; each line names a field and the fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _problems(error: ValidationError) -> list[str]:
    out = []
    for err in error.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(root)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "required field is missing: add it (see prices.schema.json)"
        elif err["type"] == "extra_forbidden":
            message = f"unknown key {err['loc'][-1]!r}: remove it (see prices.schema.json)"
        out.append(f"{path}: {message}")
    return out


def parse_prices(data: Any) -> PriceList:
    """Validate parsed YAML; raises PriceError with one ``path: problem and fix`` per line."""
    try:
        return PriceList.model_validate(data)
    except ValidationError as exc:
        raise PriceError(_problems(exc)) from None


def load_prices(path: Path) -> PriceList:
    """Read and validate a price file (YAML or JSON)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PriceError([f"cannot read price file {path}: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise PriceError([f"{path} is not valid YAML: {exc}"]) from None
    try:
        return parse_prices(data)
    except PriceError as exc:
        raise PriceError([f"{path}: {p}" for p in exc.problems]) from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a price file, committed as ``prices.schema.json``."""
    schema = PriceList.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "skylift price file"
    return schema
