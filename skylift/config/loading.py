"""Loading a config: YAML < `SKYLIFT_*` env < CLI flags; every error with its path."""

from __future__ import annotations

import difflib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from skylift.config.base import BACKEND_KINDS, ENV_PREFIX, ConfigIssue
from skylift.config.root import SkyliftConfig, _raw_port_clashes


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where it came from (paths resolve against it)."""

    config: SkyliftConfig
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        return (self.base_dir / self.config.state_dir).resolve()

    @property
    def store_url(self) -> str:
        return self.config.store.url or f"sqlite:///{self.state_dir / 'skylift.db'}"

    def haproxy_binary(self) -> str | None:
        return shutil.which(self.config.haproxy.binary)


class ConfigError(Exception):
    """The config could not be loaded; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(f"{source}: {len(issues)} error(s)\n" + "\n".join(map(str, issues)))


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``SKYLIFT_SERVICES__WEB__REPLICAS=5`` -> ``{"services": {"web": {"replicas": 5}}}``."""
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not parts or parts[0] not in SkyliftConfig.model_fields:
            continue
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw else raw
    return tree


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return override


def _known_fields(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Field names allowed at ``loc`` (to suggest a fix for a misspelt key)."""
    model: Any = root
    for part in loc:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(str(part))
            if field is None:
                return []
            model = field.annotation
        else:
            args = getattr(model, "__args__", ())
            candidates = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if not candidates:
                return []
            model = candidates[0]
            field = model.model_fields.get(str(part))
            model = field.annotation if field else model
        while getattr(model, "__args__", None) and not (
            isinstance(model, type) and issubclass(model, BaseModel)
        ):
            models = [a for a in model.__args__ if isinstance(a, type) and issubclass(a, BaseModel)]
            if not models:
                break
            model = models[0]
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _issues_from(error: ValidationError) -> list[ConfigIssue]:
    issues = []
    for err in error.errors():
        loc = _strip_union_tags(tuple(err["loc"]))
        path = ".".join(str(p) for p in loc) or "(root)"
        kind = err["type"]
        message = err["msg"].removeprefix("Value error, ")
        hint = ""
        if kind == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
            # services.<name> is a dict key, not a field: skip it when looking up fields
            known = _known_fields(SkyliftConfig, _strip_dict_keys(loc[:-1]))
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "remove it; allowed: " + ", ".join(known)
            )
        elif kind == "missing":
            message = "required field is missing"
            hint = "add it (see `skylift config schema`)"
        elif kind.startswith(("int_", "float_", "bool_", "string_")):
            hint = f"got {err.get('input')!r}"
        issues.append(ConfigIssue(path, message, hint))
    return issues


def _strip_union_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop pydantic's union tag (``backend.process.command`` -> ``backend.command``)."""
    out: list[int | str] = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "backend" and part in BACKEND_KINDS:
            continue
        out.append(part)
    return tuple(out)


def _strip_dict_keys(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    out: list[int | str] = []
    skip_next = False
    for part in loc:
        if skip_next:
            skip_next = False
            continue
        out.append(part)
        if part in ("services", "env", "regions"):
            skip_next = True
    return tuple(out)


def load_config(
    path: str | Path,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Read, merge and validate a config file; raise :class:`ConfigError` with every problem."""
    file = Path(path)
    source = str(file)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            source, [ConfigIssue("(file)", "file not found", "check the path given with -c")]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(
            source, [ConfigIssue(where, f"not valid YAML: {exc}", "fix the YAML syntax")]
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            source, [ConfigIssue("(root)", "top level must be a mapping", "start with 'services:'")]
        )
    data = _merge(raw, _env_overrides(os.environ if environ is None else environ))
    if overrides:
        data = _merge(data, dict(overrides))
    try:
        config = SkyliftConfig.model_validate(data)
    except ValidationError as exc:
        issues = _issues_from(exc)
        if not any("port clash" in i.message for i in issues):
            issues += _raw_port_clashes(data)
        raise ConfigError(source, issues) from None
    return LoadedConfig(config=config, path=file.resolve())


def json_schema() -> dict[str, Any]:
    """The JSON Schema of skylift.yaml, committed as ``skylift.schema.json``."""
    schema = SkyliftConfig.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "skylift.yaml"
    return schema
