"""The manifest: everything needed to fetch, check and restore one backup.

It is uploaded last, sealed with the region key, and it carries the backup's
data key: with the region key, the bot token and the chat, the manifest
alone is enough to restore (no state store needed). It also lists the other
live backups of the region (``catalog``), so the newest manifest, which is
pinned in the chat, leads to every backup still kept.
"""

from __future__ import annotations

import base64

from pydantic import BaseModel, ConfigDict, Field

from skylift.backup.keys import RegionKey

MANIFEST_PURPOSE = "manifest"


class Part(BaseModel):
    """One uploaded part: bytes ``offset .. offset + size`` of the encrypted stream."""

    model_config = ConfigDict(frozen=True)

    index: int
    size: int
    sha256: str
    file_id: str
    message_id: int
    sent_at: float = Field(description="Unix time Telegram acknowledged it")


class CatalogEntry(BaseModel):
    """Another live backup of the region, as known when this one was made."""

    model_config = ConfigDict(frozen=True)

    id: str
    created_at: float
    manifest_file_id: str
    manifest_message_id: int


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    format: int = 1
    id: str
    region: str
    database: str
    server_version: str
    created_at: float
    finished_at: float
    data_key: str = Field(repr=False, description="base64; readable only with the region key")
    compression: str = "zstd"
    raw_bytes: int = Field(description="pg_dump output size")
    size: int = Field(description="encrypted stream size, the sum of the parts")
    sha256: str = Field(description="of the whole encrypted stream")
    parts: list[Part]
    tables: dict[str, dict[str, int | str]]
    catalog: list[CatalogEntry] = []

    def key_bytes(self) -> bytes:
        return base64.b64decode(self.data_key)

    def seal(self, key: RegionKey) -> bytes:
        return key.seal(MANIFEST_PURPOSE, self.id, self.model_dump_json().encode())

    @classmethod
    def open(cls, key: RegionKey, blob: bytes, what: str = "the manifest") -> Manifest:
        _, payload = key.open(MANIFEST_PURPOSE, blob, what)
        return cls.model_validate_json(payload)
