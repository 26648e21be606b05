"""``skylift backup run --region all``: every region to its own chat, in parallel, isolated.

Each region runs in its own lean worker process (``python -m
skylift.backup.worker``, the same one ``backup run --region NAME`` execs
into), so one region's crash, hung dump or exhausted retries cannot touch
another's, and each process's memory stays bounded as for one region. A
worker gets only its own region's token variable in its environment (the
other regions' token variables are removed), and the job it receives names
its own key file and chat only. At most ``parallel`` workers run at once;
each has a wall-clock ``timeout`` after which its process group is killed.

Before any worker starts, the tokens are read once here and compared by
value (and token files by resolved path, and '@channel' names by the id the
Bot API resolves them to): two regions with the same bot or chat are refused
(:class:`SharedBackupTarget`, exit 3) naming both regions. Tokens are never
printed; only their SHA-256 digests are compared, in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from skylift.backup import worker
from skylift.backup.context import RegionContext
from skylift.backup.errors import BackupError, SecretMissing
from skylift.config import LoadedConfig
from skylift.config.backup_targets import chat_key, server_key

log = structlog.get_logger("skylift.backup")
DEFAULT_PARALLEL = 4
DEFAULT_TIMEOUT = 6 * 3600.0
RESOLVE_TIMEOUT = 10.0
"""Longest wait for the Bot API to resolve a '@channel' name (getChat)."""


class SharedBackupTarget(BackupError):
    """Two regions resolve to the same bot token or chat: refused like an invalid config."""


@dataclass(frozen=True)
class RegionOutcome:
    """How one region's backup ended: the worker's ``-o json`` result, or the error."""

    region: str
    ok: bool
    seconds: float
    result: dict[str, Any] | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            **({"backup": self.result} if self.result is not None else {}),
            **({"error": self.error} if self.error is not None else {}),
        }


def backup_regions(loaded: LoadedConfig) -> list[str]:
    """The regions with a ``backup`` section, sorted."""
    return sorted(n for n, r in loaded.config.regions.items() if r.backup is not None)


def token_digests(contexts: Mapping[str, RegionContext]) -> tuple[dict[str, str], dict[str, str]]:
    """Each region's token as a SHA-256 digest (never the token); the unreadable ones' errors."""
    digests: dict[str, str] = {}
    missing: dict[str, str] = {}
    for name, ctx in contexts.items():
        try:
            token = ctx.bot_token()
        except SecretMissing as exc:
            missing[name] = str(exc)
            continue
        digests[name] = hashlib.sha256(token.encode()).hexdigest()
    return digests, missing


def shared_tokens(
    contexts: Mapping[str, RegionContext], digests: Mapping[str, str]
) -> list[tuple[str, str, str]]:
    """Pairs of regions whose tokens are the same value or the same file (after symlinks):
    ``(first, second, message)``."""
    problems: list[tuple[str, str, str]] = []
    by_digest: dict[str, str] = {}
    by_file: dict[Path, str] = {}
    for name in sorted(contexts):
        telegram = contexts[name].backup.telegram
        if telegram.bot_token_file is not None:
            path = (contexts[name].base_dir / telegram.bot_token_file).resolve()
            first = by_file.setdefault(path, name)
            if first != name:
                problems.append((first, name, _shared_token(first, name, f"the same file {path}")))
                continue
        digest = digests.get(name)
        if digest is None:
            continue
        first = by_digest.setdefault(digest, name)
        if first != name:
            problems.append((first, name, _shared_token(first, name, "the same token value")))
    return problems


def _shared_token(first: str, second: str, what: str) -> str:
    return (
        f"regions {first} and {second} use the same bot token ({what}, from "
        f"regions.{first}.backup.telegram and regions.{second}.backup.telegram): every region "
        f"needs its own bot; create a bot for {second} and give its token to "
        f"regions.{second}.backup.telegram.bot_token_env or bot_token_file"
    )


ChatResolver = Callable[[RegionContext], int | str | None]


def resolve_chat(ctx: RegionContext) -> int | str | None:
    """The numeric id the Bot API gives a '@channel' (getChat), or None if it cannot say."""
    telegram = ctx.backup.telegram
    from skylift.backup.telegram import BotApi

    try:
        with BotApi(
            telegram.api_url, ctx.bot_token(), timeout=RESOLVE_TIMEOUT, max_retries=1
        ) as bot:
            found = bot.get_chat(telegram.chat_id).get("id")
    except BackupError as exc:  # the region's own run will report its chat/bot problem
        log.warning("cannot resolve the backup chat", region=ctx.name, error=str(exc))
        return None
    return found if isinstance(found, int | str) else None


def shared_chats(
    contexts: Mapping[str, RegionContext],
    readable: set[str],
    resolve: ChatResolver = resolve_chat,
) -> list[str]:
    """Pairs of regions whose chats are the same once '@channel' names are resolved to ids."""
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for name in sorted(contexts):
        telegram = contexts[name].backup.telegram
        chat: int | str | None = telegram.chat_id
        if chat_key(telegram.chat_id).startswith("@") and name in readable:
            chat = resolve(contexts[name]) or chat
        key = (server_key(telegram.api_url), chat_key(chat if chat is not None else ""))
        first = seen.setdefault(key, name)
        if first != name:
            problems.append(
                f"regions {first} and {name} back up to the same chat ({key[1]} on {key[0]}, "
                f"from regions.{first}.backup.telegram.chat_id and "
                f"regions.{name}.backup.telegram.chat_id): every region needs its own chat; "
                f"create one for {name} and set regions.{name}.backup.telegram.chat_id"
            )
    return problems


def check_apart(
    contexts: Mapping[str, RegionContext], resolve: ChatResolver = resolve_chat
) -> dict[str, str]:
    """Raise :class:`SharedBackupTarget` if two regions share a bot or chat; returns the
    regions whose token cannot be read (region -> error), which cannot run."""
    digests, missing = token_digests(contexts)
    problems = [p[2] for p in shared_tokens(contexts, digests)]
    problems += shared_chats(contexts, set(digests), resolve)
    if problems:
        raise SharedBackupTarget("; ".join(problems))
    return missing


def check_region_apart(loaded: LoadedConfig, name: str) -> None:
    """``backup run --region NAME``: its token must differ from every other region's that
    this process can read (a region whose token is absent here is skipped)."""
    contexts = {n: RegionContext.from_config(loaded, n) for n in backup_regions(loaded)}
    if name not in contexts:
        return
    digests, _ = token_digests(contexts)
    problems = [p[2] for p in shared_tokens(contexts, digests) if name in p[:2]]
    if problems:
        raise SharedBackupTarget("; ".join(problems))


@dataclass(frozen=True)
class Job:
    """What every region's worker shares (the region's context is added per region)."""

    store_url: str
    state_dir: str
    log_level: str = "info"
    log_json: bool = False
    fresh: bool = False
    prune: bool = True


def run_all(
    loaded: LoadedConfig,
    job: Job,
    *,
    parallel: int = DEFAULT_PARALLEL,
    timeout: float = DEFAULT_TIMEOUT,
    resolve: ChatResolver = resolve_chat,
    on_done: Callable[[RegionOutcome], None] | None = None,
) -> list[RegionOutcome]:
    """Back up every region with a backup section, at most ``parallel`` at once; one
    region's failure never stops another. Raises :class:`SharedBackupTarget` first."""
    names = backup_regions(loaded)
    if not names:
        raise BackupError(
            f"no region in {loaded.path} has a backup section: add regions.NAME.backup"
        )
    contexts = {n: RegionContext.from_config(loaded, n) for n in names}
    missing = check_apart(contexts, resolve)
    from skylift.backup.index import BackupIndex

    # create/migrate the index once here: the workers only add rows, never race on the schema
    BackupIndex.open(job.store_url, Path(job.state_dir)).close()
    token_vars = {
        c.backup.telegram.bot_token_env
        for c in contexts.values()
        if c.backup.telegram.bot_token_env
    }

    def one(name: str) -> RegionOutcome:
        if name in missing:
            outcome = RegionOutcome(name, False, 0.0, error=missing[name])
        else:
            outcome = _run_worker(contexts[name], job, token_vars, timeout)
        if on_done is not None:
            on_done(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(names)))) as pool:
        return list(pool.map(one, names))


