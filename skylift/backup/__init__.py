"""Regional PostgreSQL backups to Telegram: streamed, encrypted, chunked, verified.

Layout (one job per module): ``keys`` region keys and sealing; ``crypto`` the
streaming AES-GCM format; ``postgres`` pg_dump/pg_restore, snapshots, table
stats; ``telegram`` the Bot API client; ``manifest`` what a backup is made of;
``index``/``tables`` the backup index in the state store; ``run`` a backup;
``restore`` restore and verify; ``retention`` which backups stay; ``schedule``
cron. Errors are drawn in :mod:`skylift.backup.errors`. See docs/backup.md.
"""

from skylift.backup.errors import (
    BackupError,
    BackupNotFound,
    DumpFailed,
    IntegrityError,
    KeyMismatch,
    PartMissing,
    PartTooLarge,
    RestoreRefused,
    SecretMissing,
    TelegramError,
    TelegramUnavailable,
)

__all__ = [
    "BackupError",
    "BackupNotFound",
    "DumpFailed",
    "IntegrityError",
    "KeyMismatch",
    "PartMissing",
    "PartTooLarge",
    "RestoreRefused",
    "SecretMissing",
    "TelegramError",
    "TelegramUnavailable",
]
