"""Retention: which backups stay live (pure), and expiring the others (I/O).

The rules are restic's: keep the newest ``keep_last``; for daily, weekly and
monthly, keep the newest backup of each of the last N calendar buckets (UTC)
that have a backup. A backup kept by any rule stays.

Expiring never depends on deleting messages, because bots cannot delete
messages older than 48 hours. An expired backup is removed from the index's
live set, its wrapped data key in the index is destroyed, and it leaves the
catalog that newer manifests carry; its messages are deleted only while
Telegram still allows it (younger than 48 hours). See docs/backup.md for
what that means for disaster recovery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from skylift.backup.errors import BackupError
from skylift.backup.index import LIVE, BackupIndex, BackupRecord
from skylift.backup.telegram import BotApi
from skylift.config.regions import Retention

log = structlog.get_logger("skylift.backup")
DELETE_WINDOW = 48 * 3600.0
DELETE_MARGIN = 600.0  # do not race the 48-hour edge


def _buckets(created_at: float) -> dict[str, object]:
    when = datetime.fromtimestamp(created_at, UTC)
    iso = when.isocalendar()
    return {
        "daily": when.date(),
        "weekly": (iso.year, iso.week),
        "monthly": (when.year, when.month),
    }


def plan(backups: Sequence[tuple[str, float]], policy: Retention) -> dict[str, list[str]]:
    """``{backup id: [reasons kept]}``; an id with no reasons expires. Pure."""
    newest_first = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    reasons: dict[str, list[str]] = {backup_id: [] for backup_id, _ in newest_first}
    for backup_id, _ in newest_first[: policy.keep_last]:
        reasons[backup_id].append("last")
    limits = {
        "daily": policy.keep_daily,
        "weekly": policy.keep_weekly,
        "monthly": policy.keep_monthly,
    }
    for rule, limit in limits.items():
        seen: set[object] = set()
        for backup_id, created_at in newest_first:
            bucket = _buckets(created_at)[rule]
            if bucket in seen:
                continue
            if len(seen) >= limit:
                break
            seen.add(bucket)
            reasons[backup_id].append(rule)
    return reasons


@dataclass(frozen=True)
class Expired:
    id: str
    deleted_messages: list[int]
    left_in_chat: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "deleted_messages": self.deleted_messages,
            "left_in_chat": self.left_in_chat,
        }


def _messages(record: BackupRecord) -> list[tuple[int, float]]:
    found = [(int(p["message_id"]), float(p["sent_at"])) for p in record.parts]
    if record.manifest:
        found.append(
            (int(record.manifest["message_id"]), float(record.manifest.get("sent_at", 0.0)))
        )
    return found


def apply(
    index: BackupIndex,
    bot: BotApi | None,
    region: str,
    chat_id: int | str,
    policy: Retention,
    *,
    now: Callable[[], float],
    dry_run: bool = False,
) -> list[Expired]:
    """Expire what :func:`plan` does not keep; delete its messages only while Telegram allows."""
    live = index.list(region, status=LIVE)
    keep = plan([(r.id, r.created_at) for r in live], policy)
    expired: list[Expired] = []
    for record in live:
        if keep[record.id]:
            continue
        deleted: list[int] = []
        left: list[int] = []
        for message_id, sent_at in _messages(record):
            if bot is None or dry_run or now() - sent_at > DELETE_WINDOW - DELETE_MARGIN:
                left.append(message_id)
                continue
            try:
                refused = bot.delete_message(chat_id, message_id)
            except BackupError as exc:
                refused = str(exc)
            if refused is None:
                deleted.append(message_id)
            else:
                log.warning(
                    "message not deleted", backup=record.id, message=message_id, reason=refused
                )
                left.append(message_id)
        item = Expired(record.id, deleted, left)
        if not dry_run:
            index.expire(record.id, item.as_dict())
            log.info("backup expired", **item.as_dict())
        expired.append(item)
    return expired