def _run_worker(
    ctx: RegionContext, job: Job, token_vars: set[str], timeout: float
) -> RegionOutcome:
    """One region in its own worker process (its own session: killed whole on timeout)."""
    payload = {
        "command": "run",
        "context": ctx.to_job(),
        "store_url": job.store_url,
        "state_dir": job.state_dir,
        "output": "json",
        "log_level": job.log_level,
        "log_json": job.log_json,
        "fresh": job.fresh,
        "prune": job.prune,
    }
    own = ctx.backup.telegram.bot_token_env
    env = {k: v for k, v in os.environ.items() if k not in token_vars or k == own}
    env.update({worker.JOB_ENV: json.dumps(payload), **worker.MALLOC_ENV})
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "skylift.backup.worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its pg_dump
        proc.communicate()
        return RegionOutcome(
            ctx.name,
            False,
            time.monotonic() - started,
            error=f"timed out after {timeout:.0f}s (raise --timeout for a larger database)",
        )
    seconds = time.monotonic() - started
    for line in err.splitlines():
        if line.strip() and not line.startswith("error: "):
            print(f"[{ctx.name}] {line}", file=sys.stderr)  # the worker's log lines
    if proc.returncode == 0:
        try:
            return RegionOutcome(ctx.name, True, seconds, result=json.loads(out))
        except json.JSONDecodeError:
            return RegionOutcome(ctx.name, False, seconds, error="the worker printed no result")
    errors = [
        line.removeprefix("error: ") for line in err.splitlines() if line.startswith("error: ")
    ]
    tail = errors[-1] if errors else (err.strip().splitlines() or ["no message"])[-1]
    return RegionOutcome(ctx.name, False, seconds, error=f"exit {proc.returncode}: {tail}")


def summary(outcomes: list[RegionOutcome]) -> tuple[dict[str, Any], str]:
    """The ``-o json`` data and the table of a ``--region all`` run."""
    failed = [o.region for o in outcomes if not o.ok]
    data = {
        "ok": not failed,
        "regions": {o.region: o.as_dict() for o in outcomes},
        "failed": failed,
    }
    width = max([len("REGION"), *(len(o.region) for o in outcomes)])
    lines = [f"{'REGION':<{width}}  RESULT  DETAIL"]
    for o in outcomes:
        if o.ok and o.result is not None:
            r = o.result
            detail = f"backup {r.get('id')}: {r.get('parts')} part(s), {r.get('bytes')} bytes"
            lines.append(f"{o.region:<{width}}  ok      {detail} in {o.seconds:.1f}s")
        else:
            lines.append(f"{o.region:<{width}}  FAILED  {o.error}")
    ok = len(outcomes) - len(failed)
    lines.append(
        f"{ok} of {len(outcomes)} region(s) backed up"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return data, "\n".join(lines)
