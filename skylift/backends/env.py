"""What a replica's environment is made of: never the controller's by accident.

The controller's environment holds its own secrets (API tokens, store URLs
with passwords, cloud credentials). A replica gets only:

1. a minimal base taken from the controller (:data:`BASE_NAMES`: PATH, HOME,
   locale, time zone, temp dir, user), so ordinary commands behave as in a shell;
2. the names the service lists in ``inherit_env`` (process backend only);
3. the values of ``env_file`` (a dotenv file, relative to the config);
4. the values of ``env``;
5. what skylift sets itself (``SKYLIFT_REPLICA``, ``SKYLIFT_SERVICE``, ``PORT``).

Later layers win. Container backends start from nothing (the image brings its
own environment) and take only layers 3 to 5.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from io import StringIO
from pathlib import Path

from dotenv import dotenv_values

from skylift.backends.base import StartFailed

BASE_NAMES: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_NUMERIC",
    "LC_TIME",
    "LC_COLLATE",
    "LC_MONETARY",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
)
"""Taken from the controller's environment when set: what a login shell would have."""


def base_env(environ: Mapping[str, str], inherit: Iterable[str] = ()) -> dict[str, str]:
    """The base names and the ``inherit`` names that are set in ``environ``; PATH always."""
    env = {name: environ[name] for name in (*BASE_NAMES, *inherit) if name in environ}
    env.setdefault("PATH", os.defpath)
    return env


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a dotenv file, read as written (no ``${VAR}`` expansion).

    Expansion would copy the controller's own variables into the replica, the
    very leak this module exists to prevent. A name without a value is skipped.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StartFailed(
            f"cannot read env_file {path}: {exc.strerror or exc}; check backend.env_file"
        ) from exc
    values = dotenv_values(stream=StringIO(text), interpolate=False)
    return {name: value for name, value in values.items() if value is not None}


def replica_env(
    *,
    base: Mapping[str, str],
    env_file: Path | None,
    env: Mapping[str, str],
    own: Mapping[str, str],
) -> dict[str, str]:
    """Layer base < env_file < env < skylift's own variables."""
    out = dict(base)
    if env_file is not None:
        out.update(read_env_file(env_file))
    out.update(env)
    out.update(own)
    return out
