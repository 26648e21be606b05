"""``skylift region promote``: fence the old primary, promote the in-zone standby, record it.

The order is the safety argument:

1. **fence** the old primary first, when it answers (``ALTER SYSTEM SET
   default_transaction_read_only = on`` + reload, durable across restarts), so
   there is no moment with two writers;
2. **promote** the standby (``pg_promote(wait => true)``);
3. **record** the promotion durably: in the promoted database itself (table
   ``skylift_region_promotions``: it follows the data, and any standby later
   seeded from it), in the old primary's database when it answered, and in the
   ``promotions.json`` of both regions' state directories.

An old primary that could not be reached is not trusted to stay quiet: when
its region's controller starts again it reads these records (its own state
directory, and the promoted database in its zone) and fences its database
before running anything (:func:`fence_if_superseded`). The platform's guard
(``serving_verdict(promoted=...)``) answers 421 for that region's users once
the record maps them to the holder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skylift.config.root import SkyliftConfig
from skylift.regions import database
from skylift.regions.database import DatabaseError, Promotion

PROMOTIONS_FILE = "promotions.json"


class PromotionError(RuntimeError):
    """The promotion could not be done; the message says what to do."""


@dataclass
class PromotionReport:
    region: str
    holder: str
    promoted: bool
    already: bool
    old_primary_fenced: bool
    fence_error: str | None = None
    recorded_in: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def region_state_dir(config: SkyliftConfig, config_dir: Path, name: str) -> Path:
    """Absolute state directory of region ``name`` (as its controller resolves it)."""
    region = config.regions[name]
    raw = Path(region.state_dir or f"{config.state_dir}/{name}")
    return (raw if raw.is_absolute() else config_dir / raw).resolve()


def read_local_promotions(state_dir: Path) -> dict[str, Promotion]:
    """home region -> its latest promotion, from one region's ``promotions.json``."""
    try:
        data = json.loads((state_dir / PROMOTIONS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise PromotionError(f"{state_dir / PROMOTIONS_FILE} is unreadable: {exc}") from None
    return {
        home: Promotion(home, str(p["holder"]), float(p["at"]), bool(p["old_primary_fenced"]))
        for home, p in (data.get("promoted") or {}).items()
    }


def promoted_map(state_dir: Path) -> dict[str, str]:
    """home -> holder, the shape ``serving_verdict(promoted=...)`` takes."""
    return {home: p.holder for home, p in read_local_promotions(state_dir).items()}


def write_local_promotion(state_dir: Path, promotion: Promotion) -> Path:
    """Add ``promotion`` to ``state_dir/promotions.json`` (atomic replace, mode 0600)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    known = {h: p.as_dict() for h, p in read_local_promotions(state_dir).items()}
    known[promotion.region] = promotion.as_dict()
    path = state_dir / PROMOTIONS_FILE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"promoted": known}, handle, indent=2)
    tmp.replace(path)
    return path


def promote_region(
    config: SkyliftConfig,
    config_dir: Path,
    name: str,
    *,
    wait_seconds: int = 30,
    say: Callable[[str], None] = lambda _: None,
) -> PromotionReport:
    """Fence ``name``'s primary (if it answers), promote its standby, record it everywhere."""
    region = config.regions.get(name)
    if region is None:
        raise PromotionError(f"{name!r} is not a region: use one of {', '.join(config.regions)}")
    if region.standby is None:
        raise PromotionError(
            f"region {name} has no in-zone standby (regions.{name}.standby): nothing to promote"
        )
    holder, standby_url = region.standby.region, region.standby.database_url
    standby = database.database_role(standby_url)
    if not standby.reachable:
        raise PromotionError(
            f"the standby of {name} ({database.redact(standby_url)}, in {holder}) does not "
            f"answer: {standby.error}; nothing was changed"
        )
    already = standby.in_recovery is False
    say(f"fencing {name}'s primary {database.redact(region.database_url)}")
    fence_error = None
    try:
        database.fence(region.database_url)
        fenced = True
    except DatabaseError as exc:
        fenced, fence_error = False, str(exc)
        say(f"  not reachable ({exc}): it will fence itself when its controller starts")
    if not already:
        say(f"promoting {holder}'s standby {database.redact(standby_url)}")
        try:
            ok = database.promote(standby_url, wait_seconds)
        except DatabaseError as exc:
            raise PromotionError(
                f"{exc}; the old primary is {'fenced' if fenced else 'not fenced'}: run "
                f"`skylift region promote {name}` again"
            ) from None
        if not ok:
            raise PromotionError(
                f"the standby of {name} did not finish promoting within {wait_seconds}s; run "
                f"`skylift region promote {name}` again"
            )
    record = Promotion(name, holder, time.time(), fenced, detail=fence_error or "")
    report = PromotionReport(name, holder, True, already, fenced, fence_error)
    database.record_promotion(standby_url, record)  # mandatory: it travels with the data
    report.recorded_in.append(f"database {database.redact(standby_url)}")
    if fenced:
        try:
            database.record_promotion(region.database_url, record)
            report.recorded_in.append(f"database {database.redact(region.database_url)}")
        except DatabaseError as exc:
            say(f"  could not record it in the old primary too: {exc}")
    for where in (holder, name):
        path = write_local_promotion(region_state_dir(config, config_dir, where), record)
        report.recorded_in.append(str(path))
    return report


def superseded_by(
    config: SkyliftConfig, config_dir: Path, name: str, *, timeout: float = 2.0
) -> Promotion | None:
    """Was ``name``'s database promoted away? Local record first, then the zone's standby.

    The standby lookup is best-effort with a short timeout: an unreachable peer
    never stops this region from starting (no cross-region call it depends on).
    """
    local = read_local_promotions(region_state_dir(config, config_dir, name)).get(name)
    if local is not None:
        return local
    region = config.regions[name]
    if region.standby is None:
        return None
    role = database.database_role(region.standby.database_url, timeout)
    if not role.reachable or role.in_recovery:
        return None
    try:
        found = [p for p in database.read_promotions(region.standby.database_url, timeout)]
    except DatabaseError:
        return None
    mine = [p for p in found if p.region == name]
    return mine[-1] if mine else None


def fence_if_superseded(
    config: SkyliftConfig, config_dir: Path, name: str, *, timeout: float = 2.0
) -> Promotion | None:
    """At a region's start: fence its own database if a promotion superseded it."""
    promotion = superseded_by(config, config_dir, name, timeout=timeout)
    if promotion is None:
        return None
    database.fence(config.regions[name].database_url, timeout)
    write_local_promotion(region_state_dir(config, config_dir, name), promotion)
    return promotion
