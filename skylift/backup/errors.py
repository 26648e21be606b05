"""What can go wrong with a backup, and who should act on it.

::

    BackupError                 base: the message says what failed and what to do
    ├── SecretMissing           bot token or key file absent (fix the config/env)
    ├── KeyMismatch             a key or manifest of another region, or a wrong key
    ├── IntegrityError          a part or the whole does not match its SHA-256 / tag
    │   └── PartMissing         a part listed in the manifest cannot be fetched
    ├── DumpFailed              pg_dump / pg_restore exited non-zero
    ├── RestoreRefused          the target is the source database (use --force)
    ├── BackupNotFound          no such backup in the index
    └── TelegramError           the Bot API refused or could not be reached
        ├── PartTooLarge        413: the server's upload limit is below the part size
        └── TelegramUnavailable retries exhausted (429, 5xx, dropped connections)

No message ever contains the bot token or key material.
"""

from __future__ import annotations


class BackupError(Exception):
    """Base of every backup failure."""


class SecretMissing(BackupError):
    """A bot token or key is not where the config says."""


class KeyMismatch(BackupError):
    """The key or manifest belongs to another region, or the key is not the one used."""


class IntegrityError(BackupError):
    """Downloaded bytes do not match what the manifest recorded."""


class PartMissing(IntegrityError):
    """A part the manifest lists is gone or unreadable."""


class DumpFailed(BackupError):
    """pg_dump or pg_restore failed; the backup (or restore) does not count."""


class RestoreRefused(BackupError):
    """Restoring would overwrite the region's live database."""


class BackupNotFound(BackupError):
    """No backup with that id (or none at all) in the index."""


class TelegramError(BackupError):
    """The Bot API answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PartTooLarge(TelegramError):
    """HTTP 413: the Bot API refused a part as too large."""


class TelegramUnavailable(TelegramError):
    """Retries were exhausted; the parts acknowledged so far are kept for a resume."""
